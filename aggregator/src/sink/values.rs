//! Arrow values → the store's typed values, and stable `_id`s.
//!
//! Booleans, integers, floats, decimals, strings and timestamps keep their type; a
//! window (a struct of two timestamps `start` and `end`) is [`ColumnType::Window`];
//! other structs, lists and maps are [`ColumnType::Json`]. Each store decides how to
//! keep them (see the `store` crate).
//!
//! `_id`: one key column gives its text (a window gives its JSON); several give the
//! JSON array of their values, e.g. `[17,"view",{"start":"…","end":"…"}]`. The same
//! values always give the same `_id`.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use datafusion::arrow::datatypes::{
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::util::display::array_value_to_string;
use serde_json::Value as Json;
use store::{ColumnType, Value};
use store::{write_iso_micros, write_json_string};

/// The store column type for an Arrow type.
pub fn column_type(data_type: &DataType) -> ColumnType {
    match data_type {
        DataType::Boolean => ColumnType::Boolean,
        t if t.is_integer() => ColumnType::Integer,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Real,
        DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => ColumnType::Decimal,
        DataType::Timestamp(_, _) => ColumnType::Timestamp,
        DataType::Struct(fields)
            if fields.len() == 2
                && fields.iter().map(|f| f.name().as_str()).eq(["start", "end"])
                && fields.iter().all(|f| matches!(f.data_type(), DataType::Timestamp(_, _))) =>
        {
            ColumnType::Window
        }
        DataType::Struct(_) | DataType::List(_) | DataType::LargeList(_) | DataType::Map(_, _) => ColumnType::Json,
        _ => ColumnType::Text,
    }
}

fn timestamp_micros(array: &ArrayRef, row: usize) -> Option<i64> {
    let DataType::Timestamp(unit, _) = array.data_type() else { return None };
    let v = match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row) * 1_000_000,
        TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(row) * 1000,
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row) / 1000,
    };
    Some(v)
}

/// One cell as a store value.
pub fn cell(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    macro_rules! int {
        ($t:ty) => {
            Value::Integer(array.as_primitive::<$t>().value(row) as i64)
        };
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => Value::Real(array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => Value::Real(array.as_primitive::<Float64Type>().value(row)),
        DataType::Float16 => {
            array_value_to_string(array, row).ok().and_then(|s| s.parse().ok()).map_or(Value::Null, Value::Real)
        }
        DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => array_value_to_string(array, row).map_or(Value::Null, Value::Decimal),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Value::Text(text(array, row)),
        DataType::Timestamp(_, _) => Value::Timestamp(timestamp_micros(array, row).unwrap_or_default()),
        DataType::Struct(fields) => {
            let s = array.as_struct();
            Value::Struct(fields.iter().zip(s.columns()).map(|(f, c)| (f.name().clone(), cell(c, row))).collect())
        }
        DataType::List(_) => list(&array.as_list::<i32>().value(row)),
        DataType::LargeList(_) => list(&array.as_list::<i64>().value(row)),
        DataType::Map(_, _) => Value::from_json(
            &serde_json::from_str(&array_value_to_string(array, row).unwrap_or_default()).unwrap_or(Json::Null),
        ),
        _ => Value::Text(array_value_to_string(array, row).unwrap_or_default()),
    }
}

fn list(values: &ArrayRef) -> Value {
    Value::List((0..values.len()).map(|i| cell(values, i)).collect())
}

fn text(array: &ArrayRef, row: usize) -> String {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_string(),
        DataType::Utf8View => array.as_string_view().value(row).to_string(),
        _ => array_value_to_string(array, row).unwrap_or_default(),
    }
}

/// Appends one cell as JSON text to `out` (structs as objects, lists as arrays,
/// timestamps as ISO text): the same text as `cell(..).to_json().to_string()`,
/// without building a tree first — ids are written for every changed row.
pub fn write_json(out: &mut String, array: &ArrayRef, row: usize) {
    if array.is_null(row) {
        out.push_str("null");
        return;
    }
    match array.data_type() {
        DataType::Struct(_) if column_type(array.data_type()) == ColumnType::Window => {
            write_window_json(out, array, row)
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            out.push('{');
            for (i, (f, c)) in fields.iter().zip(s.columns()).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, f.name());
                out.push(':');
                write_json(out, c, row);
            }
            out.push('}');
        }
        DataType::Timestamp(_, _) => {
            out.push('"');
            write_iso_micros(out, timestamp_micros(array, row).unwrap_or_default());
            out.push('"');
        }
        DataType::Utf8 => write_json_string(out, array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => write_json_string(out, array.as_string::<i64>().value(row)),
        DataType::Utf8View => write_json_string(out, array.as_string_view().value(row)),
        _ => cell(array, row).write_json(out),
    }
}

thread_local! {
    /// The last window [`write_window_json`] wrote: its start, end and JSON.
    static LAST_WINDOW: std::cell::RefCell<Option<(i64, i64, String)>> = const { std::cell::RefCell::new(None) };
}

/// [`write_json`] of a window (a valid one, with both bounds). The rows of a batch come
/// window by window, and formatting its two timestamps was most of writing an `_id`: the
/// text of the last window is kept and copied while the window stays the same.
fn write_window_json(out: &mut String, array: &ArrayRef, row: usize) {
    let s = array.as_struct();
    let (start, end) = (s.column(0), s.column(1));
    let bounds = match (start.is_valid(row), end.is_valid(row)) {
        (true, true) => timestamp_micros(start, row).zip(timestamp_micros(end, row)),
        _ => None,
    };
    let Some((start, end)) = bounds else {
        // A bound missing: written in full, as any struct.
        out.push_str("{\"start\":");
        write_json(out, start, row);
        out.push_str(",\"end\":");
        write_json(out, end, row);
        out.push('}');
        return;
    };
    LAST_WINDOW.with_borrow_mut(|last| {
        let text = match last {
            Some((s, e, text)) if *s == start && *e == end => text,
            _ => {
                let mut text = String::with_capacity(64);
                text.push_str("{\"start\":\"");
                write_iso_micros(&mut text, start);
                text.push_str("\",\"end\":\"");
                write_iso_micros(&mut text, end);
                text.push_str("\"}");
                &mut last.insert((start, end, text)).2
            }
        };
        out.push_str(text);
    });
}

/// The `_id` of row `row` made of the key columns `keys`.
pub fn row_id(keys: &[ArrayRef], row: usize) -> String {
    match keys {
        [] => "all".to_string(),
        [one] => match cell(one, row) {
            Value::Text(text) | Value::Decimal(text) => text,
            Value::Null => "null".to_string(),
            _ => {
                let mut text = String::new();
                write_json(&mut text, one, row);
                text
            }
        },
        many => {
            // Room for a typical id (a window alone takes 64 bytes): growing a string
            // from nothing reallocates it several times, for every row written.
            let mut text = String::with_capacity(128);
            text.push('[');
            for (i, key) in many.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                write_json(&mut text, key, row);
            }
            text.push(']');
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::windows::window_struct_fields;
    use datafusion::arrow::array::{Int64Array, StringArray, StructArray, TimestampMicrosecondArray};
    use std::sync::Arc;

    #[test]
    fn json_text_is_the_same_written_directly_or_through_a_tree() {
        let starts = TimestampMicrosecondArray::from(vec![Some(0), None]);
        let ends = TimestampMicrosecondArray::from(vec![300_000_000, 1]);
        let window: ArrayRef = Arc::new(
            StructArray::try_new(window_struct_fields(), vec![Arc::new(starts), Arc::new(ends)], None).unwrap(),
        );
        let users: ArrayRef = Arc::new(Int64Array::from(vec![Some(-17), None]));
        let names: ArrayRef = Arc::new(StringArray::from(vec!["plain", "a \"quoted\"\nname\\"]));
        let starts = TimestampMicrosecondArray::from(vec![Some(0), Some(0), Some(0), Some(5)]);
        let ends = TimestampMicrosecondArray::from(vec![Some(300_000_000), Some(300_000_000), None, Some(300_000_000)]);
        let windows: ArrayRef = Arc::new(
            StructArray::try_new(window_struct_fields(), vec![Arc::new(starts), Arc::new(ends)], None).unwrap(),
        );
        // The same window twice (the second from the kept text), one without an end, another.
        for row in 0..4 {
            let mut text = String::new();
            write_json(&mut text, &windows, row);
            assert_eq!(text, cell(&windows, row).to_json().to_string());
        }
        for array in [window, users, names] {
            for row in 0..2 {
                let mut text = String::new();
                write_json(&mut text, &array, row);
                assert_eq!(text, cell(&array, row).to_json().to_string());
            }
        }
    }

    #[test]
    fn ids_are_stable_text_for_one_key_and_json_for_several() {
        let users: ArrayRef = Arc::new(Int64Array::from(vec![17]));
        let types: ArrayRef = Arc::new(StringArray::from(vec!["view"]));
        let starts = TimestampMicrosecondArray::from(vec![0]);
        let ends = TimestampMicrosecondArray::from(vec![300_000_000]);
        let window: ArrayRef = Arc::new(
            StructArray::try_new(window_struct_fields(), vec![Arc::new(starts), Arc::new(ends)], None).unwrap(),
        );
        assert_eq!(row_id(std::slice::from_ref(&users), 0), "17");
        assert_eq!(row_id(std::slice::from_ref(&types), 0), "view");
        assert_eq!(
            row_id(&[users, types, window.clone()], 0),
            r#"[17,"view",{"start":"1970-01-01T00:00:00.000000Z","end":"1970-01-01T00:05:00.000000Z"}]"#
        );
        assert_eq!(
            cell(&window, 0),
            Value::Struct(vec![("start".into(), Value::Timestamp(0)), ("end".into(), Value::Timestamp(300_000_000))])
        );
        assert_eq!(column_type(window.data_type()), ColumnType::Window);
    }
}
