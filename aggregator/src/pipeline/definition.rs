//! A pipeline as written: one `.sql` file is the whole pipeline.
//!
//! ```sql
//! -- output_mode: update            (update | complete | append; default update)
//! -- allowed_delay: 10 minutes      (watermark delay; default 20 minutes)
//! -- max_future: 1 day              (later event times are bad records; default 1 day; `none`)
//! -- target: item_counts            (result table; default the file's stem)
//! -- key: item_id                   (columns that make `_id`; default: see below)
//! -- qlik: ws://qlik:9076/app/sales   (a Qlik app that also gets the result; repeatable)
//! -- qlik_table: item_counts         (the table in the Qlik apps; default the pipeline's name)
//! SELECT item_id, COUNT(*) AS interaction_count FROM SOURCE GROUP BY item_id
//! -- for_each_batch
//! SELECT 'all' AS _id, AVG(interaction_count) AS avg_interactions_per_item FROM AGGREGATED
//! -- end_for
//! ```
//!
//! Settings are comment lines `-- <setting>: <value>` with one of the names
//! above; other comments are comments. The text between `-- for_each_batch` and
//! `-- end_for` is the second stage, which reads the first stage's current result as
//! the table `AGGREGATED`. The pipeline's identity is the SHA-256 of the whole file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OutputMode {
    /// Upsert the groups that changed, delete groups that left the result.
    Update,
    /// Write the whole result after every micro-batch.
    Complete,
    /// Write each window once, when the watermark passes its end.
    Append,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub output_mode: OutputMode,
    pub allowed_delay: Duration,
    /// Events stamped further than this ahead of the wall clock are bad records (they
    /// would move the watermark past every later event); `None`: no limit.
    pub max_future: Option<Duration>,
    pub target: String,
    pub key: Option<Vec<String>>,
    /// Qlik apps this pipeline's result is pushed into, besides the aggregator's `--qlik`.
    pub qlik: Vec<String>,
    /// The table name in the Qlik apps (default: the pipeline's name).
    pub qlik_table: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineDefinition {
    /// The file's stem: the pipeline's name.
    pub name: String,
    pub path: PathBuf,
    /// SHA-256 of the file's text, hex.
    pub sql_hash: String,
    /// The file's text (shown by the dashboard, through the status).
    pub text: String,
    /// The first stage: an aggregation over `SOURCE`.
    pub stage1: String,
    /// The second stage over `AGGREGATED`, if any.
    pub stage2: Option<String>,
    pub settings: Settings,
}

pub const DEFAULT_ALLOWED_DELAY: Duration = Duration::from_secs(20 * 60);

/// Producers' clocks drift, and local times written without an offset read as UTC
/// (up to 14 hours ahead): a day ahead of the clock is still plausible, a year is not.
pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(24 * 3600);

impl PipelineDefinition {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::user(format!("{}: {e}", path.display())))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let fail = |line: usize, msg: String| Error::user(format!("{}:{line}: {msg}", path.display()));
        let name = pipeline_name(path).ok_or_else(|| fail(0, "the file has no name".into()))?;
        let mut settings = Settings {
            output_mode: OutputMode::Update,
            allowed_delay: DEFAULT_ALLOWED_DELAY,
            max_future: Some(DEFAULT_MAX_FUTURE),
            target: name.clone(),
            key: None,
            qlik: Vec::new(),
            qlik_table: None,
        };
        let (mut stage1, mut stage2) = (String::new(), None::<String>);
        #[derive(PartialEq)]
        enum Part {
            First,
            Second,
            After,
        }
        let mut part = Part::First;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let comment = line.trim().strip_prefix("--").map(str::trim);
            match comment.map(str::to_ascii_lowercase).as_deref() {
                Some("for_each_batch") => {
                    if part != Part::First {
                        return Err(fail(n, "a second `-- for_each_batch`".into()));
                    }
                    part = Part::Second;
                    stage2 = Some(String::new());
                    continue;
                }
                Some("end_for") => {
                    if part != Part::Second {
                        return Err(fail(n, "`-- end_for` without `-- for_each_batch`".into()));
                    }
                    part = Part::After;
                    continue;
                }
                _ => {}
            }
            if let Some((key, value)) = comment.and_then(|c| c.split_once(':')) {
                let value = value.trim();
                match key.trim() {
                    "output_mode" => {
                        settings.output_mode = match value.to_ascii_lowercase().as_str() {
                            "update" => OutputMode::Update,
                            "complete" => OutputMode::Complete,
                            "append" => OutputMode::Append,
                            other => {
                                return Err(fail(
                                    n,
                                    format!("output_mode {other:?}: expected update, complete or append"),
                                ));
                            }
                        };
                        continue;
                    }
                    "allowed_delay" | "watermark_delay" => {
                        settings.allowed_delay = parse_duration(value).map_err(|e| fail(n, e))?;
                        continue;
                    }
                    "max_future" => {
                        settings.max_future = match value.to_ascii_lowercase().as_str() {
                            "none" | "off" | "unlimited" => None,
                            _ => Some(parse_duration(value).map_err(|e| fail(n, format!("max_future: {e}")))?),
                        };
                        continue;
                    }
                    "target" => {
                        settings.target = value.to_string();
                        continue;
                    }
                    "qlik" => {
                        settings.qlik.push(value.to_string());
                        continue;
                    }
                    "qlik_table" => {
                        settings.qlik_table = Some(value.to_string());
                        continue;
                    }
                    "key" => {
                        settings.key =
                            Some(value.split(',').map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect());
                        continue;
                    }
                    _ => {}
                }
            }
            let target = match part {
                Part::First => &mut stage1,
                Part::Second => stage2.as_mut().expect("set at for_each_batch"),
                Part::After => {
                    if comment.is_none() && !line.trim().is_empty() {
                        return Err(fail(n, "SQL after `-- end_for`".into()));
                    }
                    continue;
                }
            };
            target.push_str(line);
            target.push('\n');
        }
        if part == Part::Second {
            return Err(fail(text.lines().count(), "`-- for_each_batch` without `-- end_for`".into()));
        }
        let clean =
            |sql: String| crate::pipeline::spark::rewrite_window_references(sql.trim().trim_end_matches(';').trim());
        let stage1 = clean(stage1);
        if stage1.lines().all(|l| l.trim().is_empty() || l.trim().starts_with("--")) {
            return Err(fail(1, "no SQL statement".into()));
        }
        Ok(PipelineDefinition {
            name,
            path: path.to_path_buf(),
            sql_hash: sql_hash(text),
            text: text.to_string(),
            stage1,
            stage2: stage2.map(clean),
            settings,
        })
    }
}

/// A pipeline's name: its file's stem.
pub fn pipeline_name(path: &Path) -> Option<String> {
    path.file_stem().map(|s| s.to_string_lossy().into_owned())
}

/// A pipeline's identity: the SHA-256 of its file's text, in hex.
pub fn sql_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Parses `20 minutes`, `90s`, `1 hour`, `500 ms`, `0`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim().trim_matches('\'').trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like '20 minutes'"))?;
    let seconds = match unit.trim().to_ascii_lowercase().as_str() {
        "" if number == 0.0 => 0.0,
        "ms" | "millisecond" | "milliseconds" => number / 1000.0,
        "s" | "sec" | "secs" | "second" | "seconds" => number,
        "m" | "min" | "mins" | "minute" | "minutes" => number * 60.0,
        "h" | "hour" | "hours" => number * 3600.0,
        "d" | "day" | "days" => number * 86400.0,
        _ => return Err(format!("{text:?} is not a duration like '20 minutes'")),
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration <= MAX_DURATION => Ok(duration),
        _ => Err(format!("{text:?} is longer than 10,000 years")),
    }
}

/// The longest duration a setting or a window may have: 10,000 years. With event times
/// within the years 0000 to 9999 (see `source::decode::EVENT_TIMES`), window and
/// watermark arithmetic then stays far inside 64-bit microseconds.
pub const MAX_DURATION: Duration = Duration::from_secs(10_000 * 31_556_952);

/// A duration as a setting would say it: `1 day`, `90 seconds`, `2 hours`.
pub fn describe_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let unit = [(86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second")]
        .into_iter()
        .find(|(size, _)| seconds >= *size && seconds.is_multiple_of(*size));
    match unit {
        Some((size, name)) if duration.subsec_nanos() == 0 => {
            let n = seconds / size;
            format!("{n} {name}{}", if n == 1 { "" } else { "s" })
        }
        _ => format!("{:?}", duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_stages_and_reads_settings() {
        let text = "-- output_mode: complete\n-- allowed_delay: 5 minutes\n-- key: item_id\n-- a plain comment: not a setting\n\
                    -- qlik: ws://q1:9076/app/a\n-- qlik: wss://q2/app/b\n-- qlik_table: Items\n\
                    SELECT item_id, COUNT(*) AS c FROM SOURCE GROUP BY item_id;\n\
                    -- for_each_batch\nSELECT 'all' AS _id, AVG(c) AS a FROM AGGREGATED\n-- end_for\n";
        let d = PipelineDefinition::parse(Path::new("sql/items.sql"), text).unwrap();
        assert_eq!(d.name, "items");
        assert_eq!(d.settings.output_mode, OutputMode::Complete);
        assert_eq!(d.settings.allowed_delay, Duration::from_secs(300));
        assert_eq!(d.settings.max_future, Some(DEFAULT_MAX_FUTURE));
        assert_eq!(d.settings.key, Some(vec!["item_id".to_string()]));
        assert_eq!(d.settings.target, "items");
        assert_eq!(d.settings.qlik, vec!["ws://q1:9076/app/a".to_string(), "wss://q2/app/b".to_string()]);
        assert_eq!(d.settings.qlik_table.as_deref(), Some("Items"));
        assert!(d.stage1.ends_with("GROUP BY item_id"), "{}", d.stage1);
        assert_eq!(d.stage2.as_deref(), Some("SELECT 'all' AS _id, AVG(c) AS a FROM AGGREGATED"));
        assert_eq!(d.sql_hash.len(), 64);
    }

    #[test]
    fn max_future_is_a_duration_or_none() {
        let parse = |text: &str| PipelineDefinition::parse(Path::new("p.sql"), text).map(|d| d.settings.max_future);
        assert_eq!(parse("-- max_future: 2 hours\nSELECT 1").unwrap(), Some(Duration::from_secs(7200)));
        assert_eq!(parse("-- max_future: none\nSELECT 1").unwrap(), None);
        let err = parse("-- max_future: later\nSELECT 1").unwrap_err();
        assert!(err.to_string().starts_with("p.sql:1: max_future"), "{err}");
    }

    #[test]
    fn the_hash_changes_with_the_text() {
        let a = PipelineDefinition::parse(Path::new("a.sql"), "SELECT 1").unwrap();
        let b = PipelineDefinition::parse(Path::new("a.sql"), "SELECT 2").unwrap();
        assert_ne!(a.sql_hash, b.sql_hash);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let err =
            PipelineDefinition::parse(Path::new("sql/x.sql"), "SELECT 1\n-- output_mode: sometimes\n").unwrap_err();
        assert!(err.to_string().starts_with("sql/x.sql:2: output_mode"), "{err}");
        let err =
            PipelineDefinition::parse(Path::new("sql/y.sql"), "SELECT 1\n-- for_each_batch\nSELECT 2\n").unwrap_err();
        assert!(err.to_string().contains("sql/y.sql:3"), "{err}");
    }

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse_duration("20 minutes").unwrap(), Duration::from_secs(1200));
        assert_eq!(parse_duration("'90s'").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1 hour").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("3652425 days").unwrap(), MAX_DURATION);
        // Past the bound, and past what `Duration` holds (that panicked): an error each.
        for too_long in ["3652426 days", "99999999999999999999999 days"] {
            let error = parse_duration(too_long).unwrap_err();
            assert!(error.contains("longer than 10,000 years"), "{error}");
        }
        assert!(parse_duration("1e400 s").unwrap_err().contains("not a duration"));
    }
}
