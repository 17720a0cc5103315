//! Sources: where a pipeline's events come from, and how to resume there.
//!
//! * [`schema`] — the declared columns of the events (`--source-schema`);
//! * [`decode`] — JSON records → Arrow rows of that schema, and bad records;
//! * [`file_log`] — `file:<dir>`, the embedded log of batch files (one partition);
//! * [`kafka`] — `kafka://host:port/topic`, every partition of a topic.
//!
//! A [`Source`] hands out [`RawBatch`]es of records and reports its [`SourceOffset`];
//! the pipeline stores that offset in its checkpoint together with its state, and
//! reopens the source there after a restart. Records keep their partition, because
//! event time is only ordered within a partition (see [`crate::pipeline::watermark`]).

pub mod decode;
pub mod file_log;
pub mod kafka;
pub mod schema;

use std::collections::BTreeMap;

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
    /// Kafka: per partition, the offset of the next record to read.
    Kafka { next: BTreeMap<i32, i64> },
}

/// A micro-batch of raw records, as read.
#[derive(Debug, Default)]
pub struct RawBatch {
    data: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// Where each record came from (index into `names`, line or offset), shown in
    /// bad and late records.
    locations: Vec<(u32, u64)>,
    /// Files, or Kafka `topic/partition`s, with the partition they belong to.
    names: Vec<(String, i32)>,
    /// `:` before a line number (files), `@` before an offset (Kafka).
    separator: char,
    /// The source's position after this batch.
    pub end: SourceOffset,
}

impl RawBatch {
    /// No records, the source staying at `at`.
    pub fn empty(at: SourceOffset) -> Self {
        RawBatch { end: at, ..RawBatch::default() }
    }

    /// An empty batch with room for `bytes` of records and `records` records (reading
    /// into a buffer that grows by doubling copies it again and again).
    pub fn with_capacity(bytes: usize, records: usize) -> Self {
        RawBatch {
            data: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(records),
            locations: Vec::with_capacity(records),
            ..RawBatch::default()
        }
    }

    /// Reads one line from `reader` straight into the batch; blank lines are read
    /// but not kept. Returns the bytes read (0 at the end of the input).
    pub fn read_line(&mut self, reader: &mut impl std::io::BufRead, name: &str, line: u64) -> std::io::Result<usize> {
        let start = self.data.len();
        let n = read_until_newline(reader, &mut self.data)?;
        let mut end = self.data.len();
        while end > start && matches!(self.data[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        if n == 0 || self.data[start..end].iter().all(|b| b.is_ascii_whitespace()) {
            self.data.truncate(start);
            return Ok(n);
        }
        self.data.truncate(end);
        self.note_location(start, end, name, 0, line, ':');
        Ok(n)
    }

    /// Reads lines from `reader` straight into the batch until it holds `max_records`
    /// records, `max_lines` lines are read or the input ends; blank lines are read but
    /// not kept. Lines are numbered from `first_line`. Returns the lines read and
    /// whether the input ended.
    ///
    /// The whole lines in the reader's buffer are taken at once (one copy, one name
    /// lookup); only a line that runs past the buffer is read on its own.
    pub fn read_lines(
        &mut self,
        reader: &mut impl std::io::BufRead,
        name: &str,
        first_line: u64,
        max_records: usize,
        max_lines: u64,
    ) -> std::io::Result<(u64, bool)> {
        let mut read = 0;
        while self.len() < max_records && read < max_lines {
            let buf = match reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok((read, true));
            }
            let base = self.data.len();
            let index = self.name_index(name, 0);
            let mut used = 0;
            for end in memchr::memchr_iter(b'\n', buf) {
                if self.len() >= max_records || read >= max_lines {
                    break;
                }
                let line = &buf[used..end];
                // Without its line end, as `read_line` keeps it; blank lines are not kept.
                let kept = line.len() - line.iter().rev().take_while(|&&b| b == b'\r').count();
                if !line.iter().all(|b| b.is_ascii_whitespace()) {
                    self.spans.push((base + used, base + used + kept));
                    self.locations.push((index as u32, first_line + read));
                }
                used = end + 1;
                read += 1;
            }
            if used == 0 {
                // A line longer than the buffer, or the last one without a line end.
                if self.read_line(reader, name, first_line + read)? == 0 {
                    return Ok((read, true));
                }
                read += 1;
                continue;
            }
            self.separator = ':';
            self.data.extend_from_slice(&buf[..used]);
            reader.consume(used);
        }
        Ok((read, false))
    }

    /// Adds one whole record (a Kafka message) from `partition` at `offset`.
    pub fn push_record(&mut self, record: &[u8], name: &str, partition: i32, offset: u64) {
        let start = self.data.len();
        self.data.extend_from_slice(record);
        self.note_location(start, self.data.len(), name, partition, offset, '@');
    }

    fn note_location(&mut self, start: usize, end: usize, name: &str, partition: i32, line: u64, separator: char) {
        let index = self.name_index(name, partition);
        self.separator = separator;
        self.spans.push((start, end));
        self.locations.push((index as u32, line));
    }

    /// The index of `name` and `partition` in `names`, added if new.
    fn name_index(&mut self, name: &str, partition: i32) -> usize {
        let known = self.names.iter().rposition(|(n, p)| n == name && *p == partition);
        known.unwrap_or_else(|| {
            self.names.push((name.to_string(), partition));
            self.names.len() - 1
        })
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
    /// `file:line` (lines count from 1) or `topic/partition@offset` of record `i`.
    pub fn location(&self, i: usize) -> String {
        let (name, line) = self.locations[i];
        format!("{}{}{line}", self.names[name as usize].0, self.separator)
    }
    /// The partition record `i` came from (0 for the file log).
    pub fn partition(&self, i: usize) -> i32 {
        self.names[self.locations[i].0 as usize].1
    }
}

/// `BufRead::read_until(b'\n', out)`, with a vectorised search for the line end:
/// std's byte-at-a-time search was a third of reading the file log.
fn read_until_newline(reader: &mut impl std::io::BufRead, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let (done, used) = match memchr::memchr(b'\n', buf) {
            Some(i) => {
                out.extend_from_slice(&buf[..=i]);
                (true, i + 1)
            }
            None => {
                out.extend_from_slice(buf);
                (buf.is_empty(), buf.len())
            }
        };
        reader.consume(used);
        read += used;
        if done {
            return Ok(read);
        }
    }
}

/// Something that yields micro-batches of records and can resume from an offset.
pub trait Source: Send {
    /// The next micro-batch of at most `max_records` records, or `None` if nothing
    /// is available right now.
    fn next_batch(&mut self, max_records: usize) -> Result<Option<RawBatch>>;
    /// The micro-batch of every record from here to `end` (a batch's end, from the
    /// offset log), in the same order as any other read of that range; `None` while
    /// not all of it has arrived (call again; what was read is kept).
    fn read_until(&mut self, end: &SourceOffset) -> Result<Option<RawBatch>>;
    /// The end of what was available when the source was opened: `--available-now`
    /// stops there, and a replay swaps its results in once it gets there.
    fn end_at_open(&self) -> SourceOffset;
    /// Whether everything before `until` has been handed out.
    fn reached(&self, until: &SourceOffset) -> bool;
    /// Whether the log still reaches `offset` (a checkpoint's, or a logged batch's
    /// end). Not when it was reset or recreated since: a partition gone, or an offset
    /// beyond the partition's end.
    fn holds(&self, offset: &SourceOffset) -> Result<bool>;
    /// How far along the way to `until` the source is, 0.0 ..= 1.0.
    fn progress(&self, until: &SourceOffset) -> f64;
    /// Records (or files) known to be waiting, per partition, if the source can tell cheaply.
    fn lag(&self) -> Vec<(i32, u64)>;
    /// The source's partitions, each with whether it is idle: nothing to read for a
    /// while, so it must not hold the watermark back.
    fn partitions(&self) -> Vec<(i32, bool)>;
}

/// How a source is opened (the same for every pipeline of an aggregator).
#[derive(Clone, Default)]
pub struct SourceOptions {
    /// `key=value` settings passed to librdkafka's consumer (`--consumer-conf`).
    pub consumer_conf: Vec<(String, String)>,
    /// A partition with nothing to read for this long stops holding the watermark back.
    pub idle_timeout: std::time::Duration,
}

/// Opens a source by URI at `offset`.
pub fn open(uri: &str, offset: &SourceOffset, options: &SourceOptions) -> Result<Box<dyn Source>> {
    if let Some(dir) = uri.strip_prefix("file:") {
        let dir = dir.trim_start_matches("//");
        return Ok(Box::new(file_log::FileLog::open(dir, offset)?));
    }
    if uri.starts_with("kafka://") {
        return Ok(Box::new(kafka::KafkaSource::open(uri, offset, options)?));
    }
    Err(Error::user(format!("source URI {uri:?} is not supported (expected file:<dir> or kafka://host:port/topic)")))
}

/// Shows the consumer's secrets (`sasl.password`, …) as `***`.
impl std::fmt::Debug for SourceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceOptions")
            .field("consumer_conf", &kafka_conf::redacted(&self.consumer_conf))
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}
