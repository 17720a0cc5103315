//! The load script that makes a Qlik app's table equal to a pipeline's result.
//!
//! Each pushed table becomes one partial-reload statement:
//!
//! ```text
//! [item_counts]:
//! Replace LOAD
//!     If([f0] = '%N', Null(), Text(Replace(…Replace([f0], '%2C', Chr(44))…, '%25', Chr(37)))) AS [item_id],
//!     If([f1] = '%N', Null(), [f1]) AS [interaction_count]
//! INLINE [
//! f0,f1,end
//! 7,42,.
//! ] (txt, utf8, embedded labels, delimiter is ',');
//! ```
//!
//! `Replace` drops the table and loads it anew, so groups that left the result
//! disappear, and it works on every engine (`Merge` does not exist in Qlik Core).
//! A partial reload runs only such prefixed statements and keeps every other table.
//!
//! **Why the `%` escapes.** Inline data ends at the first `]` — the engine has no escape
//! for it — and is then read like a delimited file, where the delimiter, quotes at a
//! field's edges, line breaks and edge spaces all mean something. So every text value is
//! written with those characters as `%XX` (and `%` itself as `%25`), and the LOAD turns
//! them back with `Replace(…, '%XX', Chr(n))`, `%25` last. A `%` in the inline data
//! always starts an escape, so the replacements cannot overlap and decoding is exact.
//! No value can end the inline table or reach the script: inline data never holds `]`,
//! and the only script text derived from data are names, quoted with a bracket style
//! they do not contain. `%N` (not a possible escape: `N` is no hex digit) marks a null.
//! Each line ends with a constant column `end` that is never loaded, so no line is empty
//! (an empty line would be skipped) even for a one-column table of empty strings.
//!
//! Next to each table the script replaces a small *marker table* (see [`marker`]) that
//! says which result version the app holds, so a restarted aggregator can read it back.

use std::fmt::Write;

use store::{ColumnType, ResultColumn, ResultRow, Value, iso_micros};

/// Why a name cannot be written into a script.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} cannot be a Qlik table or field name: {1}")]
pub struct NameError(pub String, pub &'static str);

/// Characters written as `%XX` in inline data, with the byte they stand for. `%`
/// itself comes last: its replacement must be the last one applied.
const ESCAPED: [(char, u8); 9] = [
    (',', 0x2C),
    (']', 0x5D),
    ('[', 0x5B),
    ('"', 0x22),
    ('\'', 0x27),
    ('\n', 0x0A),
    ('\r', 0x0D),
    ('\t', 0x09),
    ('%', 0x25),
];

/// Spaces are escaped only at a value's edges (a reader may trim them there).
const SPACE: u8 = 0x20;

/// The inline-data token for a null.
const NULL: &str = "%N";

/// The format of timestamps, for `Timestamp#` (UTC, microseconds).
const TIMESTAMP_FORMAT: &str = "YYYY-MM-DD hh:mm:ss.ffffff";

/// How a field is written and loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    /// Loaded as given, so the engine reads it as a number.
    Number,
    /// Escaped and loaded with `Text(…)`: exactly the characters written.
    Text,
    /// `YYYY-MM-DD hh:mm:ss.ffffff` UTC, loaded with `Timestamp#` (a date and time in Qlik).
    Timestamp,
}

/// One field of the app's table. A window column `w` becomes two: `w.start`, `w.end`.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    kind: FieldKind,
    /// The result column it comes from, and for a window which bound (0 start, 1 end).
    column: usize,
    part: Option<usize>,
}

/// The fields a result's columns become in Qlik.
pub fn fields(columns: &[ResultColumn]) -> Vec<Field> {
    let mut fields = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        let kind = match c.column_type {
            ColumnType::Integer | ColumnType::Real | ColumnType::Decimal => FieldKind::Number,
            ColumnType::Timestamp => FieldKind::Timestamp,
            ColumnType::Boolean | ColumnType::Text | ColumnType::Json => FieldKind::Text,
            ColumnType::Window => {
                for (part, bound) in ["start", "end"].into_iter().enumerate() {
                    let name = format!("{}.{bound}", c.name);
                    fields.push(Field { name, kind: FieldKind::Timestamp, column: i, part: Some(part) });
                }
                continue;
            }
        };
        fields.push(Field { name: c.name.clone(), kind, column: i, part: None });
    }
    fields
}

/// A table or field name quoted for a script: `[name]`, or `"name"` / `` `name` `` if
/// it contains `]`. A name with all three closing characters, a control character
/// or no character at all cannot be written.
pub fn quote_name(name: &str) -> Result<String, NameError> {
    if name.is_empty() {
        return Err(NameError(name.into(), "it is empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError(name.into(), "it contains a control character"));
    }
    for (open, close) in [('[', ']'), ('"', '"'), ('`', '`')] {
        if !name.contains(close) {
            return Ok(format!("{open}{name}{close}"));
        }
    }
    Err(NameError(name.into(), "it contains all of ] \" and `"))
}

/// Appends `text` to inline data with the `%XX` escapes (see the module doc).
pub fn escape_into(out: &mut String, text: &str) {
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        match ESCAPED.iter().find(|(e, _)| *e == c) {
            Some((_, byte)) => write!(out, "%{byte:02X}").expect("writing to a String"),
            None if c == ' ' && (i == 0 || i == last) => write!(out, "%{SPACE:02X}").expect("writing to a String"),
            None => out.push(c),
        }
    }
}

/// The LOAD expression that turns inline field `source` back into the value.
fn load_expression(field: &Field, source: &str) -> String {
    let value = match field.kind {
        FieldKind::Number => source.to_string(),
        FieldKind::Timestamp => format!("Timestamp#({source}, '{TIMESTAMP_FORMAT}')"),
        FieldKind::Text => {
            let mut decoded = source.to_string();
            let escapes = ESCAPED.iter().map(|(c, b)| (*b, *c as u32));
            // Edge spaces before `%25`: every escape but `%` itself goes first.
            let (percent, others): (Vec<_>, Vec<_>) = escapes.partition(|(b, _)| *b == 0x25);
            for (byte, code) in others.into_iter().chain([(SPACE, 32)]).chain(percent) {
                decoded = format!("Replace({decoded}, '%{byte:02X}', Chr({code}))");
            }
            format!("Text({decoded})")
        }
    };
    format!("If({source} = '{NULL}', Null(), {value})")
}

/// Appends one field's value of `row` to inline data.
fn write_value(out: &mut String, field: &Field, row: &ResultRow) {
    let value = row.values.get(field.column).unwrap_or(&Value::Null);
    let value = match (field.part, value) {
        (Some(part), Value::Struct(bounds)) => bounds.get(part).map(|(_, v)| v).unwrap_or(&Value::Null),
        (Some(_), _) => &Value::Null,
        (None, value) => value,
    };
    match (field.kind, value) {
        (_, Value::Null) => out.push_str(NULL),
        (FieldKind::Timestamp, Value::Timestamp(micros)) => {
            // ISO-8601 `2026-01-01T00:05:00.000000Z` → `2026-01-01 00:05:00.000000`.
            let iso = iso_micros(*micros);
            out.push_str(&iso.trim_end_matches('Z').replacen('T', " ", 1));
        }
        (FieldKind::Number, Value::Integer(n)) => write!(out, "{n}").expect("writing to a String"),
        (FieldKind::Number, Value::Real(x)) if x.is_finite() => write!(out, "{x}").expect("writing to a String"),
        (FieldKind::Number, Value::Decimal(d)) => escape_into(out, d),
        // NaN, ±Infinity, and any value whose type is not the column's: as text.
        (_, Value::Text(text)) => escape_into(out, text),
        (_, Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        (_, other) => escape_into(out, &text_of(other)),
    }
}

/// The text of a value that has no field kind of its own (structs, lists: JSON).
fn text_of(value: &Value) -> String {
    match value {
        Value::Real(x) if x.is_nan() => "NaN".into(),
        Value::Real(x) if x.is_infinite() => if *x > 0.0 { "Infinity" } else { "-Infinity" }.into(),
        other => other.to_json().to_string(),
    }
}

/// Appends a `Replace LOAD … INLINE` statement that makes table `name` hold `rows`.
pub fn replace_table(
    out: &mut String,
    name: &str,
    columns: &[ResultColumn],
    rows: &[ResultRow],
) -> Result<(), NameError> {
    let fields = fields(columns);
    let label = quote_name(name)?;
    let names = fields.iter().map(|f| quote_name(&f.name)).collect::<Result<Vec<_>, _>>()?;
    writeln!(out, "{label}:\nReplace LOAD").expect("writing to a String");
    for (i, (field, quoted)) in fields.iter().zip(&names).enumerate() {
        let comma = if i + 1 < fields.len() { "," } else { "" };
        writeln!(out, "    {} AS {quoted}{comma}", load_expression(field, &format!("[f{i}]"))).expect("writing");
    }
    out.push_str("INLINE [\n");
    for i in 0..fields.len() {
        write!(out, "f{i},").expect("writing to a String");
    }
    out.push_str("end\n");
    for row in rows {
        for field in &fields {
            write_value(out, field, row);
            out.push(',');
        }
        out.push_str(".\n");
    }
    out.push_str("] (txt, utf8, embedded labels, delimiter is ',');\n");
    Ok(())
}

/// The version of a result: the pipeline's SQL hash and how many events it had consumed
/// when the result last changed. Within one hash, a larger count is a later result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultVersion {
    pub sql_hash: String,
    pub events: u64,
}

impl std::fmt::Display for ResultVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.sql_hash, self.events)
    }
}

impl ResultVersion {
    pub fn parse(text: &str) -> Option<ResultVersion> {
        let (hash, events) = text.rsplit_once(':')?;
        Some(ResultVersion { sql_hash: hash.to_string(), events: events.parse().ok()? })
    }

    /// Whether an app holding `self` already has everything of `other`.
    pub fn covers(&self, other: &ResultVersion) -> bool {
        self.sql_hash == other.sql_hash && self.events >= other.events
    }
}

/// The marker table of an app table: which result version it holds.
pub mod marker {
    use super::*;

    /// `__sqlagg.<table>`; its fields are prefixed the same way so that no two marker
    /// tables share a field name (Qlik links tables by common field names).
    pub fn table(table: &str) -> String {
        format!("__sqlagg.{table}")
    }

    pub fn version_field(table: &str) -> String {
        format!("__sqlagg.{table}.version")
    }

    fn columns(table: &str) -> Vec<ResultColumn> {
        ["pipeline", "version", "rows", "pushed_at"]
            .iter()
            .map(|f| ResultColumn { name: format!("__sqlagg.{table}.{f}"), column_type: ColumnType::Text, role: None })
            .collect()
    }

    /// Appends the statement that records `version` (of `pipeline`, `rows` rows) for `table`.
    pub fn replace(
        out: &mut String,
        table: &str,
        pipeline: &str,
        version: &ResultVersion,
        rows: usize,
        pushed_at: &str,
    ) -> Result<(), NameError> {
        let row = ResultRow {
            id: String::new(),
            values: [pipeline, &version.to_string(), &rows.to_string(), pushed_at]
                .into_iter()
                .map(|v| Value::Text(v.to_string()))
                .collect(),
        };
        replace_table(out, &super::marker::table(table), &columns(table), &[row])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, column_type: ColumnType) -> ResultColumn {
        ResultColumn { name: name.into(), column_type, role: None }
    }

    #[test]
    fn no_escaped_value_holds_a_character_the_inline_reader_acts_on() {
        for hostile in ["a,b", "x]y", "[", "\"q\"", "'s'", "l1\nl2\r\n", " edge ", "\t", "%25", "%N", "]\n];"] {
            let mut out = String::new();
            escape_into(&mut out, hostile);
            assert!(!out.contains([',', ']', '[', '"', '\'', '\n', '\r', '\t']), "{hostile:?} → {out:?}");
            assert!(!out.starts_with(' ') && !out.ends_with(' '), "{hostile:?} → {out:?}");
            assert_ne!(out, NULL);
        }
    }

    #[test]
    fn escapes_decode_back_in_the_order_the_load_applies_them() {
        // The LOAD's Replace chain, applied here in the same order.
        let field = Field { name: "t".into(), kind: FieldKind::Text, column: 0, part: None };
        let expression = load_expression(&field, "[f0]");
        let mut order = Vec::new();
        let mut rest = expression.as_str();
        while let Some(at) = rest.find("'%") {
            let code = &rest[at + 2..at + 4];
            let chr = rest[at..].split("Chr(").nth(1).and_then(|r| r.split(')').next()).unwrap();
            order.push((format!("%{code}"), char::from_u32(chr.parse().unwrap()).unwrap()));
            rest = &rest[at + 4..];
        }
        assert_eq!(order.last().map(|(e, _)| e.as_str()), Some("%25"), "{expression}");
        for original in ["a,b]c[d\"e'f\ng\rh\ti", " lead", "trail ", "100%", "%2C literally", "ünï ☃ 𝄞", ""] {
            let mut encoded = String::new();
            escape_into(&mut encoded, original);
            let decoded = order.iter().fold(encoded, |text, (escape, c)| text.replace(escape, &c.to_string()));
            assert_eq!(decoded, original);
        }
    }

    #[test]
    fn names_are_quoted_with_a_bracket_they_do_not_contain() {
        assert_eq!(quote_name("item count").unwrap(), "[item count]");
        assert_eq!(quote_name("a]b").unwrap(), "\"a]b\"");
        assert_eq!(quote_name("a]\"b").unwrap(), "`a]\"b`");
        assert!(quote_name("a]\"`b").is_err());
        assert!(quote_name("line\nbreak").is_err());
        assert!(quote_name("").is_err());
    }

    #[test]
    fn a_table_statement_has_one_field_per_column_and_windows_split_in_two() {
        let columns = [
            column("window", ColumnType::Window),
            column("type", ColumnType::Text),
            column("n", ColumnType::Integer),
            column("avg", ColumnType::Real),
        ];
        let window = Value::Struct(vec![
            ("start".into(), Value::Timestamp(1_767_225_900_000_000)),
            ("end".into(), Value::Timestamp(1_767_226_200_000_000)),
        ]);
        let rows = [
            ResultRow {
                id: "a".into(),
                values: vec![window, Value::Text("x,y".into()), Value::Integer(-3), Value::Real(0.5)],
            },
            ResultRow { id: "b".into(), values: vec![Value::Null, Value::Null, Value::Null, Value::Real(f64::NAN)] },
        ];
        let mut out = String::new();
        replace_table(&mut out, "per window", &columns, &rows).unwrap();
        assert!(out.starts_with("[per window]:\nReplace LOAD\n"), "{out}");
        for name in ["[window.start]", "[window.end]", "[type]", "[n]", "[avg]"] {
            assert!(out.contains(&format!("AS {name}")), "{name} missing in {out}");
        }
        assert!(out.contains("INLINE [\nf0,f1,f2,f3,f4,end\n"), "{out}");
        assert!(out.contains("\n2026-01-01 00:05:00.000000,2026-01-01 00:10:00.000000,x%2Cy,-3,0.5,.\n"), "{out}");
        assert!(out.contains("\n%N,%N,%N,%N,NaN,.\n"), "{out}");
        assert!(out.ends_with("] (txt, utf8, embedded labels, delimiter is ',');\n"), "{out}");
        assert_eq!(out.matches(']').count(), out.matches('[').count(), "only names and the inline bracket: {out}");
    }

    #[test]
    fn versions_cover_only_their_own_sql_and_earlier_counts() {
        let v = ResultVersion::parse("abc:10").unwrap();
        assert_eq!(v.to_string(), "abc:10");
        assert!(v.covers(&ResultVersion { sql_hash: "abc".into(), events: 9 }));
        assert!(!v.covers(&ResultVersion { sql_hash: "abc".into(), events: 11 }));
        assert!(!v.covers(&ResultVersion { sql_hash: "def".into(), events: 1 }));
        assert_eq!(ResultVersion::parse("no version"), None);
    }
}
