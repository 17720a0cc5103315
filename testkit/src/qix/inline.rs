//! Inline table data (`LOAD ... INLINE [ <data> ] (<options>)`), parsed like the engine
//! parses a delimited text file.
//!
//! The caller (the script lexer) has already cut the data out of the script: it starts
//! right after `[` (or `"`) and ends at the first `]` (or `"`), because the engine has no
//! escape for the enclosing character. What is parsed here:
//!
//! * lines are split at LF, a CR right before the LF is dropped; lines holding only
//!   spaces and tabs are skipped (so an indented closing bracket does not add a row);
//! * the first record holds the field names (`embedded labels`, the default for inline
//!   data), unless `no labels` is given (then the fields are `@1`, `@2`, ...);
//! * fields are split at the delimiter (`,` unless `delimiter is 'c'`);
//! * unless `no quotes` is given, a field whose first character (after leading blanks)
//!   is `"` or `'` is quoted up to the matching closing quote; a doubled quote inside is
//!   one quote character; only with `msq` may a quoted field continue on the next line.
//!   A quote that is never closed makes the field an ordinary unquoted one;
//! * unquoted fields have leading and trailing spaces and tabs trimmed;
//! * a record with fewer fields than the header gets nulls (`None`) for the missing ones,
//!   extra fields are ignored. An empty field is an empty text, not a null.

/// The format specification in parentheses after the inline data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InlineOptions {
    pub delimiter: char,
    pub quotes: bool,
    pub msq: bool,
    pub embedded_labels: bool,
}

impl Default for InlineOptions {
    fn default() -> Self {
        InlineOptions { delimiter: ',', quotes: true, msq: false, embedded_labels: true }
    }
}

/// The parsed data: field names and rows of raw text values (`None` = missing = null).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InlineTable {
    pub fields: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// Parses inline data into field names and rows.
pub(crate) fn parse_inline(data: &str, options: &InlineOptions) -> InlineTable {
    let records = records(data, options);
    let mut records = records.into_iter();
    let fields: Vec<String> = if options.embedded_labels {
        match records.next() {
            Some(header) => header
                .into_iter()
                .enumerate()
                .map(|(i, name)| if name.is_empty() { format!("@{}", i + 1) } else { name })
                .collect(),
            None => Vec::new(),
        }
    } else {
        // Without labels the width comes from the first record; it stays in the data.
        let width = records.clone().next().map_or(0, |first| first.len());
        (1..=width).map(|i| format!("@{i}")).collect()
    };
    let rows = records
        .map(|record| {
            let mut record = record.into_iter();
            fields.iter().map(|_| record.next()).collect()
        })
        .collect();
    InlineTable { fields, rows }
}

/// A blank for trimming: space or tab, unless it is the delimiter itself.
fn is_blank(c: char, delimiter: char) -> bool {
    (c == ' ' || c == '\t') && c != delimiter
}

/// Splits the data into records of field values.
fn records(data: &str, options: &InlineOptions) -> Vec<Vec<String>> {
    // Drop the CR of every CRLF (and a CR at the very end), then work on characters.
    let chars: Vec<char> = data.replace("\r\n", "\n").trim_end_matches('\r').chars().collect();
    let delimiter = options.delimiter;
    let n = chars.len();
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < n {
        let line_end = chars[pos..].iter().position(|&c| c == '\n').map_or(n, |i| pos + i);
        if chars[pos..line_end].iter().all(|&c| c == ' ' || c == '\t') {
            pos = line_end + 1;
            continue;
        }
        let mut fields = Vec::new();
        loop {
            while pos < n && is_blank(chars[pos], delimiter) {
                pos += 1;
            }
            let quoted = if options.quotes && pos < n && (chars[pos] == '"' || chars[pos] == '\'') {
                quoted_field(&chars, pos, options.msq)
            } else {
                None
            };
            let value = match quoted {
                Some((mut value, after)) => {
                    // Whatever follows the closing quote up to the delimiter is kept as is.
                    let (rest, next) = unquoted_field(&chars, after, delimiter);
                    value.push_str(&rest);
                    pos = next;
                    value
                }
                None => {
                    let (value, next) = unquoted_field(&chars, pos, delimiter);
                    pos = next;
                    value
                }
            };
            fields.push(value);
            if pos < n && chars[pos] == delimiter {
                pos += 1;
                continue;
            }
            // At the end of the line (or of the data).
            pos += 1;
            break;
        }
        records.push(fields);
    }
    records
}

/// Reads a quoted field starting at the quote at `start`. Returns the value and the
/// position after the closing quote, or `None` if the quote is not closed (on this
/// line, or with `msq` before the end of the data).
fn quoted_field(chars: &[char], start: usize, msq: bool) -> Option<(String, usize)> {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        if c == quote {
            if chars.get(i + 1) == Some(&quote) {
                value.push(quote);
                i += 2;
                continue;
            }
            return Some((value, i + 1));
        }
        if c == '\n' && !msq {
            return None;
        }
        value.push(c);
        i += 1;
    }
    None
}

/// Reads an unquoted field from `start` up to the delimiter or the end of the line, with
/// blanks trimmed. Returns the value and the position of the delimiter / line end.
fn unquoted_field(chars: &[char], start: usize, delimiter: char) -> (String, usize) {
    let mut end = start;
    while end < chars.len() && chars[end] != delimiter && chars[end] != '\n' {
        end += 1;
    }
    let value: String = chars[start..end].iter().collect();
    let trimmed = value.trim_matches(|c| is_blank(c, delimiter)).to_string();
    (trimmed, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some(v.to_string())).collect()
    }

    #[test]
    fn header_rows_trimming_and_blank_lines() {
        let t = parse_inline("\n  a , b\r\n 1, x y \n\n   \n2,3\n", &InlineOptions::default());
        assert_eq!(t.fields, vec!["a", "b"]);
        assert_eq!(t.rows, vec![some(&["1", "x y"]), some(&["2", "3"])]);
    }

    #[test]
    fn short_rows_get_nulls_and_extra_fields_are_ignored() {
        let t = parse_inline("a,b,c\n1\n1,2,3,4\n1,,\n", &InlineOptions::default());
        assert_eq!(t.rows[0], vec![Some("1".to_string()), None, None]);
        assert_eq!(t.rows[1], some(&["1", "2", "3"]));
        // Empty fields are empty texts, not nulls.
        assert_eq!(t.rows[2], some(&["1", "", ""]));
    }

    #[test]
    fn quotes_doubled_quotes_and_no_quotes() {
        let t = parse_inline("a,b\n\"x,y\",'it''s'\n \"q\"\"q\" ,\"open\n", &InlineOptions::default());
        assert_eq!(t.rows[0], some(&["x,y", "it's"]));
        // An unclosed quote (without msq) is an ordinary field.
        assert_eq!(t.rows[1], some(&["q\"q", "\"open"]));

        let options = InlineOptions { quotes: false, ..InlineOptions::default() };
        let t = parse_inline("a,b\n\"x,y\"\n", &options);
        assert_eq!(t.rows[0], some(&["\"x", "y\""]));
    }

    #[test]
    fn msq_allows_multi_line_quoted_fields() {
        let data = "a,b\n\"line1\nline2\",2\n";
        let t = parse_inline(data, &InlineOptions { msq: true, ..InlineOptions::default() });
        assert_eq!(t.rows, vec![some(&["line1\nline2", "2"])]);
        // Without msq the quote is not closed on its line: two broken records.
        let t = parse_inline(data, &InlineOptions::default());
        assert_eq!(t.rows.len(), 2);
    }

    #[test]
    fn tab_delimiter_and_no_labels() {
        let options = InlineOptions { delimiter: '\t', embedded_labels: false, ..InlineOptions::default() };
        let t = parse_inline("x\t y \n1\t2", &options);
        assert_eq!(t.fields, vec!["@1", "@2"]);
        assert_eq!(t.rows, vec![some(&["x", "y"]), some(&["1", "2"])]);
    }
}
