//! Panels as code: each `*.toml` file of the panels folder (`--panels`) is one panel of
//! the dashboard (a pipeline, a chart kind, columns, filters, thresholds, a range), as
//! Grafana's file provisioning. The folder is watched: a new, edited or deleted file
//! changes the pages without a restart; a file that does not parse is shown with its
//! `file:line: reason` while the others still show. A panel's data comes from the
//! pipeline's chart and rows API, its columns, filters and range as query parameters
//! ([`Panel::query`]).
//!
//! ```toml
//! title = "Clicks per window"
//! pipeline = "user_interactions_5m"
//! kind = "line"                      # line, bar, value or table
//! columns = ["interaction_count"]    # default: the automatic choice
//! filters = { interaction_type = "click", interaction_count = ">10" }
//! thresholds = [100, { value = 500, color = "#c4443b" }]
//! range = "1h"                       # 5m, 15m, 1h, 6h, 24h or all
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::watch::{FileError, line_of};

/// How a panel draws its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Lines over window start (or bars, for a result without windows).
    Line,
    /// Bars.
    Bar,
    /// One number: the latest window's value summed, or the total of a keyed result.
    Value,
    /// The rows, as the pipeline page's table.
    Table,
}

/// A line drawn across a panel's chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    pub value: f64,
    pub color: Option<String>,
}

/// One panel, from one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Panel {
    /// The file's name (panels show in the order of their names).
    pub file: String,
    pub title: String,
    pub pipeline: String,
    pub kind: Kind,
    /// The value columns shown; empty: the automatic choice.
    pub columns: Vec<String>,
    /// Column filters, as the table's `where.<column>=` boxes take them.
    pub filters: BTreeMap<String, String>,
    pub thresholds: Vec<Threshold>,
    /// A range relative to the latest window (`1h`…); none: the pipeline page's default.
    pub range: Option<String>,
    /// The query string of the chart and rows API that gives this panel's data.
    pub query: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PanelText {
    title: Option<String>,
    pipeline: String,
    kind: Option<Kind>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    filters: BTreeMap<String, toml::Value>,
    #[serde(default)]
    thresholds: Vec<ThresholdText>,
    range: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a threshold: a number or { value = <number>, color = \"#rrggbb\" }")]
enum ThresholdText {
    Number(f64),
    Full { value: f64, color: Option<String> },
}

/// The line where `key` is set (1 if it is not found).
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')))
        .map_or(1, |i| i + 1)
}

/// Parses one panel file's `text` (`file` names it in errors and in the panel).
pub fn parse(text: &str, file: &str) -> Result<Panel, FileError> {
    let error = |line: usize, message: String| FileError { file: file.to_string(), line, message };
    let parsed: PanelText = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        error(line, e.message().trim().to_string())
    })?;
    if parsed.pipeline.trim().is_empty() {
        return Err(error(line_of_key(text, "pipeline"), "`pipeline` is empty".into()));
    }
    if let Some(range) = &parsed.range
        && !crate::web::view::RANGES.iter().any(|(name, _)| name == range)
    {
        let names: Vec<&str> = crate::web::view::RANGES.iter().map(|(n, _)| *n).collect();
        return Err(error(line_of_key(text, "range"), format!("range `{range}`: one of {}", names.join(", "))));
    }
    let mut filters = BTreeMap::new();
    for (column, value) in parsed.filters {
        let text_value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                let message = format!("filter `{column}`: a text or a number, not {}", other.type_str());
                return Err(error(line_of_key(text, "filters"), message));
            }
        };
        filters.insert(column, text_value);
    }
    let thresholds = parsed
        .thresholds
        .into_iter()
        .map(|t| match t {
            ThresholdText::Number(value) => Threshold { value, color: None },
            ThresholdText::Full { value, color } => Threshold { value, color },
        })
        .collect();
    let title = parsed
        .title
        .unwrap_or_else(|| Path::new(file).file_stem().map_or(file.to_string(), |s| s.to_string_lossy().into_owned()));
    let mut query: Vec<(String, String)> = Vec::new();
    if !parsed.columns.is_empty() {
        query.push(("columns".into(), parsed.columns.join(",")));
    }
    if let Some(range) = &parsed.range {
        query.push(("range".into(), range.clone()));
    }
    for (column, value) in &filters {
        query.push((format!("where.{column}"), value.clone()));
    }
    let query = serde_urlencoded::to_string(&query).unwrap_or_default();
    Ok(Panel {
        file: file.to_string(),
        title,
        pipeline: parsed.pipeline,
        kind: parsed.kind.unwrap_or(Kind::Line),
        columns: parsed.columns,
        filters,
        thresholds,
        range: parsed.range,
        query,
    })
}

/// The panels of a folder and the files that could not be read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Loaded {
    pub panels: Vec<Panel>,
    pub errors: Vec<FileError>,
}

/// Reads every `*.toml` file of `dir`, in the order of their names (none if `dir` is missing).
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    let Ok(entries) = std::fs::read_dir(dir) else { return loaded };
    let mut files: Vec<PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| is_panel_file(p) && p.is_file()).collect();
    files.sort();
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse(&text, &name) {
                Ok(panel) => loaded.panels.push(panel),
                Err(e) => loaded.errors.push(e),
            },
            Err(e) => loaded.errors.push(FileError { file: name, line: 0, message: format!("cannot read: {e}") }),
        }
    }
    loaded
}

fn is_panel_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "toml")
        && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The panels the pages show now (replaced on each change of the folder).
#[derive(Debug, Default)]
pub struct PanelsView {
    loaded: RwLock<Loaded>,
}

impl PanelsView {
    pub fn new(loaded: Loaded) -> PanelsView {
        PanelsView { loaded: RwLock::new(loaded) }
    }

    pub fn get(&self) -> Loaded {
        self.loaded.read().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn set(&self, loaded: Loaded) {
        if let Ok(mut current) = self.loaded.write() {
            *current = loaded;
        }
    }
}

/// Watches `dir`: after each change of a `*.toml` file in it, every file is read again
/// into `view`. Returns the watcher, which must be kept.
pub fn watch(dir: &Path, view: Arc<PanelsView>) -> notify::Result<notify::RecommendedWatcher> {
    let folder = dir.to_path_buf();
    let reload = move || {
        let loaded = load_dir(&folder);
        for e in &loaded.errors {
            tracing::warn!(error = %e, "a panel file was not taken");
        }
        tracing::info!(panels = loaded.panels.len(), errors = loaded.errors.len(), "panels reloaded");
        view.set(loaded);
    };
    crate::watch::watch_dir(dir, "panels-reload", is_panel_file, reload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_gives_its_panel_and_query() {
        let text = r##"
title = "Clicks"
pipeline = "per_window"
kind = "bar"
columns = ["interaction_count"]
filters = { interaction_type = "click", interaction_count = ">10" }
thresholds = [100, { value = 5.5, color = "#c4443b" }]
range = "1h"
"##;
        let panel = parse(text, "10-clicks.toml").unwrap();
        assert_eq!(panel.title, "Clicks");
        assert_eq!(panel.pipeline, "per_window");
        assert_eq!(panel.kind, Kind::Bar);
        assert_eq!(panel.columns, ["interaction_count"]);
        assert_eq!(panel.filters["interaction_type"], "click");
        assert_eq!(
            panel.thresholds,
            [Threshold { value: 100.0, color: None }, Threshold { value: 5.5, color: Some("#c4443b".into()) }]
        );
        assert_eq!(panel.range.as_deref(), Some("1h"));
        assert_eq!(
            panel.query,
            "columns=interaction_count&range=1h&where.interaction_count=%3E10&where.interaction_type=click"
        );
    }

    #[test]
    fn defaults_are_a_line_of_the_automatic_columns_named_by_the_file() {
        let panel = parse("pipeline = \"p\"\n", "totals.toml").unwrap();
        assert_eq!((panel.title.as_str(), panel.kind, panel.query.as_str()), ("totals", Kind::Line, ""));
        assert!(panel.columns.is_empty() && panel.filters.is_empty() && panel.thresholds.is_empty());
    }

    #[test]
    fn a_bad_file_names_the_line_and_the_reason() {
        let cases = [
            ("title = \"t\"\n", 1, "missing field `pipeline`"),
            ("pipeline = \"p\"\nkind = \"pie\"\n", 2, "unknown variant `pie`"),
            ("pipeline = \"p\"\n\ncolour = 1\n", 3, "unknown field `colour`"),
            ("pipeline = \"p\"\nrange = \"2w\"\n", 2, "range `2w`: one of 5m"),
            ("pipeline = \"p\"\nfilters = { a = [1] }\n", 2, "filter `a`: a text or a number"),
            ("pipeline = \"p\"\nthresholds = [\"x\"]\n", 2, "a threshold: a number or"),
            ("pipeline = \"\"\n", 1, "`pipeline` is empty"),
            ("pipeline = \"p\n", 1, ""),
        ];
        for (text, line, reason) in cases {
            let e = parse(text, "f.toml").unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(reason), "{text}: {e}");
            assert!(e.to_string().starts_with(&format!("f.toml:{line}: ")), "{e}");
        }
    }

    #[test]
    fn a_folder_loads_in_name_order_and_keeps_the_good_files_beside_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.toml"), "pipeline = \"b\"\n").unwrap();
        std::fs::write(dir.path().join("a.toml"), "pipeline = \"a\"\n").unwrap();
        std::fs::write(dir.path().join("c.toml"), "pipeline = 1\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a panel").unwrap();
        let loaded = load_dir(dir.path());
        let pipelines: Vec<&str> = loaded.panels.iter().map(|p| p.pipeline.as_str()).collect();
        assert_eq!(pipelines, ["a", "b"]);
        assert_eq!(loaded.errors.len(), 1);
        assert!(loaded.errors[0].to_string().starts_with("c.toml:1: "), "{}", loaded.errors[0]);
        assert_eq!(load_dir(&dir.path().join("missing")), Loaded::default());
    }
}
