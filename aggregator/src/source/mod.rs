//! Sources: where a pipeline's events come from, and how to resume there.
//!
//! * [`schema`] — the declared columns of the events (`--source-schema`);
//! * [`decode`] — JSON records → Arrow rows of that schema, and bad records;
//! * [`file_log`] — `file:<dir>`, the embedded log of batch files.
//!
//! A [`Source`] hands out [`RawBatch`]es of records and reports its [`SourceOffset`];
//! the pipeline stores that offset in its checkpoint together with its state, and
//! reopens the source there after a restart.

pub mod decode;
pub mod file_log;
pub mod schema;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A position in a source: everything before it has been processed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceOffset {
    /// Nothing read yet.
    #[default]
    Start,
    /// `line` lines of `file` are read (files before it, in name order, entirely).
    File { file: String, line: u64 },
}

/// A micro-batch of raw records, as read.
#[derive(Debug, Default)]
pub struct RawBatch {
    data: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// Where each record came from, shown in bad and late records.
    locations: Vec<(u32, u64)>,
    names: Vec<String>,
    /// The source's position after this batch.
    pub end: SourceOffset,
}

impl RawBatch {
    /// Reads one line from `reader` straight into the batch; blank lines are read
    /// but not kept. Returns the bytes read (0 at the end of the input).
    pub fn read_line(&mut self, reader: &mut impl std::io::BufRead, name: &str, line: u64) -> std::io::Result<usize> {
        let start = self.data.len();
        let n = reader.read_until(b'\n', &mut self.data)?;
        let mut end = self.data.len();
        while end > start && matches!(self.data[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        if n == 0 || self.data[start..end].iter().all(|b| b.is_ascii_whitespace()) {
            self.data.truncate(start);
            return Ok(n);
        }
        self.data.truncate(end);
        if self.names.last().map(String::as_str) != Some(name) {
            self.names.push(name.to_string());
        }
        self.spans.push((start, end));
        self.locations.push(((self.names.len() - 1) as u32, line));
        Ok(n)
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
    /// The records, without their line ends.
    pub fn records(&self) -> Vec<&[u8]> {
        self.spans.iter().map(|&(s, e)| &self.data[s..e]).collect()
    }
    pub fn record(&self, i: usize) -> &[u8] {
        let (s, e) = self.spans[i];
        &self.data[s..e]
    }
    /// `file:line` of record `i` (lines count from 1).
    pub fn location(&self, i: usize) -> String {
        let (name, line) = self.locations[i];
        format!("{}:{line}", self.names[name as usize])
    }
}

/// Something that yields micro-batches of records and can resume from an offset.
pub trait Source: Send {
    /// The next micro-batch of at most `max_records` records, or `None` if nothing
    /// is available right now.
    fn next_batch(&mut self, max_records: usize) -> Result<Option<RawBatch>>;
    /// Whether everything that was available when the source was opened has been
    /// handed out (used by `--available-now`).
    fn reached_start_snapshot(&self) -> bool;
    /// Records (or files) known to be waiting, if the source can tell cheaply.
    fn lag(&self) -> u64;
}

/// Opens a source by URI at `offset`.
pub fn open(uri: &str, offset: &SourceOffset) -> Result<Box<dyn Source>> {
    if let Some(dir) = uri.strip_prefix("file:") {
        let dir = dir.trim_start_matches("//");
        return Ok(Box::new(file_log::FileLog::open(dir, offset)?));
    }
    Err(Error::user(format!("source URI {uri:?} is not supported (expected file:<dir>)")))
}
