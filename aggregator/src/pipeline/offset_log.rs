//! The offset log: every micro-batch's input, written down before the batch runs
//! (Spark Structured Streaming's offset log).
//!
//! Results reach the sink after every micro-batch, but the state is checkpointed only
//! every `--checkpoint-interval-seconds`. After a crash the pipeline resumes from its
//! last checkpoint and runs again the batches that came after it. For the sink to end
//! exactly as after an uninterrupted run, those batches must be *the same batches*:
//! the same records, the same idle partitions, the same clock. Then every result change
//! written again is one that was written before, in the same order, and the sink's last
//! word on every row is the same — also for results whose rows are replaced rather than
//! updated (`ORDER BY … LIMIT`, second stages, content `_id`s), where a row written
//! after the checkpoint and gone from the result since would otherwise stay for good.
//! Kafka's micro-batches depend on poll timing and idleness on the wall clock, so
//! only a log can re-create them.
//!
//! `<checkpoint-dir>/<pipeline>.offsets` holds one JSON line per batch, appended and
//! synced to disk before the batch runs. A checkpoint records the number of the last
//! batch it contains; the entries up to it are then obsolete and leave the file.
//! A crash while an entry is appended leaves a torn last line: that batch never ran,
//! so the line is dropped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::source::SourceOffset;

/// One micro-batch as it first ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedBatch {
    /// Batches are numbered from 1 within a version of the pipeline.
    pub batch: u64,
    /// The version of the pipeline that ran it.
    pub sql_hash: String,
    /// The source's position before the batch…
    pub start: SourceOffset,
    /// …and after it: the batch is every record in between.
    pub end: SourceOffset,
    /// The wall clock when the batch first ran (microseconds since the epoch): what
    /// event times are judged against (see `max_future`).
    pub clock_micros: i64,
    /// The source's partitions, and whether each was idle (not holding the watermark back).
    pub partitions: Vec<(i32, bool)>,
}

pub fn path_for(dir: &Path, pipeline: &str) -> PathBuf {
    dir.join(format!("{pipeline}.offsets"))
}

/// The offset log of one pipeline.
pub struct OffsetLog {
    path: PathBuf,
    /// Open for appending once the first entry is written.
    file: Option<File>,
    /// What the file holds.
    entries: Vec<LoggedBatch>,
}

impl OffsetLog {
    /// Opens the log and returns, in order, the batches of version `sql_hash` logged
    /// after batch `after` (the last one the checkpoint holds): the batches to run
    /// again, exactly. Everything else in the file is dropped.
    pub fn open(path: PathBuf, sql_hash: &str, after: u64) -> Result<(OffsetLog, Vec<LoggedBatch>)> {
        let fail = |e: std::io::Error| Error::external(format!("offset log {}: {e}", path.display()));
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(fail(e)),
        };
        let mut pending = Vec::new();
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
        for (i, line) in lines.iter().enumerate() {
            let entry: LoggedBatch = match serde_json::from_slice(line) {
                Ok(entry) => entry,
                // Only the last line can be torn (appends only); its batch never ran.
                Err(_) if i + 1 == lines.len() => break,
                Err(e) => return Err(Error::internal(format!("offset log {}: line {}: {e}", path.display(), i + 1))),
            };
            if entry.sql_hash == sql_hash && entry.batch > after {
                if let Some(last) = pending.last().map(|b: &LoggedBatch| b.batch)
                    && entry.batch != last + 1
                {
                    return Err(Error::internal(format!(
                        "offset log {}: batch {} follows batch {last}",
                        path.display(),
                        entry.batch
                    )));
                }
                pending.push(entry);
            }
        }
        let mut log = OffsetLog { path, file: None, entries: Vec::new() };
        // Rewrite the file with exactly the batches still to run (no torn line to
        // append after, nothing obsolete).
        log.rewrite(&pending)?;
        Ok((log, pending))
    }

    /// Writes `entry` down (synced) before its batch runs.
    pub fn append(&mut self, entry: &LoggedBatch) -> Result<()> {
        let fail = |e: std::io::Error| Error::external(format!("offset log {}: {e}", self.path.display()));
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path).map_err(fail)?);
        }
        let file = self.file.as_mut().expect("opened above");
        let mut line = serde_json::to_vec(entry).map_err(|e| Error::internal(e.to_string()))?;
        line.push(b'\n');
        file.write_all(&line).map_err(fail)?;
        file.sync_data().map_err(fail)?;
        self.entries.push(entry.clone());
        Ok(())
    }

    /// Once a checkpoint holding batches up to `batch` is on disk: drops their entries,
    /// keeping those of later batches (run since, or still to run again).
    pub fn drop_through(&mut self, batch: u64) -> Result<()> {
        let keep: Vec<LoggedBatch> = self.entries.iter().filter(|e| e.batch > batch).cloned().collect();
        self.rewrite(&keep)
    }

    /// Replaces the file's content by `entries` (written to a dot-file, synced, renamed).
    fn rewrite(&mut self, entries: &[LoggedBatch]) -> Result<()> {
        let fail = |e: std::io::Error| Error::external(format!("offset log {}: {e}", self.path.display()));
        self.file = None;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = self.path.with_file_name(format!(".{name}.tmp"));
        let mut file = File::create(&tmp).map_err(fail)?;
        for entry in entries {
            let mut line = serde_json::to_vec(entry).map_err(|e| Error::internal(e.to_string()))?;
            line.push(b'\n');
            file.write_all(&line).map_err(fail)?;
        }
        file.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)?;
        self.entries = entries.to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(batch: u64, hash: &str) -> LoggedBatch {
        LoggedBatch {
            batch,
            sql_hash: hash.into(),
            start: SourceOffset::File { file: "a".into(), line: batch - 1 },
            end: SourceOffset::File { file: "a".into(), line: batch },
            clock_micros: 1_000 * batch as i64,
            partitions: vec![(0, false), (1, true)],
        }
    }

    #[test]
    fn the_batches_after_the_checkpoint_come_back_in_order_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "p");
        let (mut log, pending) = OffsetLog::open(path.clone(), "h", 0).unwrap();
        assert!(pending.is_empty());
        for batch in 1..=4 {
            log.append(&entry(batch, "h")).unwrap();
        }
        drop(log);
        let (_, pending) = OffsetLog::open(path.clone(), "h", 2).unwrap();
        assert_eq!(pending, [entry(3, "h"), entry(4, "h")]);
        // Another version's batches are not this version's.
        let (_, pending) = OffsetLog::open(path.clone(), "other", 0).unwrap();
        assert!(pending.is_empty());
        let (_, pending) = OffsetLog::open(path, "h", 0).unwrap();
        assert!(pending.is_empty(), "the previous open dropped what the other version did not need");
    }

    #[test]
    fn a_torn_last_line_is_a_batch_that_never_ran() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "p");
        let (mut log, _) = OffsetLog::open(path.clone(), "h", 0).unwrap();
        log.append(&entry(1, "h")).unwrap();
        drop(log);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"batch":2,"sql_hash":"h","sta"#).unwrap();
        drop(file);
        let (mut log, pending) = OffsetLog::open(path.clone(), "h", 0).unwrap();
        assert_eq!(pending, [entry(1, "h")]);
        // Appending after it gives whole lines again.
        log.append(&entry(2, "h")).unwrap();
        drop(log);
        let (_, pending) = OffsetLog::open(path, "h", 0).unwrap();
        assert_eq!(pending, [entry(1, "h"), entry(2, "h")]);
    }

    #[test]
    fn after_a_checkpoint_only_the_batches_it_does_not_hold_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "p");
        let (mut log, _) = OffsetLog::open(path.clone(), "h", 0).unwrap();
        for batch in 1..=3 {
            log.append(&entry(batch, "h")).unwrap();
        }
        // A checkpoint after batch 1 is on disk; batches 2 and 3 ran since.
        log.drop_through(1).unwrap();
        log.append(&entry(4, "h")).unwrap();
        drop(log);
        let (mut log, pending) = OffsetLog::open(path.clone(), "h", 1).unwrap();
        assert_eq!(pending, [entry(2, "h"), entry(3, "h"), entry(4, "h")]);
        log.drop_through(4).unwrap();
        drop(log);
        let (_, pending) = OffsetLog::open(path, "h", 4).unwrap();
        assert!(pending.is_empty());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["p.offsets"], "no temporary file left");
    }
}
