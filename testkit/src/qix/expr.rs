//! Expressions in a LOAD field list and their evaluation per row.
//!
//! Exactly these are understood (anything else is a script error at parse time):
//! field references, text literals, numbers, `a = b`, and the functions `If`, `Null`,
//! `Text`, `Replace`, `Chr`, `Num#` and `Timestamp#` (names case-insensitive).
//!
//! Values follow the engine's dual model: a value read from inline data is text, but a
//! field reference whose text is a plain number becomes a [`Cell::Dual`] (text and
//! number), as the engine interprets numbers when it loads them. Text functions return
//! [`Cell::Text`]; `Null()` and missing fields are [`Cell::Null`].

use std::collections::HashMap;

use super::Cell;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Field(String),
    Text(String),
    Number(String, f64),
    Eq(Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    If,
    Null,
    Text,
    Replace,
    Chr,
    NumInterpret,
    TimestampInterpret,
}

impl Func {
    /// Looks a function up by its (case-insensitive) script name.
    pub(crate) fn by_name(name: &str) -> Option<Func> {
        Some(match name.to_ascii_lowercase().as_str() {
            "if" => Func::If,
            "null" => Func::Null,
            "text" => Func::Text,
            "replace" => Func::Replace,
            "chr" => Func::Chr,
            "num#" => Func::NumInterpret,
            "timestamp#" => Func::TimestampInterpret,
            _ => return None,
        })
    }

    /// Allowed numbers of arguments (inclusive).
    pub(crate) fn arity(self) -> (usize, usize) {
        match self {
            Func::If => (2, 3),
            Func::Null => (0, 0),
            Func::Text | Func::Chr => (1, 1),
            Func::Replace => (3, 3),
            Func::NumInterpret => (1, 4),
            Func::TimestampInterpret => (2, 2),
        }
    }
}

impl Expr {
    /// Every field name the expression refers to (to report a missing one before any row).
    pub(crate) fn field_refs<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Field(name) => out.push(name),
            Expr::Text(_) | Expr::Number(..) => {}
            Expr::Eq(a, b) => {
                a.field_refs(out);
                b.field_refs(out);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.field_refs(out)),
        }
    }
}

/// One input row: field name -> raw inline value (`None` = null).
pub(crate) struct Row<'a> {
    pub index: &'a HashMap<&'a str, usize>,
    pub values: &'a [Option<String>],
}

impl Row<'_> {
    /// A bare field reference: null stays null; text that is a plain number becomes a dual.
    pub(crate) fn field(&self, name: &str) -> Cell {
        match self.index.get(name).and_then(|&i| self.values.get(i)).and_then(|v| v.as_deref()) {
            None => Cell::Null,
            Some(text) => interpret(text),
        }
    }
}

/// How the engine keeps a loaded text value: as a dual when it is a plain number.
pub(crate) fn interpret(text: &str) -> Cell {
    match parse_number(text) {
        Some(n) => Cell::Dual(text.to_string(), n),
        None => Cell::Text(text.to_string()),
    }
}

/// A plain number: optional sign, digits, optional `.digits`, optional exponent.
/// Deliberately narrower than Rust's parser (no `inf`, `NaN`, `.5`, `5.`).
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    text.parse().ok()
}

fn text_of(cell: &Cell) -> Option<&str> {
    match cell {
        Cell::Null => None,
        Cell::Text(t) | Cell::Dual(t, _) => Some(t),
    }
}

fn number_of(cell: &Cell) -> Option<f64> {
    match cell {
        Cell::Null => None,
        Cell::Dual(_, n) => Some(*n),
        Cell::Text(t) => parse_number(t),
    }
}

/// Qlik's booleans are numbers: -1 true, 0 false.
fn boolean(value: bool) -> Cell {
    if value { Cell::Dual("-1".to_string(), -1.0) } else { Cell::Dual("0".to_string(), 0.0) }
}

/// Evaluates an expression for one row. Never fails: bad arguments give null, as in the engine.
pub(crate) fn eval(expr: &Expr, row: &Row<'_>) -> Cell {
    match expr {
        Expr::Field(name) => row.field(name),
        Expr::Text(t) => Cell::Text(t.clone()),
        Expr::Number(t, n) => Cell::Dual(t.clone(), *n),
        Expr::Eq(a, b) => {
            let (a, b) = (eval(a, row), eval(b, row));
            // Numbers compare as numbers when both sides are numbers, else as text; a
            // comparison with null is false.
            match (&a, &b) {
                (Cell::Dual(_, x), Cell::Dual(_, y)) => boolean(x == y),
                _ => match (text_of(&a), text_of(&b)) {
                    (Some(x), Some(y)) => boolean(x == y),
                    _ => boolean(false),
                },
            }
        }
        Expr::Call(func, args) => call(*func, args, row),
    }
}

fn call(func: Func, args: &[Expr], row: &Row<'_>) -> Cell {
    let arg = |i: usize| args.get(i).map_or(Cell::Null, |a| eval(a, row));
    match func {
        Func::If => {
            let cond = arg(0);
            if number_of(&cond).is_some_and(|n| n != 0.0) { arg(1) } else { arg(2) }
        }
        Func::Null => Cell::Null,
        Func::Text => match text_of(&arg(0)) {
            Some(t) => Cell::Text(t.to_string()),
            None => Cell::Null,
        },
        Func::Replace => {
            let (s, from, to) = (arg(0), arg(1), arg(2));
            match (text_of(&s), text_of(&from), text_of(&to)) {
                (Some(s), Some(""), Some(_)) => Cell::Text(s.to_string()),
                (Some(s), Some(from), Some(to)) => Cell::Text(s.replace(from, to)),
                _ => Cell::Null,
            }
        }
        Func::Chr => match number_of(&arg(0)) {
            Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => {
                // In range and integral, so the conversion is exact.
                match char::from_u32(n as u32) {
                    Some(c) => Cell::Text(c.to_string()),
                    None => Cell::Null,
                }
            }
            _ => Cell::Null,
        },
        Func::NumInterpret => {
            let value = arg(0);
            let Some(text) = text_of(&value) else { return Cell::Null };
            // The format code (argument 2) is not interpreted; the separators are.
            let decimal = text_of(&arg(2)).map(str::to_string);
            let thousands = text_of(&arg(3)).map(str::to_string);
            let mut plain = text.trim().to_string();
            if let Some(t) = thousands.filter(|t| !t.is_empty()) {
                plain = plain.replace(&t, "");
            }
            if let Some(d) = decimal.filter(|d| !d.is_empty() && d != ".") {
                if plain.contains('.') {
                    return Cell::Text(text.to_string());
                }
                plain = plain.replace(&d, ".");
            }
            match parse_number(&plain) {
                Some(n) => Cell::Dual(text.to_string(), n),
                None => Cell::Text(text.to_string()),
            }
        }
        Func::TimestampInterpret => {
            let value = arg(0);
            let Some(text) = text_of(&value) else { return Cell::Null };
            let format = arg(1);
            match text_of(&format).and_then(|f| parse_timestamp(text, f)) {
                Some(serial) => Cell::Dual(text.to_string(), serial),
                None => Cell::Text(text.to_string()),
            }
        }
    }
}

/// One element of a timestamp format.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Year,
    Month(usize),
    Day(usize),
    Hour(usize),
    Minute(usize),
    Second(usize),
    Fraction(usize),
    Literal(char),
    Optional(Vec<Part>),
}

/// Splits a format such as `YYYY-MM-DD hh:mm:ss[.fff]` into parts; `[...]` is optional.
/// Unsupported codes (`YY`, `MMM`, `TT`, ...) give `None`, so the value stays text.
fn format_parts(chars: &[char], pos: &mut usize, nested: bool) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    while *pos < chars.len() {
        let c = chars[*pos];
        if c == '[' {
            *pos += 1;
            parts.push(Part::Optional(format_parts(chars, pos, true)?));
            continue;
        }
        if c == ']' {
            if !nested {
                return None;
            }
            *pos += 1;
            return Some(parts);
        }
        let run = chars[*pos..].iter().take_while(|&&x| x == c).count();
        let part = match (c, run) {
            ('Y', 4) => Part::Year,
            ('M', 1 | 2) => Part::Month(run),
            ('D', 1 | 2) => Part::Day(run),
            ('h', 1 | 2) => Part::Hour(run),
            ('m', 1 | 2) => Part::Minute(run),
            ('s', 1 | 2) => Part::Second(run),
            ('f', _) => Part::Fraction(run),
            ('Y' | 'M' | 'D' | 'h' | 'm' | 's' | 'T' | 't' | 'W', _) => return None,
            _ => {
                *pos += 1;
                parts.push(Part::Literal(c));
                continue;
            }
        };
        *pos += run;
        parts.push(part);
    }
    if nested { None } else { Some(parts) }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stamp {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    fraction: f64,
}

/// Reads between `min` and `max` digits.
fn digits(text: &[char], pos: &mut usize, min: usize, max: usize) -> Option<i64> {
    let count = text[*pos..].iter().take(max).take_while(|c| c.is_ascii_digit()).count();
    if count < min {
        return None;
    }
    let s: String = text[*pos..*pos + count].iter().collect();
    *pos += count;
    s.parse().ok()
}

fn match_parts(parts: &[Part], text: &[char], pos: &mut usize, stamp: &mut Stamp) -> Option<()> {
    for part in parts {
        match part {
            Part::Year => stamp.year = digits(text, pos, 4, 4)?,
            // A one-letter code takes one or two digits, a two-letter code exactly two.
            Part::Month(n) => stamp.month = digits(text, pos, *n, 2)?,
            Part::Day(n) => stamp.day = digits(text, pos, *n, 2)?,
            Part::Hour(n) => stamp.hour = digits(text, pos, *n, 2)?,
            Part::Minute(n) => stamp.minute = digits(text, pos, *n, 2)?,
            Part::Second(n) => stamp.second = digits(text, pos, *n, 2)?,
            Part::Fraction(n) => {
                let start = *pos;
                digits(text, pos, 1, *n)?;
                let s: String = text[start..*pos].iter().collect();
                stamp.fraction = format!("0.{s}").parse().ok()?;
            }
            Part::Literal(c) => {
                if text.get(*pos) != Some(c) {
                    return None;
                }
                *pos += 1;
            }
            Part::Optional(inner) => {
                // Try the optional group; on failure, as if it were absent.
                let (saved_pos, saved_stamp) = (*pos, *stamp);
                if match_parts(inner, text, pos, stamp).is_none() {
                    *pos = saved_pos;
                    *stamp = saved_stamp;
                }
            }
        }
    }
    Some(())
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    days_from_civil(if month == 12 { year + 1 } else { year }, if month == 12 { 1 } else { month + 1 }, 1)
        - days_from_civil(year, month, 1)
}

/// `Timestamp#(text, format)`: the Qlik serial number (days since 1899-12-30, time as the
/// fraction of a day), or `None` if the text does not match the format.
pub(crate) fn parse_timestamp(text: &str, format: &str) -> Option<f64> {
    let format: Vec<char> = format.chars().collect();
    let parts = format_parts(&format, &mut 0, false)?;
    let text: Vec<char> = text.chars().collect();
    let mut stamp = Stamp { month: 1, day: 1, ..Stamp::default() };
    let mut pos = 0;
    match_parts(&parts, &text, &mut pos, &mut stamp)?;
    if pos != text.len() {
        return None;
    }
    let s = stamp;
    if !(1..=12).contains(&s.month)
        || s.day < 1
        || s.day > days_in_month(s.year, s.month)
        || s.hour > 23
        || s.minute > 59
        || s.second > 59
    {
        return None;
    }
    let days = days_from_civil(s.year, s.month, s.day) - days_from_civil(1899, 12, 30);
    let seconds = (s.hour * 3600 + s.minute * 60 + s.second) as f64 + s.fraction;
    Some(days as f64 + seconds / 86_400.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_only() {
        assert_eq!(parse_number("42"), Some(42.0));
        assert_eq!(parse_number("-1.5e3"), Some(-1500.0));
        for bad in ["", "NaN", "inf", ".5", "5.", "1,0", " 1", "0x10", "1e"] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timestamps_become_serial_numbers() {
        assert_eq!(parse_timestamp("1899-12-30 00:00:00", "YYYY-MM-DD hh:mm:ss"), Some(0.0));
        assert_eq!(parse_timestamp("1900-01-01 12:00:00", "YYYY-MM-DD hh:mm:ss"), Some(2.5));
        let v = parse_timestamp("2026-01-01 00:05:00.000000", "YYYY-MM-DD hh:mm:ss.ffffff").unwrap_or(0.0);
        assert!((v - (46023.0 + 300.0 / 86400.0)).abs() < 1e-9, "{v}");
        // An optional fraction.
        let fmt = "YYYY-MM-DD hh:mm:ss[.fff]";
        assert_eq!(parse_timestamp("2026-01-01 06:00:00", fmt), Some(46023.25));
        let v = parse_timestamp("2026-01-01 06:00:00.5", fmt).unwrap_or(0.0);
        assert!((v - (46023.25 + 0.5 / 86400.0)).abs() < 1e-12);
        assert_eq!(parse_timestamp("2026-02-30 00:00:00", "YYYY-MM-DD hh:mm:ss"), None);
        assert_eq!(parse_timestamp("2026-01-01", "YYYY-MM-DD hh:mm:ss"), None);
        assert_eq!(parse_timestamp("1/2/2026 x", "M/D/YYYY TT"), None);
    }
}
