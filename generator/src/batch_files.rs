//! The batch-file log as the generator writes it: `batch-00000000.jsonl`, ...
//!
//! Each file is written as a dot-file and renamed into place once complete, so a
//! reader (the aggregator's `file:` source ignores dot-files) never sees half a file.
//! Numbering continues after the highest existing file, so a second run appends.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::events::EventGenerator;
use crate::nexmark::NexmarkGenerator;

/// What writes records, one JSON line at a time.
pub trait Records {
    /// Writes the next record as one JSON line (with its newline) into `out`.
    fn write_next<W: Write>(&mut self, out: &mut W) -> std::io::Result<()>;
}

impl Records for EventGenerator {
    fn write_next<W: Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        EventGenerator::write_next(self, out)
    }
}

impl Records for NexmarkGenerator {
    fn write_next<W: Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        NexmarkGenerator::write_next(self, out)
    }
}

pub const PREFIX: &str = "batch-";
pub const SUFFIX: &str = ".jsonl";

/// The index the next batch file gets in `dir`.
fn next_index(dir: &Path) -> std::io::Result<u64> {
    let mut next = 0;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(Ok(index)) = name.strip_prefix(PREFIX).and_then(|n| n.strip_suffix(SUFFIX)).map(str::parse::<u64>) {
            next = next.max(index + 1);
        }
    }
    Ok(next)
}

/// Writes `count` events in files of `batch_size` lines (the last may be shorter),
/// pausing `interval` after each file. Returns the files written.
pub fn write_batches(
    dir: &Path,
    generator: &mut impl Records,
    count: u64,
    batch_size: u64,
    interval: Duration,
) -> std::io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut index = next_index(dir)?;
    let mut written = Vec::new();
    let mut remaining = count;
    while remaining > 0 {
        let lines = remaining.min(batch_size);
        let name = format!("{PREFIX}{index:08}{SUFFIX}");
        let hidden = dir.join(format!(".{name}.tmp"));
        let mut out = BufWriter::with_capacity(1 << 16, File::create(&hidden)?);
        for _ in 0..lines {
            generator.write_next(&mut out)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let path = dir.join(&name);
        fs::rename(&hidden, &path)?;
        tracing::debug!(file = %path.display(), lines, "batch file written");
        written.push(path);
        remaining -= lines;
        index += 1;
        if remaining > 0 && !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventOptions, TimestampFormat};

    fn generator() -> EventGenerator {
        EventGenerator::new(EventOptions {
            seed: 1,
            users: 3,
            items: 3,
            start_time_micros: 0,
            events_per_second: 1.0,
            out_of_order_share: 0.0,
            out_of_order_seconds: 0.0,
            late_share: 0.0,
            timestamp_format: TimestampFormat::Iso,
        })
    }

    #[test]
    fn writes_count_over_batch_size_files_and_a_second_run_appends() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_batches(dir.path(), &mut generator(), 25, 10, Duration::ZERO).unwrap();
        let lines: Vec<usize> = files.iter().map(|f| fs::read_to_string(f).unwrap().lines().count()).collect();
        assert_eq!(lines, [10, 10, 5]);
        let more = write_batches(dir.path(), &mut generator(), 10, 10, Duration::ZERO).unwrap();
        assert_eq!(more[0].file_name().unwrap(), "batch-00000003.jsonl");
        // No dot-files are left behind.
        let names: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }
}
