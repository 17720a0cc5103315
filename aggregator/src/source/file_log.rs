//! `file:<dir>` — the embedded log: the JSON-lines files of a directory.
//!
//! Files are read in lexicographic order of name; names starting with `.` are
//! ignored (writers create a dot-file and rename it, so files appear whole). New files
//! are picked up as they appear. The offset is (file, lines read); a micro-batch never
//! spans two files, so batch boundaries depend only on the log, not on timing.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::source::{RawBatch, Source, SourceOffset};

/// The `line` of an offset whose file has been read to its end.
pub const FILE_DONE: u64 = u64::MAX;

pub struct FileLog {
    dir: PathBuf,
    /// The file being read: name, reader, lines read so far.
    current: Option<(String, BufReader<File>, u64)>,
    /// The last position handed out.
    position: SourceOffset,
    /// The last file present when the log was opened (for `--available-now`).
    snapshot_last: Option<String>,
    /// Files after the current one at the last listing.
    waiting_files: u64,
}

impl FileLog {
    pub fn open(dir: &str, offset: &SourceOffset) -> Result<Self> {
        let dir = PathBuf::from(dir);
        if let SourceOffset::Kafka { .. } = offset {
            return Err(Error::user(format!(
                "source file:{}: the checkpoint holds a Kafka offset; remove the pipeline's checkpoint to start over on this log",
                dir.display()
            )));
        }
        if !dir.is_dir() {
            return Err(Error::external(format!("source file:{}: not a directory", dir.display())));
        }
        let mut log = FileLog { dir, current: None, position: offset.clone(), snapshot_last: None, waiting_files: 0 };
        log.snapshot_last = log.list()?.pop();
        Ok(log)
    }

    /// The log's files, sorted by name.
    fn list(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::external(format!("source file:{}: {e}", self.dir.display())))?;
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Opens the file to read next, if there is one.
    fn open_next(&mut self) -> Result<bool> {
        let names = self.list()?;
        let (name, skip) = match &self.position {
            SourceOffset::File { file, line } if *line != FILE_DONE && names.binary_search(file).is_ok() => {
                (file.clone(), *line)
            }
            SourceOffset::File { file, .. } => match names.iter().find(|n| *n > file) {
                Some(next) => (next.clone(), 0),
                None => return Ok(false),
            },
            SourceOffset::Start | SourceOffset::Kafka { .. } => match names.first() {
                Some(first) => (first.clone(), 0),
                None => return Ok(false),
            },
        };
        self.waiting_files = names.iter().filter(|n| **n > name).count() as u64;
        let path = self.dir.join(&name);
        let file = File::open(&path).map_err(|e| Error::external(format!("source file:{}: {e}", path.display())))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line = Vec::new();
        for _ in 0..skip {
            line.clear();
            reader.read_until(b'\n', &mut line).map_err(|e| Error::external(format!("{}: {e}", path.display())))?;
        }
        self.current = Some((name, reader, skip));
        Ok(true)
    }
}

impl FileLog {
    /// Reads the next batch: at most `max_records` records of one file, and never past
    /// `stop_at`'s line of its file.
    fn read(&mut self, max_records: usize, stop_at: Option<(&str, u64)>) -> Result<Option<RawBatch>> {
        loop {
            if self.current.is_none() && !self.open_next()? {
                return Ok(None);
            }
            let (name, reader, lines_read) = self.current.as_mut().expect("a file is open");
            // Room for the rest of the file, or for `max_records` lines of up to 256 bytes.
            let rest = match (reader.get_ref().metadata(), reader.stream_position()) {
                (Ok(meta), Ok(at)) => meta.len().saturating_sub(at) as usize,
                _ => 0,
            };
            let bytes = rest.min(max_records.saturating_mul(256));
            let mut batch = RawBatch::with_capacity(bytes, max_records.min(bytes / 16));
            let stop = stop_at.filter(|(file, _)| file == name).map_or(u64::MAX, |(_, line)| line);
            let (lines, at_end) = batch
                .read_lines(reader, name, *lines_read + 1, max_records, stop.saturating_sub(*lines_read))
                .map_err(|e| Error::external(format!("source file:{}/{name}: {e}", self.dir.display())))?;
            *lines_read += lines;
            let name = name.clone();
            self.position = SourceOffset::File { file: name.clone(), line: *lines_read };
            batch.end = self.position.clone();
            if at_end {
                // Done with this file; the next call lists the directory for the next one.
                // Keep the position on this file: `open_next` moves past it by name.
                self.current = None;
                self.position = SourceOffset::File { file: name.clone(), line: FILE_DONE };
                if batch.is_empty() {
                    continue;
                }
                batch.end = self.position.clone();
            }
            return Ok(Some(batch));
        }
    }
}

impl Source for FileLog {
    fn next_batch(&mut self, max_records: usize) -> Result<Option<RawBatch>> {
        self.read(max_records, None)
    }

    fn read_until(&mut self, end: &SourceOffset) -> Result<Option<RawBatch>> {
        let SourceOffset::File { file, line } = end else {
            return Err(Error::internal(format!(
                "source file:{}: {end:?} is not a file-log offset",
                self.dir.display()
            )));
        };
        // A batch never spans two files: `end` is in the file read next.
        let Some(batch) = self.read(usize::MAX, Some((file, *line)))? else {
            return Err(Error::user(format!(
                "source file:{}: {file}, read before a crash, is gone; remove the pipeline's checkpoint to start over",
                self.dir.display()
            )));
        };
        if &batch.end != end {
            return Err(Error::internal(format!(
                "source file:{}: re-reading a logged batch ended at {:?}, not at {file}:{line} (the log changed?)",
                self.dir.display(),
                batch.end
            )));
        }
        Ok(Some(batch))
    }

    fn end_at_open(&self) -> SourceOffset {
        match &self.snapshot_last {
            Some(last) => SourceOffset::File { file: last.clone(), line: FILE_DONE },
            None => SourceOffset::Start,
        }
    }

    fn reached(&self, until: &SourceOffset) -> bool {
        match (&self.position, until) {
            (_, SourceOffset::Start) => true,
            (SourceOffset::File { file, line }, SourceOffset::File { file: end, line: end_line }) => {
                file > end || (file == end && line >= end_line)
            }
            _ => false,
        }
    }

    /// Files may be deleted once read (retention), so their absence says nothing.
    fn holds(&self, _offset: &SourceOffset) -> Result<bool> {
        Ok(true)
    }

    fn progress(&self, until: &SourceOffset) -> f64 {
        // By files: lines of files not yet opened are unknown.
        let (SourceOffset::File { file, .. }, SourceOffset::File { file: end, .. }) = (&self.position, until) else {
            return if self.reached(until) { 1.0 } else { 0.0 };
        };
        let names = self.list().unwrap_or_default();
        let done = names.iter().filter(|n| *n <= file).count() as f64;
        let total = names.iter().filter(|n| *n <= end).count().max(1) as f64;
        (done / total).min(1.0)
    }

    fn lag(&self) -> Vec<(i32, u64)> {
        vec![(0, self.waiting_files)]
    }

    /// One partition, never idle: with a single partition its watermark is the watermark.
    fn partitions(&self) -> Vec<(i32, bool)> {
        vec![(0, false)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn drain(log: &mut FileLog, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(batch) = log.next_batch(max).unwrap() {
            for i in 0..batch.len() {
                out.push(format!("{}={}", batch.location(i), String::from_utf8_lossy(batch.record(i))));
            }
        }
        out
    }

    #[test]
    fn reads_files_in_name_order_skipping_dot_files_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b.jsonl", "3\n");
        write(dir.path(), "a.jsonl", "1\n\n2\r\n");
        write(dir.path(), ".c.jsonl.tmp", "x\n");
        let mut log = FileLog::open(dir.path().to_str().unwrap(), &SourceOffset::Start).unwrap();
        let end = log.end_at_open();
        assert!(!log.reached(&end));
        assert_eq!(drain(&mut log, 10), ["a.jsonl:1=1", "a.jsonl:3=2", "b.jsonl:1=3"]);
        assert!(log.reached(&end));
        assert_eq!(log.progress(&end), 1.0);
    }

    #[test]
    fn picks_up_new_files_and_resumes_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.jsonl", "1\n2\n3\n");
        let mut log = FileLog::open(dir.path().to_str().unwrap(), &SourceOffset::Start).unwrap();
        let first = log.next_batch(2).unwrap().unwrap();
        assert_eq!(first.len(), 2);
        // Resume a second reader where the first batch ended.
        let mut resumed = FileLog::open(dir.path().to_str().unwrap(), &first.end).unwrap();
        assert_eq!(drain(&mut resumed, 10), ["a.jsonl:3=3"]);
        write(dir.path(), "b.jsonl", "4\n");
        assert_eq!(drain(&mut resumed, 10), ["b.jsonl:1=4"]);
        assert_eq!(drain(&mut log, 10), ["a.jsonl:3=3", "b.jsonl:1=4"]);
    }

    #[test]
    fn a_batch_read_again_up_to_its_end_has_the_same_records() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.jsonl", "1\n2\n3\n4\n");
        write(dir.path(), "b.jsonl", "5\n\n6\n");
        let path = dir.path().to_str().unwrap();
        let mut log = FileLog::open(path, &SourceOffset::Start).unwrap();
        let mut batches = Vec::new();
        while let Some(batch) = log.next_batch(2).unwrap() {
            batches.push(batch);
        }
        assert_eq!(batches.len(), 3, "a batch never spans two files");
        let mut again = FileLog::open(path, &SourceOffset::Start).unwrap();
        for batch in &batches {
            let read = again.read_until(&batch.end).unwrap().unwrap();
            assert_eq!(read.records(), batch.records());
            assert_eq!(read.end, batch.end);
        }
        let mut other = FileLog::open(path, &SourceOffset::Start).unwrap();
        let wrong = SourceOffset::File { file: "b.jsonl".into(), line: 1 };
        assert!(other.read_until(&wrong).is_err(), "a batch that does not start where the log is");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let err = FileLog::open("/no/such/dir", &SourceOffset::Start).err().unwrap();
        assert!(err.to_string().contains("/no/such/dir"), "{err}");
    }
}
