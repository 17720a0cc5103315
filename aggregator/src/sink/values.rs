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
use datafusion::arrow::util::display::array_value_to_string;
use serde_json::Value as Json;
use store::{ColumnType, Value};

/// The store column type for an Arrow type.
pub fn column_type(data_type: &DataType) -> ColumnType {
    match data_type {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => ColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => ColumnType::Real,
        _ => ColumnType::Text,
    }
}

/// Formats microseconds since the epoch as fixed-width ISO-8601 UTC.
pub fn iso_micros(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => micros.to_string(),
    }
}

fn timestamp_micros(array: &ArrayRef, row: usize) -> Option<i64> {
    let DataType::Timestamp(unit, _) = array.data_type() else { return None };
    let v = match unit {
        TimeUnit::Second => {
            array.as_primitive::<datafusion::arrow::datatypes::TimestampSecondType>().value(row) * 1_000_000
        }
        TimeUnit::Millisecond => {
            array.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>().value(row) * 1000
        }
        TimeUnit::Microsecond => {
            array.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>().value(row)
        }
        TimeUnit::Nanosecond => {
            array.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>().value(row) / 1000
        }
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
            Value::Text(json(array, row).to_string())
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
        [one] => match json(one, row) {
            Json::String(s) => s,
            other => other.to_string(),
        },
        many => Json::Array(many.iter().map(|k| json(k, row)).collect()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::windows::window_struct_fields;
    use datafusion::arrow::array::{Int64Array, StringArray, StructArray, TimestampMicrosecondArray};
    use std::sync::Arc;

    #[test]
    fn ids_are_stable_text_for_one_key_and_json_for_several() {
        let users: ArrayRef = Arc::new(Int64Array::from(vec![17]));
        let types: ArrayRef = Arc::new(StringArray::from(vec!["view"]));
        let starts = TimestampMicrosecondArray::from(vec![0]);
        let ends = TimestampMicrosecondArray::from(vec![300_000_000]);
        let window: ArrayRef = Arc::new(
            StructArray::try_new(window_struct_fields(), vec![Arc::new(starts), Arc::new(ends)], None).unwrap(),
        );
        assert_eq!(row_id(&[users.clone()], 0), "17");
        assert_eq!(row_id(&[types.clone()], 0), "view");
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
