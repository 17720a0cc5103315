//! The load-script subset the test double runs on a reload.
//!
//! Lexing follows the engine's rules where they matter for a client that generates
//! scripts: statements end at `;` outside quotes, brackets and inline data; `// ...` and
//! `/* ... */` are comments, `REM ... ;` is a comment statement; names are quoted with
//! `[...]`, `"..."` or backticks (no escape for `]`), text literals with `'...'` (`''` is
//! one quote); inline data starts right after `INLINE [` (or `INLINE "`) and ends at the
//! FIRST `]` (or `"`), with no escape at all.
//!
//! Statements:
//!
//! * `SET name = ...;` / `LET name = ...;` — accepted and ignored;
//! * `DROP TABLE[S] a[, b];` — runs in full and partial reloads; a missing table is an
//!   error (11001);
//! * `[label:] [Replace|Add [Only]] [NoConcatenate] LOAD <fields> INLINE [...] (<options>);`
//!   and, with the 12.2027 schema only,
//!   `[label:] Merge [Only] On k1[, k2] [Concatenate [(table)]] LOAD ...;`.
//!
//! Anything else is an error: unknown statements, prefixes and functions 11002, bad
//! syntax 11003, unknown fields 11013, unknown tables 11001, duplicate field names 11016,
//! bad Merge input 30101. Every error carries the line the statement starts on.

use std::collections::HashMap;

use super::Cell;
use super::expr::{Expr, Func, Row, eval};
use super::inline::{InlineOptions, parse_inline};

pub(crate) const ERR_TABLE_NOT_FOUND: i64 = 11001;
pub(crate) const ERR_UNKNOWN_STATEMENT: i64 = 11002;
pub(crate) const ERR_SYNTAX: i64 = 11003;
pub(crate) const ERR_FIELD_NOT_FOUND: i64 = 11013;
pub(crate) const ERR_NAME_TAKEN: i64 = 11016;
pub(crate) const ERR_MERGE: i64 = 30101;

/// The name an unlabelled LOAD gives its table.
const DEFAULT_TABLE_NAME: &str = "INLINE";

/// A script error, as reported in GetProgress's `qErrorData`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScriptError {
    pub code: i64,
    /// 1-based line where the failing statement starts.
    pub line: u32,
    pub message: String,
    /// The failing statement's text.
    pub line_text: String,
}

/// A table of an app's data model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Table {
    pub name: String,
    pub fields: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare word: identifier, keyword or function name (`Num#` included).
    Word(String),
    /// A quoted name: `[...]`, `"..."` or `` `...` ``.
    Name(String),
    /// A text literal `'...'`.
    Str(String),
    Num(String),
    /// Inline data, cut out right after the `INLINE` keyword.
    Inline(String),
    Punct(char),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => w.clone(),
            Tok::Name(n) => format!("[{n}]"),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Num(n) => n.clone(),
            Tok::Inline(_) => "inline data".to_string(),
            Tok::Punct(c) => c.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Byte offsets in the script, for statement texts and default field names.
    start: usize,
    end: usize,
}

/// The tokens of one statement (without its `;`).
struct RawStatement {
    tokens: Vec<Token>,
    line: u32,
    text: String,
}

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
    line: u32,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer { src, chars: src.char_indices().collect(), pos: 0, line: 1 }
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).map(|&(_, c)| c)
    }

    fn offset(&self) -> usize {
        self.chars.get(self.pos).map_or(self.src.len(), |&(o, _)| o)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        if c == '\n' {
            self.line += 1;
        }
        self.pos += 1;
        Some(c)
    }

    /// The rest of the line starting at byte `offset`, for error reports.
    fn line_at(&self, offset: usize) -> String {
        let start = self.src[..offset].rfind('\n').map_or(0, |i| i + 1);
        self.src[start..].lines().next().unwrap_or("").to_string()
    }

    fn error(&self, line: u32, offset: usize, message: String) -> ScriptError {
        ScriptError { code: ERR_SYNTAX, line, message, line_text: self.line_at(offset) }
    }

    /// Skips whitespace and comments.
    fn skip_trivia(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('/'), Some('/')) => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    self.bump();
                    self.bump();
                    // An unterminated block comment runs to the end of the script.
                    while self.peek(0).is_some() && !(self.peek(0) == Some('*') && self.peek(1) == Some('/')) {
                        self.bump();
                    }
                    self.bump();
                    self.bump();
                }
                _ => return,
            }
        }
    }

    /// Reads up to (not including) `close`, consuming the closing character. With
    /// `doubled`, two closing characters in a row stand for one.
    fn until(&mut self, close: char, doubled: bool) -> Option<String> {
        let mut text = String::new();
        loop {
            let c = self.bump()?;
            if c == close {
                if doubled && self.peek(0) == Some(close) {
                    self.bump();
                    text.push(close);
                    continue;
                }
                return Some(text);
            }
            text.push(c);
        }
    }

    fn is_word_start(c: char) -> bool {
        c.is_alphabetic() || c == '_' || c == '@'
    }

    fn is_word_char(c: char) -> bool {
        c.is_alphanumeric() || matches!(c, '_' | '.' | '#' | '@')
    }

    /// Splits the script into statements of tokens.
    fn statements(mut self) -> Result<Vec<RawStatement>, ScriptError> {
        let mut statements = Vec::new();
        let mut tokens: Vec<Token> = Vec::new();
        let mut statement_line = 1;
        loop {
            self.skip_trivia();
            let Some(c) = self.peek(0) else { break };
            let (start, line) = (self.offset(), self.line);
            if tokens.is_empty() {
                statement_line = line;
            }
            let tok = match c {
                ';' => {
                    self.bump();
                    if !tokens.is_empty() {
                        let text = self.src[tokens[0].start..start].to_string();
                        statements.push(RawStatement {
                            tokens: std::mem::take(&mut tokens),
                            line: statement_line,
                            text,
                        });
                    }
                    continue;
                }
                '[' | '"' | '`' => {
                    self.bump();
                    let close = if c == '[' { ']' } else { c };
                    let name = self.until(close, c != '[');
                    Tok::Name(name.ok_or_else(|| self.error(line, start, format!("missing closing {close}")))?)
                }
                '\'' => {
                    self.bump();
                    let text = self.until('\'', true);
                    Tok::Str(text.ok_or_else(|| self.error(line, start, "missing closing '".to_string()))?)
                }
                c if c.is_ascii_digit() => {
                    while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                        self.bump();
                    }
                    if self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
                        self.bump();
                        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                            self.bump();
                        }
                    }
                    if matches!(self.peek(0), Some('e' | 'E')) {
                        let sign = usize::from(matches!(self.peek(1), Some('+' | '-')));
                        if self.peek(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                            for _ in 0..=sign {
                                self.bump();
                            }
                            while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                                self.bump();
                            }
                        }
                    }
                    Tok::Num(self.src[start..self.offset()].to_string())
                }
                c if Self::is_word_start(c) => {
                    while self.peek(0).is_some_and(Self::is_word_char) {
                        self.bump();
                    }
                    let word = self.src[start..self.offset()].to_string();
                    if tokens.is_empty() && word.eq_ignore_ascii_case("REM") {
                        // A comment statement: everything up to and including the next `;`.
                        while self.bump().is_some_and(|c| c != ';') {}
                        continue;
                    }
                    let inline = word.eq_ignore_ascii_case("INLINE");
                    tokens.push(Token { tok: Tok::Word(word), start, end: self.offset() });
                    if inline {
                        self.inline_data(&mut tokens)?;
                    }
                    continue;
                }
                other => {
                    self.bump();
                    Tok::Punct(other)
                }
            };
            tokens.push(Token { tok, start, end: self.offset() });
        }
        if !tokens.is_empty() {
            // A last statement without `;` is accepted.
            let text = self.src[tokens[0].start..].trim_end().to_string();
            statements.push(RawStatement { tokens, line: statement_line, text });
        }
        Ok(statements)
    }

    /// After `INLINE`: the data from `[` (or `"`) to the first `]` (or `"`), no escapes.
    fn inline_data(&mut self, tokens: &mut Vec<Token>) -> Result<(), ScriptError> {
        while self.peek(0).is_some_and(char::is_whitespace) {
            self.bump();
        }
        let close = match self.peek(0) {
            Some('[') => ']',
            Some('"') => '"',
            // Not inline data: the parser reports the syntax error.
            _ => return Ok(()),
        };
        let (start, line) = (self.offset(), self.line);
        self.bump();
        let data =
            self.until(close, false).ok_or_else(|| self.error(line, start, "inline data not closed".to_string()))?;
        tokens.push(Token { tok: Tok::Inline(data), start, end: self.offset() });
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Parser

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    None,
    Replace,
    Add,
    Merge,
}

#[derive(Debug)]
enum FieldList {
    Star,
    /// (expression, output field name)
    Exprs(Vec<(Expr, String)>),
}

#[derive(Debug)]
struct Load {
    label: Option<String>,
    prefix: Prefix,
    only: bool,
    no_concatenate: bool,
    merge_keys: Vec<String>,
    merge_target: Option<String>,
    fields: FieldList,
    data: String,
    options: InlineOptions,
}

#[derive(Debug)]
enum Statement {
    Ignored,
    Drop(Vec<String>),
    Load(Box<Load>),
}

struct Parser<'a> {
    raw: &'a RawStatement,
    src: &'a str,
    pos: usize,
    allow_merge: bool,
}

type Parsed<T> = Result<T, (i64, String)>;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.raw.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, ahead: usize) -> Option<&'a Tok> {
        self.raw.tokens.get(self.pos + ahead).map(|t| &t.tok)
    }

    fn found(&self) -> String {
        self.peek().map_or_else(|| "end of statement".to_string(), Tok::describe)
    }

    fn is_word(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn eat_word(&mut self, keyword: &str) -> bool {
        let found = self.is_word(keyword);
        if found {
            self.pos += 1;
        }
        found
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let found = self.peek() == Some(&Tok::Punct(c));
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_punct(&mut self, c: char) -> Parsed<()> {
        if self.eat_punct(c) { Ok(()) } else { Err((ERR_SYNTAX, format!("expected '{c}', found {}", self.found()))) }
    }

    /// A table or field name: quoted, or a bare word.
    fn name(&mut self) -> Parsed<String> {
        match self.peek() {
            Some(Tok::Name(n) | Tok::Word(n)) => {
                self.pos += 1;
                Ok(n.clone())
            }
            _ => Err((ERR_SYNTAX, format!("expected a name, found {}", self.found()))),
        }
    }

    fn statement(&mut self) -> Parsed<Statement> {
        if self.eat_word("SET") || self.eat_word("LET") {
            // Variables are not used by anything the double understands.
            return Ok(Statement::Ignored);
        }
        if self.eat_word("DROP") {
            if !(self.eat_word("TABLE") || self.eat_word("TABLES")) {
                return Err((ERR_UNKNOWN_STATEMENT, format!("DROP {} is not supported", self.found())));
            }
            let mut names = vec![self.name()?];
            while self.eat_punct(',') {
                names.push(self.name()?);
            }
            self.end()?;
            return Ok(Statement::Drop(names));
        }
        let label = match (self.peek(), self.peek_at(1)) {
            (Some(Tok::Name(_) | Tok::Word(_)), Some(Tok::Punct(':'))) => {
                let label = self.name()?;
                self.pos += 1;
                Some(label)
            }
            _ => None,
        };
        self.load(label).map(|load| Statement::Load(Box::new(load)))
    }

    fn load(&mut self, label: Option<String>) -> Parsed<Load> {
        let start = self.pos;
        let (mut prefix, mut only, mut no_concatenate) = (Prefix::None, false, false);
        let (mut merge_keys, mut merge_target) = (Vec::new(), None);
        loop {
            if prefix == Prefix::None && self.eat_word("REPLACE") {
                prefix = Prefix::Replace;
                only = self.eat_word("ONLY");
            } else if prefix == Prefix::None && self.eat_word("ADD") {
                prefix = Prefix::Add;
                only = self.eat_word("ONLY");
            } else if prefix == Prefix::None && self.allow_merge && self.eat_word("MERGE") {
                prefix = Prefix::Merge;
                only = self.eat_word("ONLY");
                if self.peek() == Some(&Tok::Punct('(')) {
                    return Err((ERR_MERGE, "Merge with a sequence number field is not supported".to_string()));
                }
                if !self.eat_word("ON") {
                    return Err((ERR_SYNTAX, format!("expected ON after Merge, found {}", self.found())));
                }
                merge_keys.push(self.name()?);
                while self.eat_punct(',') {
                    merge_keys.push(self.name()?);
                }
                if self.eat_word("CONCATENATE") && self.eat_punct('(') {
                    merge_target = Some(self.name()?);
                    self.expect_punct(')')?;
                }
            } else if self.eat_word("NOCONCATENATE") {
                no_concatenate = true;
            } else {
                break;
            }
        }
        if !self.eat_word("LOAD") {
            // Without a label or prefix, the first word is an unknown statement; so is
            // `Merge` on an engine that does not know it (Qlik Core).
            let unknown = (label.is_none() && self.pos == start) || (prefix == Prefix::None && self.is_word("MERGE"));
            let code = if unknown { ERR_UNKNOWN_STATEMENT } else { ERR_SYNTAX };
            return Err((code, format!("unknown statement: {}", self.found())));
        }
        let fields = self.field_list()?;
        if !self.eat_word("INLINE") {
            return Err((
                ERR_UNKNOWN_STATEMENT,
                format!("only LOAD ... INLINE is supported, found {} after the field list", self.found()),
            ));
        }
        let data = match self.peek() {
            Some(Tok::Inline(data)) => {
                self.pos += 1;
                data.clone()
            }
            _ => return Err((ERR_SYNTAX, format!("expected inline data after INLINE, found {}", self.found()))),
        };
        let options = if self.eat_punct('(') { self.options()? } else { InlineOptions::default() };
        self.end()?;
        Ok(Load { label, prefix, only, no_concatenate, merge_keys, merge_target, fields, data, options })
    }

    fn end(&self) -> Parsed<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err((ERR_SYNTAX, format!("unexpected {} before the end of the statement", self.found()))),
        }
    }

    fn field_list(&mut self) -> Parsed<FieldList> {
        if self.peek() == Some(&Tok::Punct('*')) {
            self.pos += 1;
            return Ok(FieldList::Star);
        }
        let mut fields = Vec::new();
        loop {
            let first = self.pos;
            let expr = self.expr()?;
            let name = if self.eat_word("AS") {
                self.name()?
            } else if let Expr::Field(name) = &expr {
                name.clone()
            } else {
                // The engine names a computed field after its expression text.
                let tokens = &self.raw.tokens[first..self.pos];
                match (tokens.first(), tokens.last()) {
                    (Some(a), Some(b)) => self.src[a.start..b.end].to_string(),
                    _ => String::new(),
                }
            };
            fields.push((expr, name));
            if !self.eat_punct(',') {
                return Ok(FieldList::Exprs(fields));
            }
        }
    }

    fn expr(&mut self) -> Parsed<Expr> {
        let left = self.primary()?;
        if self.eat_punct('=') {
            return Ok(Expr::Eq(Box::new(left), Box::new(self.expr()?)));
        }
        match self.peek() {
            Some(Tok::Punct(c)) if "+-*/&<>".contains(*c) => {
                Err((ERR_UNKNOWN_STATEMENT, format!("operator {c} is not supported by the test double")))
            }
            _ => Ok(left),
        }
    }

    fn primary(&mut self) -> Parsed<Expr> {
        let Some(tok) = self.peek() else {
            return Err((ERR_SYNTAX, "expected an expression, found end of statement".to_string()));
        };
        self.pos += 1;
        match tok {
            Tok::Name(n) => Ok(Expr::Field(n.clone())),
            Tok::Str(s) => Ok(Expr::Text(s.clone())),
            Tok::Num(n) => number(n, false),
            Tok::Punct('-') => match self.peek() {
                Some(Tok::Num(n)) => {
                    self.pos += 1;
                    number(n, true)
                }
                _ => Err((ERR_UNKNOWN_STATEMENT, "operator - is not supported by the test double".to_string())),
            },
            Tok::Punct('(') => {
                let inner = self.expr()?;
                self.expect_punct(')')?;
                Ok(inner)
            }
            Tok::Word(w) if self.peek() == Some(&Tok::Punct('(')) => {
                self.pos += 1;
                let func = Func::by_name(w).ok_or_else(|| (ERR_UNKNOWN_STATEMENT, format!("unknown function: {w}")))?;
                let mut args = Vec::new();
                if !self.eat_punct(')') {
                    loop {
                        args.push(self.expr()?);
                        if !self.eat_punct(',') {
                            break;
                        }
                    }
                    self.expect_punct(')')?;
                }
                let (min, max) = func.arity();
                if args.len() < min || args.len() > max {
                    return Err((ERR_SYNTAX, format!("wrong number of arguments to {w}: {}", args.len())));
                }
                Ok(Expr::Call(func, args))
            }
            Tok::Word(w) if !["INLINE", "AS", "FROM", "RESIDENT"].iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                Ok(Expr::Field(w.clone()))
            }
            other => Err((ERR_SYNTAX, format!("expected an expression, found {}", other.describe()))),
        }
    }

    /// The format specification after inline data, from after `(` to `)`.
    fn options(&mut self) -> Parsed<InlineOptions> {
        let mut options = InlineOptions::default();
        loop {
            if self.eat_word("txt") || self.eat_word("utf8") || self.eat_word("unicode") || self.eat_word("ansi") {
                // Inline data is already text: nothing to do.
            } else if self.eat_word("msq") {
                options.msq = true;
            } else if self.eat_word("embedded") {
                self.labels()?;
                options.embedded_labels = true;
            } else if self.eat_word("no") {
                if self.eat_word("quotes") {
                    options.quotes = false;
                } else {
                    self.labels()?;
                    options.embedded_labels = false;
                }
            } else if self.eat_word("delimiter") {
                if !self.eat_word("is") {
                    return Err((ERR_SYNTAX, format!("expected 'is' after delimiter, found {}", self.found())));
                }
                let Some(Tok::Str(spec)) = self.peek() else {
                    return Err((ERR_SYNTAX, format!("expected a quoted delimiter, found {}", self.found())));
                };
                self.pos += 1;
                let mut chars = spec.chars();
                options.delimiter = match (chars.next(), chars.next()) {
                    (Some(c), None) => c,
                    _ if spec == "\\t" || spec.eq_ignore_ascii_case("tab") => '\t',
                    _ => return Err((ERR_SYNTAX, format!("unsupported delimiter '{spec}'"))),
                };
            } else {
                return Err((ERR_SYNTAX, format!("unknown file format option {}", self.found())));
            }
            if !self.eat_punct(',') {
                self.expect_punct(')')?;
                return Ok(options);
            }
        }
    }

    fn labels(&mut self) -> Parsed<()> {
        if self.eat_word("labels") {
            Ok(())
        } else {
            Err((ERR_SYNTAX, format!("expected labels, found {}", self.found())))
        }
    }
}

fn number(text: &str, negative: bool) -> Parsed<Expr> {
    let text = if negative { format!("-{text}") } else { text.to_string() };
    match text.parse::<f64>() {
        Ok(n) => Ok(Expr::Number(text, n)),
        Err(_) => Err((ERR_SYNTAX, format!("bad number {text}"))),
    }
}

// ---------------------------------------------------------------------------------------
// Execution

/// Parses the whole script (so a syntax error anywhere fails the reload before any
/// statement runs; the data is left unchanged on failure either way).
fn parse(script: &str, allow_merge: bool) -> Result<Vec<(Statement, RawStatement)>, ScriptError> {
    let raws = Lexer::new(script).statements()?;
    let mut statements = Vec::new();
    for raw in raws {
        let mut parser = Parser { raw: &raw, src: script, pos: 0, allow_merge };
        match parser.statement() {
            Ok(statement) => statements.push((statement, raw)),
            Err((code, message)) => {
                return Err(ScriptError { code, line: raw.line, message, line_text: raw.text.clone() });
            }
        }
    }
    Ok(statements)
}

/// Runs a script against `tables` (a copy of the app's data; the caller keeps the old
/// data when this fails). Progress lines are appended to `progress` as statements run.
pub(crate) fn run(
    script: &str,
    tables: &mut Vec<Table>,
    partial: bool,
    allow_merge: bool,
    progress: &mut Vec<String>,
) -> Result<(), ScriptError> {
    let statements = parse(script, allow_merge)?;
    if !partial {
        // A full reload starts from an empty data model.
        tables.clear();
    }
    for (statement, raw) in &statements {
        let result = match statement {
            Statement::Ignored => Ok(()),
            Statement::Drop(names) => drop_tables(tables, names, progress),
            Statement::Load(load) => run_load(load, tables, partial, progress),
        };
        result.map_err(|(code, message)| ScriptError { code, line: raw.line, message, line_text: raw.text.clone() })?;
    }
    Ok(())
}

fn drop_tables(tables: &mut Vec<Table>, names: &[String], progress: &mut Vec<String>) -> Parsed<()> {
    for name in names {
        let Some(i) = tables.iter().position(|t| &t.name == name) else {
            return Err((ERR_TABLE_NOT_FOUND, format!("Table '{name}' not found")));
        };
        tables.remove(i);
        progress.push(format!("Drop table {name}"));
    }
    Ok(())
}

/// `base`, or `base-1`, `base-2`, ... if that name is taken (as the engine names a
/// table whose label is already used by a table with other fields).
fn unique_name(tables: &[Table], base: &str) -> String {
    let taken = |n: &str| tables.iter().any(|t| t.name == n);
    if !taken(base) {
        return base.to_string();
    }
    (1..).map(|i| format!("{base}-{i}")).find(|n| !taken(n)).unwrap_or_default()
}

fn same_field_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|f| b.contains(f))
}

/// Appends rows to `tables[target]`, or makes a new table of them (named after `base`);
/// returns the table's name.
fn append_or_create(
    tables: &mut Vec<Table>,
    target: Option<usize>,
    base: &str,
    fields: Vec<String>,
    rows: Vec<Vec<Cell>>,
) -> String {
    match target {
        Some(i) => {
            append(&mut tables[i], &fields, rows);
            tables[i].name.clone()
        }
        None => {
            let name = unique_name(tables, base);
            tables.push(Table { name: name.clone(), fields, rows });
            name
        }
    }
}

/// Appends rows (with their own field order) to a table, adding fields it lacks.
fn append(target: &mut Table, fields: &[String], rows: Vec<Vec<Cell>>) {
    for field in fields {
        if !target.fields.contains(field) {
            target.fields.push(field.clone());
            target.rows.iter_mut().for_each(|r| r.push(Cell::Null));
        }
    }
    let positions: Vec<Option<usize>> = target.fields.iter().map(|f| fields.iter().position(|g| g == f)).collect();
    for mut row in rows {
        target.rows.push(positions.iter().map(|p| p.map_or(Cell::Null, |i| std::mem::take(&mut row[i]))).collect());
    }
}

fn run_load(load: &Load, tables: &mut Vec<Table>, partial: bool, progress: &mut Vec<String>) -> Parsed<()> {
    let runs = if partial { load.prefix != Prefix::None } else { !load.only };
    if !runs {
        return Ok(());
    }
    let input = parse_inline(&load.data, &load.options);
    let index: HashMap<&str, usize> = input.fields.iter().enumerate().map(|(i, f)| (f.as_str(), i)).collect();
    let (fields, rows): (Vec<String>, Vec<Vec<Cell>>) = match &load.fields {
        FieldList::Star => {
            let rows = input
                .rows
                .iter()
                .map(|values| {
                    let row = Row { index: &index, values };
                    input.fields.iter().map(|f| row.field(f)).collect()
                })
                .collect();
            (input.fields.clone(), rows)
        }
        FieldList::Exprs(exprs) => {
            let mut refs = Vec::new();
            exprs.iter().for_each(|(e, _)| e.field_refs(&mut refs));
            if let Some(missing) = refs.into_iter().find(|r| !index.contains_key(r)) {
                return Err((ERR_FIELD_NOT_FOUND, format!("Field '{missing}' not found")));
            }
            let rows = input
                .rows
                .iter()
                .map(|values| {
                    let row = Row { index: &index, values };
                    exprs.iter().map(|(e, _)| eval(e, &row)).collect()
                })
                .collect();
            (exprs.iter().map(|(_, n)| n.clone()).collect(), rows)
        }
    };
    if let Some(dup) = fields.iter().enumerate().find(|(i, f)| fields[..*i].contains(f)).map(|(_, f)| f) {
        return Err((ERR_NAME_TAKEN, format!("Field names must be unique within a table: {dup}")));
    }
    let count = rows.len();
    let base = load.label.clone().unwrap_or_else(|| DEFAULT_TABLE_NAME.to_string());
    // The table a prefixed load acts on: the labelled one, else one with the same fields.
    let existing = |tables: &[Table]| match &load.label {
        Some(label) => tables.iter().position(|t| &t.name == label),
        None => tables.iter().position(|t| same_field_set(&t.fields, &fields)),
    };
    let name = match load.prefix {
        Prefix::Replace => {
            let name = match existing(tables) {
                Some(i) => tables.remove(i).name,
                None => unique_name(tables, &base),
            };
            tables.push(Table { name: name.clone(), fields, rows });
            progress.push(format!("Replace table {name}: {count} rows"));
            return Ok(());
        }
        Prefix::Add => append_or_create(tables, existing(tables), &base, fields, rows),
        Prefix::Merge => merge(load, tables, &fields, rows, partial, &base)?,
        Prefix::None => {
            // Automatic concatenation onto a table with the same set of fields.
            let same = tables.iter().position(|t| same_field_set(&t.fields, &fields));
            append_or_create(tables, same.filter(|_| !load.no_concatenate), &base, fields, rows)
        }
    };
    let verb = match load.prefix {
        Prefix::Add => "Add",
        Prefix::Merge => "Merge",
        Prefix::None | Prefix::Replace => "Load",
    };
    progress.push(format!("{verb} table {name}: {count} rows"));
    Ok(())
}

/// `Merge ... On keys LOAD op, fields...`: applies insert/update/delete rows by key, in
/// order, to the target table (`Concatenate (T)`, else the labelled table, else one with
/// the same fields). A partial reload never creates the target; a full reload does.
fn merge(
    load: &Load,
    tables: &mut Vec<Table>,
    fields: &[String],
    rows: Vec<Vec<Cell>>,
    partial: bool,
    base: &str,
) -> Parsed<String> {
    let Some((_, data_fields)) = fields.split_first() else {
        return Err((ERR_MERGE, "Merge needs an operation field and data fields".to_string()));
    };
    if let Some(missing) = load.merge_keys.iter().find(|k| !data_fields.contains(k)) {
        return Err((ERR_FIELD_NOT_FOUND, format!("Field '{missing}' not found")));
    }
    let target = match (&load.merge_target, &load.label) {
        (Some(name), _) | (None, Some(name)) => tables.iter().position(|t| &t.name == name),
        (None, None) => tables.iter().position(|t| same_field_set(&t.fields, data_fields)),
    };
    let i = match target {
        Some(i) => i,
        None if partial => {
            let name = load.merge_target.as_deref().unwrap_or(base);
            return Err((ERR_TABLE_NOT_FOUND, format!("Table '{name}' not found")));
        }
        None => {
            let name = unique_name(tables, load.merge_target.as_deref().unwrap_or(base));
            tables.push(Table { name, fields: data_fields.to_vec(), rows: Vec::new() });
            tables.len() - 1
        }
    };
    let table = &mut tables[i];
    append(table, data_fields, Vec::new());
    let key_of = |row: &[Cell], fields: &[String]| -> Vec<Option<String>> {
        load.merge_keys
            .iter()
            .map(|k| {
                let cell = fields.iter().position(|f| f == k).and_then(|p| row.get(p));
                cell.and_then(Cell::text).map(str::to_string)
            })
            .collect()
    };
    for row in rows {
        let Some((op, data)) = row.split_first() else { continue };
        let op = op.text().unwrap_or("").to_ascii_lowercase();
        let key = key_of(data, data_fields);
        let target_fields = table.fields.clone();
        table.rows.retain(|r| key_of(r, &target_fields) != key);
        match op.as_str() {
            "insert" | "i" | "update" | "u" => append(table, data_fields, vec![data.to_vec()]),
            "delete" | "d" => {}
            other => return Err((ERR_MERGE, format!("unknown Merge operation '{other}'"))),
        }
    }
    Ok(table.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Cell {
        Cell::Text(s.to_string())
    }

    fn dual(s: &str, n: f64) -> Cell {
        Cell::Dual(s.to_string(), n)
    }

    fn reload(script: &str, tables: &mut Vec<Table>, partial: bool) -> Result<Vec<String>, ScriptError> {
        let mut progress = Vec::new();
        run(script, tables, partial, true, &mut progress).map(|()| progress)
    }

    fn table<'a>(tables: &'a [Table], name: &str) -> &'a Table {
        tables.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no table {name} in {tables:?}"))
    }

    #[test]
    fn comments_rem_set_let_and_star_load() {
        let script = "// a comment; not a statement\n/* block; comment */ SET x = 'a;b';\nLET y = 1 + 2;\n\
                      REM a remark with INLINE [ ; \n[t]: LOAD * INLINE [\na,b\n1,x\n] (txt, utf8, embedded labels, delimiter is ',');";
        let mut tables = Vec::new();
        let progress = reload(script, &mut tables, false).expect("reload");
        assert_eq!(progress, vec!["Load table t: 1 rows"]);
        let t = table(&tables, "t");
        assert_eq!(t.fields, vec!["a", "b"]);
        assert_eq!(t.rows, vec![vec![dual("1", 1.0), text("x")]]);
    }

    #[test]
    fn expressions() {
        let script = r#"t: LOAD
            If([a] = '%N', Null(), Text(Replace([a], '%2C', Chr(44)))) AS s,
            If(a = '%N', Null(), "a") AS plain,
            Num#(b, '', ',', '.') AS n,
            Timestamp#(c, 'YYYY-MM-DD hh:mm:ss') AS ts,
            [a] = 'x' AS eq,
            'it''s' AS lit,
            -2.5 AS neg,
            Text(b)
        INLINE [
        a,b,c
        1%2C2,"1.234,5",1899-12-31 06:00:00
        %N,x,bad
        ];"#;
        let mut tables = Vec::new();
        reload(script, &mut tables, false).expect("reload");
        let t = table(&tables, "t");
        assert_eq!(t.fields, vec!["s", "plain", "n", "ts", "eq", "lit", "neg", "Text(b)"]);
        assert_eq!(
            t.rows[0],
            vec![
                text("1,2"),
                text("1%2C2"),
                dual("1.234,5", 1234.5),
                dual("1899-12-31 06:00:00", 1.25),
                dual("0", 0.0),
                text("it's"),
                dual("-2.5", -2.5),
                text("1.234,5"),
            ]
        );
        assert_eq!(t.rows[1][..4], [Cell::Null, Cell::Null, text("x"), text("bad")]);
    }

    #[test]
    fn partial_and_full_reload_semantics() {
        let mut tables = Vec::new();
        let full = "a: LOAD * INLINE [\nx\n1\n];\nb: LOAD * INLINE [\ny\n1\n];";
        reload(full, &mut tables, false).expect("full");
        assert_eq!(tables.len(), 2);

        let partial = "a: LOAD * INLINE [\nx\n9\n];\n[b]: Replace LOAD * INLINE [\ny\n2\n3\n];\n\
                       c: Add LOAD * INLINE [\nz\n1\n];\nc: Add Only LOAD * INLINE [\nz\n2\n];";
        reload(partial, &mut tables, true).expect("partial");
        // `a` untouched (unprefixed load skipped), `b` replaced, `c` created then added to.
        assert_eq!(table(&tables, "a").rows, vec![vec![dual("1", 1.0)]]);
        assert_eq!(table(&tables, "b").rows, vec![vec![dual("2", 2.0)], vec![dual("3", 3.0)]]);
        assert_eq!(table(&tables, "c").rows, vec![vec![dual("1", 1.0)], vec![dual("2", 2.0)]]);

        // A full reload drops everything first; `Only` statements do not run.
        reload(partial, &mut tables, false).expect("full again");
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c"]);
        assert_eq!(table(&tables, "c").rows.len(), 1);
    }

    #[test]
    fn drop_and_auto_concatenation() {
        let mut tables = Vec::new();
        let script = "a: LOAD * INLINE [\nx\n1\n];\nb: LOAD * INLINE [\nx\n2\n];\n\
                      c: NoConcatenate LOAD * INLINE [\nx\n3\n];\nDROP TABLE c;";
        reload(script, &mut tables, false).expect("reload");
        assert_eq!(tables.len(), 1);
        assert_eq!(table(&tables, "a").rows.len(), 2);
        let err = reload("DROP TABLES a, nope;", &mut tables, true).expect_err("missing table");
        assert_eq!(err.code, ERR_TABLE_NOT_FOUND);
    }

    #[test]
    fn merge_by_key_when_allowed() {
        let mut tables = Vec::new();
        reload("t: LOAD * INLINE [\nid,v\n1,a\n2,b\n];", &mut tables, false).expect("full");
        let merge = "t: Merge Only On id LOAD * INLINE [\nop,id,v\nUpdate,1,A\nd,2,\nInsert,3,c\n];";
        reload(merge, &mut tables, true).expect("merge");
        assert_eq!(table(&tables, "t").rows, vec![vec![dual("1", 1.0), text("A")], vec![dual("3", 3.0), text("c")]]);
        let mut progress = Vec::new();
        let err = run(merge, &mut tables, true, false, &mut progress).expect_err("no Merge on Qlik Core");
        assert_eq!((err.code, err.line), (ERR_UNKNOWN_STATEMENT, 1));
    }

    #[test]
    fn errors_carry_code_and_line() {
        let cases: &[(&str, i64, u32)] = &[
            ("\n\nt: LOAD nope INLINE [\na\n1\n];", ERR_FIELD_NOT_FOUND, 3),
            ("SET a = 1;\nFOO bar;", ERR_UNKNOWN_STATEMENT, 2),
            ("t: LOAD Upper(a) INLINE [\na\n];", ERR_UNKNOWN_STATEMENT, 1),
            ("t: LOAD a + 1 INLINE [\na\n];", ERR_UNKNOWN_STATEMENT, 1),
            ("t: LOAD a INLINE [\na\n] (bogus);", ERR_SYNTAX, 1),
            ("t: LOAD a FROM x.csv;", ERR_UNKNOWN_STATEMENT, 1),
            ("\nt: LOAD a INLINE [\na\n", ERR_SYNTAX, 2),
            ("t: LOAD 'abc INLINE", ERR_SYNTAX, 1),
            ("t: LOAD a, a INLINE [\na\n];", ERR_NAME_TAKEN, 1),
            ("t: LOAD If(a) INLINE [\na\n];", ERR_SYNTAX, 1),
        ];
        for (script, code, line) in cases {
            let mut tables = Vec::new();
            let err = reload(script, &mut tables, false).expect_err(script);
            assert_eq!((err.code, err.line), (*code, *line), "{script}: {err:?}");
        }
    }

    #[test]
    fn quoted_names_label_collisions_and_a_last_statement_without_semicolon() {
        let script = "[a // b]: LOAD \"x y\" AS `z`, [x y] AS [w;] INLINE [\nx y\n1\n];\n\
                      [a // b]: LOAD * INLINE [\nother\n2\n]";
        let mut tables = Vec::new();
        reload(script, &mut tables, false).expect("reload");
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["a // b", "a // b-1"]);
        assert_eq!(tables[0].fields, vec!["z", "w;"]);
        assert_eq!(tables[1].rows, vec![vec![dual("2", 2.0)]]);
    }

    #[test]
    fn raw_bracket_in_inline_data_ends_it() {
        // The first `]` ends the data; what follows is a syntax error.
        let script = "t: LOAD * INLINE [\na,b\nx]y,1\n];";
        let err = reload(script, &mut Vec::new(), false).expect_err("truncated inline");
        assert_eq!(err.code, ERR_SYNTAX);
        // Double-quoted inline data ends at the first double quote.
        let script = "t: LOAD * INLINE \"\na\nx\n\" (txt);";
        let mut tables = Vec::new();
        reload(script, &mut tables, false).expect("quoted inline");
        assert_eq!(table(&tables, "t").rows, vec![vec![text("x")]]);
    }
}
