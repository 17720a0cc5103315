//! Result values and column types, and how timestamps are written as text.

use std::fmt::Write;
use std::hash::{Hash, Hasher};

/// A value in a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Integer(i64),
    Real(f64),
    /// A decimal number as exact text, e.g. `12.50` (SQL `DECIMAL`).
    Decimal(String),
    Text(String),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// A struct, such as a window `{start, end}`: fields in order.
    Struct(Vec<(String, Value)>),
    List(Vec<Value>),
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::Null => {}
            Value::Bool(v) => v.hash(state),
            Value::Integer(v) | Value::Timestamp(v) => v.hash(state),
            Value::Real(v) => v.to_bits().hash(state),
            Value::Decimal(v) | Value::Text(v) => v.hash(state),
            Value::Struct(fields) => fields.hash(state),
            Value::List(items) => items.hash(state),
        }
    }
}

impl Value {
    /// The value as JSON: timestamps as ISO-8601 text, structs as objects.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as Json;
        match self {
            Value::Null => Json::Null,
            Value::Bool(v) => Json::Bool(*v),
            Value::Integer(v) => Json::from(*v),
            Value::Real(v) => Json::from(*v),
            Value::Decimal(v) => v.parse::<f64>().map_or(Json::String(v.clone()), Json::from),
            Value::Text(v) => Json::String(v.clone()),
            Value::Timestamp(v) => Json::String(iso_micros(*v)),
            Value::Struct(fields) => Json::Object(fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
            Value::List(items) => Json::Array(items.iter().map(Value::to_json).collect()),
        }
    }

    /// Appends the value's JSON text to `out`: the same text as
    /// `self.to_json().to_string()`, without building a tree first (windows and ids
    /// are written for every changed row).
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
            Value::Integer(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Text(v) => write_json_string(out, v),
            Value::Timestamp(v) => {
                out.push('"');
                write_iso_micros(out, *v);
                out.push('"');
            }
            Value::Struct(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(out, name);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
            Value::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            // Numbers as serde_json writes them (shortest round-trip text, null if not finite).
            Value::Real(_) | Value::Decimal(_) => out.push_str(&self.to_json().to_string()),
        }
    }

    /// The value's JSON text (see [`Value::write_json`]).
    pub fn json_text(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    /// The value as a number, if it is one (integers, floats, decimals).
    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Integer(v) => Some(*v as f64),
            Value::Real(v) => Some(*v),
            Value::Decimal(v) => v.parse().ok(),
            _ => None,
        }
    }

    /// The start of a window (a struct whose first field is a timestamp), in microseconds.
    pub fn window_start(&self) -> Option<i64> {
        match self {
            Value::Struct(fields) => match fields.first() {
                Some((_, Value::Timestamp(t))) => Some(*t),
                _ => None,
            },
            _ => None,
        }
    }

    /// A value from JSON (strings stay text: JSON has no timestamps).
    pub fn from_json(json: &serde_json::Value) -> Value {
        use serde_json::Value as Json;
        match json {
            Json::Null => Value::Null,
            Json::Bool(v) => Value::Bool(*v),
            Json::Number(n) => n.as_i64().map_or_else(|| Value::Real(n.as_f64().unwrap_or(f64::NAN)), Value::Integer),
            Json::String(s) => Value::Text(s.clone()),
            Json::Array(items) => Value::List(items.iter().map(Value::from_json).collect()),
            Json::Object(fields) => {
                Value::Struct(fields.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect())
            }
        }
    }
}

/// The type of a result column (besides `_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Boolean,
    Integer,
    Real,
    Decimal,
    Text,
    Timestamp,
    /// A window: a struct of two timestamps, `start` and `end`.
    Window,
    /// Any other struct, list or map.
    Json,
}

impl ColumnType {
    /// The declared type of the column in SQLite (which keeps the type's name, so
    /// the store can read values back as they were written).
    pub(crate) fn sqlite(self) -> &'static str {
        match self {
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Integer => "INTEGER",
            ColumnType::Real => "REAL",
            ColumnType::Decimal => "DECIMAL",
            ColumnType::Text => "TEXT",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Window => "WINDOW",
            ColumnType::Json => "JSON",
        }
    }

    /// The column type of an SQLite declared type (tables of older versions declared
    /// timestamps and windows as TEXT: they read back as text).
    pub(crate) fn from_sqlite(declared: &str) -> ColumnType {
        match declared.to_ascii_uppercase().as_str() {
            "BOOLEAN" => ColumnType::Boolean,
            "INTEGER" => ColumnType::Integer,
            "REAL" => ColumnType::Real,
            "DECIMAL" => ColumnType::Decimal,
            "TIMESTAMP" => ColumnType::Timestamp,
            "WINDOW" => ColumnType::Window,
            "JSON" => ColumnType::Json,
            _ => ColumnType::Text,
        }
    }
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it (quote,
/// backslash and control characters; nothing else).
pub fn write_json_string(out: &mut String, text: &str) {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(&serde_json::Value::String(text.to_string()).to_string());
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

/// Formats microseconds since the epoch as fixed-width ISO-8601 UTC,
/// `2026-11-22T14:05:00.000000Z` (so that text order is time order).
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
    // `YYYY-MM-DDTHH:MM:SS.ffffffZ`: each field's digits written backwards into place.
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    for (value, end) in [(year, 4), (month, 7), (day, 10), (hour, 13), (minute, 16), (second, 19), (fraction, 26)] {
        let mut value = value;
        let mut at = end;
        while value > 0 {
            at -= 1;
            text[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    out.push_str(std::str::from_utf8(&text).expect("ASCII digits"));
}

/// Reads an RFC 3339 timestamp (such as [`iso_micros`]'s) as microseconds since the epoch.
pub fn parse_iso_micros(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_fixed_width_iso_utc_like_chrono_and_parse_back() {
        for micros in [0, 1, -1, 1_767_225_600_123_456, 951_782_400_000_000, 4_102_444_799_999_999, -86_400_000_001] {
            let chrono = chrono::DateTime::from_timestamp_micros(micros).unwrap().format("%Y-%m-%dT%H:%M:%S%.6fZ");
            assert_eq!(iso_micros(micros), chrono.to_string(), "{micros}");
            assert_eq!(parse_iso_micros(&iso_micros(micros)), Some(micros));
        }
    }

    #[test]
    fn json_text_is_the_same_written_directly_or_through_serde_json() {
        let window = Value::Struct(vec![("start".into(), Value::Timestamp(0)), ("end".into(), Value::Timestamp(-1))]);
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Integer(-42),
            Value::Real(1.5),
            Value::Real(f64::NAN),
            Value::Decimal("12.50".into()),
            Value::Text("plain".into()),
            Value::Text("quote \" backslash \\ tab \t bell \u{7} é ✓ /".into()),
            window.clone(),
            Value::List(vec![Value::Integer(1), Value::Text("a\nb".into()), window, Value::List(vec![])]),
            Value::Struct(vec![("we\"ird".into(), Value::Null)]),
        ];
        for value in values {
            assert_eq!(value.json_text(), value.to_json().to_string(), "{value:?}");
        }
    }

    #[test]
    fn every_column_type_survives_its_sqlite_declared_type() {
        use ColumnType::*;
        for t in [Boolean, Integer, Real, Decimal, Text, Timestamp, Window, Json] {
            assert_eq!(ColumnType::from_sqlite(t.sqlite()), t);
        }
    }
}
