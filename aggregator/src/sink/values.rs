//! Arrow values → the store's values, and stable `_id`s.
//!
//! Integers and booleans are INTEGER, floats REAL, strings TEXT, timestamps ISO-8601
//! UTC text (`2026-11-22T14:05:00.000000Z`, fixed width so text order is time order),
//! structs (such as a window) and lists JSON text.
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

/// The store column type for an Arrow type.
pub fn column_type(data_type: &DataType) -> ColumnType {
    match data_type {
        t if t.is_integer() || t == &DataType::Boolean => ColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => ColumnType::Real,
        _ => ColumnType::Text,
    }
}

/// Formats microseconds since the epoch as fixed-width ISO-8601 UTC,
/// `2026-11-22T14:05:00.000000Z`.
pub fn iso_micros(micros: i64) -> String {
    let mut out = String::with_capacity(27);
    write_iso_micros(&mut out, micros);
    out
}

/// Appends [`iso_micros`] to `out`. This runs for every timestamp written, so it is
/// plain arithmetic (days to civil date, Howard Hinnant's algorithm), not strftime.
pub fn write_iso_micros(out: &mut String, micros: i64) {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        out.push_str(&micros.to_string());
        return;
    }
    let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    let fields = [(year, 4, '-'), (month, 2, '-'), (day, 2, 'T'), (hour, 2, ':'), (minute, 2, ':'), (second, 2, '.')];
    for (value, width, separator) in fields.into_iter().chain([(fraction, 6, 'Z')]) {
        for power in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10i64.pow(power) % 10) as u8));
        }
        out.push(separator);
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
        DataType::Boolean => Value::Integer(array.as_boolean().value(row) as i64),
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
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) | DataType::Float16 => {
            array_value_to_string(array, row).ok().and_then(|s| s.parse().ok()).map_or(Value::Null, Value::Real)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Value::Text(text(array, row)),
        DataType::Timestamp(_, _) => Value::Text(iso_micros(timestamp_micros(array, row).unwrap_or_default())),
        DataType::Struct(_) | DataType::List(_) | DataType::LargeList(_) | DataType::Map(_, _) => {
            let mut text = String::new();
            write_json(&mut text, array, row);
            Value::Text(text)
        }
        _ => Value::Text(array_value_to_string(array, row).unwrap_or_default()),
    }
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
/// timestamps as ISO text): the same text as `json(..).to_string()`, without building
/// a JSON tree first — ids and struct cells are written for every changed row.
pub fn write_json(out: &mut String, array: &ArrayRef, row: usize) {
    if array.is_null(row) {
        out.push_str("null");
        return;
    }
    match array.data_type() {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            out.push('{');
            for (i, (f, c)) in fields.iter().zip(s.columns()).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(f.name().clone()).to_string());
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
        t if t.is_integer() => {
            if let Value::Integer(v) = cell(array, row) {
                out.push_str(&v.to_string());
            }
        }
        _ => out.push_str(&json(array, row).to_string()),
    }
}

/// One cell as JSON (structs as objects, lists as arrays, timestamps as ISO text).
pub fn json(array: &ArrayRef, row: usize) -> Json {
    if array.is_null(row) {
        return Json::Null;
    }
    match array.data_type() {
        DataType::Struct(fields) => {
            let s = array.as_struct();
            Json::Object(fields.iter().zip(s.columns()).map(|(f, c)| (f.name().clone(), json(c, row))).collect())
        }
        DataType::List(_) => {
            let values = array.as_list::<i32>().value(row);
            Json::Array((0..values.len()).map(|i| json(&values, i)).collect())
        }
        DataType::LargeList(_) => {
            let values = array.as_list::<i64>().value(row);
            Json::Array((0..values.len()).map(|i| json(&values, i)).collect())
        }
        _ => match cell(array, row) {
            Value::Null => Json::Null,
            Value::Integer(v) if array.data_type() == &DataType::Boolean => Json::Bool(v != 0),
            Value::Integer(v) => Json::from(v),
            Value::Real(v) => Json::from(v),
            Value::Text(v) => Json::String(v),
        },
    }
}

/// The `_id` of row `row` made of the key columns `keys`.
pub fn row_id(keys: &[ArrayRef], row: usize) -> String {
    match keys {
        [] => "all".to_string(),
        [one] => match cell(one, row) {
            Value::Text(text) => text,
            Value::Null => "null".to_string(),
            _ => {
                let mut text = String::new();
                write_json(&mut text, one, row);
                text
            }
        },
        many => {
            let mut text = String::from("[");
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
    fn timestamps_format_as_fixed_width_iso_utc_like_chrono() {
        for micros in [0, 1, -1, 1_767_225_600_123_456, 951_782_400_000_000, 4_102_444_799_999_999, -86_400_000_001] {
            let chrono = chrono::DateTime::from_timestamp_micros(micros).unwrap().format("%Y-%m-%dT%H:%M:%S%.6fZ");
            assert_eq!(iso_micros(micros), chrono.to_string(), "{micros}");
        }
    }

    #[test]
    fn json_text_is_the_same_written_directly_or_through_a_tree() {
        let starts = TimestampMicrosecondArray::from(vec![Some(0), None]);
        let ends = TimestampMicrosecondArray::from(vec![300_000_000, 1]);
        let window: ArrayRef = Arc::new(
            StructArray::try_new(window_struct_fields(), vec![Arc::new(starts), Arc::new(ends)], None).unwrap(),
        );
        for row in 0..2 {
            let mut text = String::new();
            write_json(&mut text, &window, row);
            assert_eq!(text, json(&window, row).to_string());
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
            Value::Text(r#"{"start":"1970-01-01T00:00:00.000000Z","end":"1970-01-01T00:05:00.000000Z"}"#.into())
        );
    }
}
