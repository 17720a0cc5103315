//! Checkpoints: a pipeline's state and source offset, saved together, incrementally.
//!
//! ```text
//! <checkpoint-dir>/<pipeline>.checkpoint        the manifest: format, SQL hash, offset,
//!                                               watermark, counters, the state files
//! <checkpoint-dir>/<pipeline>.state/<n>.full    every group's state (Arrow IPC)
//! <checkpoint-dir>/<pipeline>.state/<n>.delta   the groups written and removed since <n-1>
//! <checkpoint-dir>/<pipeline>.state/<n>.closed  final rows of closed windows, kept for what
//!                                               runs over stage 1's whole result
//! ```
//!
//! A checkpoint writes the state that changed since the last one (a delta), so its cost
//! follows the batches since, not the size of the state; once the deltas add up to
//! more than the full state, the next checkpoint writes the full state again and the
//! older files go. A restart reads the full state and applies the deltas in order.
//!
//! Rows of closed windows only ever grow, so a checkpoint writes those that closed since
//! the last one as a new `.closed` file; while the newest file holds at least as many
//! rows as the one before, the two are written again as one (from memory), so there are
//! about log₂(rows) files and a row is rewritten about as many times.
//!
//! The pipeline's thread only collects what changed (the groups it touched); encoding,
//! writing and syncing happen on a writer thread while the next batches run
//! ([`CheckpointWriter`]). Every file is written to a dot-file, synced and renamed; the
//! manifest is renamed last, so a crash leaves the old checkpoint or the new one,
//! never a torn one, and files no manifest names are removed at the next start.
//!
//! Sinks are written *before* the checkpoint. After a crash the pipeline resumes from
//! the checkpoint and runs again the batches the offset log holds beyond it, over the
//! same records (see [`crate::pipeline::offset_log`]); since those batches and their
//! results are the same as before, the results end up the same.
//!
//! The format is versioned by the manifest's first bytes (`SQLAGG02`). A checkpoint of
//! another version (`SQLAGG01`, whole state in one file, before columnar state) is not
//! read: the pipeline starts as a new version and replays its source.

use std::io::{BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::watermark::WatermarkState;
use crate::source::SourceOffset;

/// The manifest's first bytes: the format's version is in them.
const MAGIC: &[u8; 8] = b"SQLAGG02";
/// The first bytes of a state file.
const STATE_MAGIC: &[u8; 8] = b"SQLAGGST";
/// A full state is written again once the changes written since the last one add up
/// to more than it (and at least this much), or are this many files.
const MIN_REWRITE_BYTES: u64 = 1 << 20;
const MAX_DELTAS: usize = 64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub consumed: u64,
    pub ok: u64,
    pub bad: u64,
    pub late: u64,
    #[serde(default)]
    pub upserted: u64,
    #[serde(default)]
    pub deleted: u64,
    /// `consumed` after the last micro-batch that changed the result: the result's
    /// version (what a Qlik app's marker records).
    #[serde(default)]
    pub changed_at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    pub sql_hash: String,
    pub offset: SourceOffset,
    #[serde(default)]
    pub watermark: WatermarkState,
    /// While a new version replays into its shadow table: where the replay ends.
    #[serde(default)]
    pub replay_until: Option<SourceOffset>,
    pub evicted_until: Option<i64>,
    pub counters: Counters,
    /// The number of the last micro-batch the state holds (see the offset log).
    #[serde(default)]
    pub batch: u64,
    /// The state files, in the order they apply: a full state, then changes.
    #[serde(default)]
    pub state_files: Vec<StateFile>,
    /// The files of closed windows' final rows, in order.
    #[serde(default)]
    pub closed_files: Vec<ClosedFile>,
}

/// One file of closed windows' final rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedFile {
    pub name: String,
    pub rows: u64,
}

/// One file of saved state: a full state or the changes since the file before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub name: String,
    pub bytes: u64,
    pub full: bool,
}

/// A checkpoint as read back: the manifest, and the state files' contents in order.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub header: CheckpointHeader,
    pub closed_rows: Option<RecordBatch>,
    pub state: Vec<SavedState>,
}

/// The saved state of one file: groups written (their full state) and groups removed
/// (their keys).
#[derive(Debug, Clone)]
pub struct SavedState {
    pub written: Option<RecordBatch>,
    pub removed: Option<RecordBatch>,
}

/// What one checkpoint saves of the state.
pub enum StateChange {
    /// Every group.
    Full(RecordBatch),
    /// The groups written and removed since the last checkpoint.
    Delta { written: RecordBatch, removed: RecordBatch },
}

/// The manifest of a pipeline.
pub fn path_for(dir: &Path, pipeline: &str) -> PathBuf {
    dir.join(format!("{pipeline}.checkpoint"))
}

/// The folder of a pipeline's state files.
fn state_dir(manifest: &Path) -> PathBuf {
    manifest.with_extension("state")
}

fn read_ipc(bytes: &[u8]) -> Result<Option<RecordBatch>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Some(datafusion::arrow::compute::concat_batches(&schema, &batches)?))
}

/// One part of a file [`write_atomically`] writes.
enum Part<'a> {
    Bytes(&'a [u8]),
    /// A batch in Arrow's IPC stream format (none: an empty part).
    Batch(Option<&'a RecordBatch>),
}

/// Rows per IPC message: a full state is encoded a slice at a time, so the encoder's
/// buffer stays small however large the state.
const ROWS_PER_MESSAGE: usize = 1 << 20;

/// Writes `magic` and length-prefixed `parts` atomically (dot-file, fsync, rename);
/// returns the size. Batches are encoded straight into the file, a slice at a time:
/// a full state is never held a second time, encoded, in memory.
fn write_atomically(path: &Path, magic: &[u8; 8], parts: &[Part]) -> Result<u64> {
    let fail = |e: std::io::Error| Error::external(format!("checkpoint {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = BufWriter::new(std::fs::File::create(&tmp).map_err(fail)?);
    file.write_all(magic).map_err(fail)?;
    for part in parts {
        match part {
            Part::Bytes(bytes) => {
                file.write_all(&(bytes.len() as u64).to_le_bytes()).map_err(fail)?;
                file.write_all(bytes).map_err(fail)?;
            }
            Part::Batch(None) => file.write_all(&0u64.to_le_bytes()).map_err(fail)?,
            Part::Batch(Some(batch)) => {
                // The length is known once written: a placeholder, filled in after.
                let at = file.stream_position().map_err(fail)?;
                file.write_all(&0u64.to_le_bytes()).map_err(fail)?;
                let mut writer = StreamWriter::try_new(&mut file, &batch.schema())?;
                for offset in (0..batch.num_rows()).step_by(ROWS_PER_MESSAGE) {
                    writer.write(&batch.slice(offset, ROWS_PER_MESSAGE.min(batch.num_rows() - offset)))?;
                }
                writer.finish()?;
                drop(writer);
                let end = file.stream_position().map_err(fail)?;
                file.seek(SeekFrom::Start(at)).map_err(fail)?;
                file.write_all(&(end - at - 8).to_le_bytes()).map_err(fail)?;
                file.seek(SeekFrom::Start(end)).map_err(fail)?;
            }
        }
    }
    let size = file.stream_position().map_err(fail)?;
    let file = file.into_inner().map_err(|e| fail(e.into_error()))?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    Ok(size)
}

/// Reads what [`write_atomically`] wrote: `None` if the magic is another one.
fn read_parts(path: &Path, bytes: &[u8], magic: &[u8; 8], count: usize) -> Result<Option<Vec<Vec<u8>>>> {
    let corrupt = |what: &str| Error::internal(format!("checkpoint {}: {what}", path.display()));
    let mut cursor = Cursor::new(bytes);
    let mut found = [0u8; 8];
    cursor.read_exact(&mut found).map_err(|_| corrupt("too short"))?;
    if &found != magic {
        return Ok(None);
    }
    let mut parts = Vec::new();
    for _ in 0..count {
        let mut len = [0u8; 8];
        cursor.read_exact(&mut len).map_err(|_| corrupt("truncated"))?;
        let mut part = vec![0u8; u64::from_le_bytes(len) as usize];
        cursor.read_exact(&mut part).map_err(|_| corrupt("truncated"))?;
        parts.push(part);
    }
    Ok(Some(parts))
}

impl Checkpoint {
    /// Deletes the checkpoint (manifest and state files), if there is one.
    pub fn remove(path: &Path) -> Result<()> {
        let fail = |e: std::io::Error| Error::external(format!("checkpoint {}: {e}", path.display()));
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
            _ => {}
        }
        match std::fs::remove_dir_all(state_dir(path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fail(e)),
            _ => Ok(()),
        }
    }

    /// Reads a checkpoint; `None` if there is none, or one of another format version
    /// (which is then left to be replaced). State files no manifest names (a crash
    /// between writing one and the manifest) are removed.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::external(format!("checkpoint {}: {e}", path.display()))),
        };
        let corrupt = |what: &str| Error::internal(format!("checkpoint {}: {what}", path.display()));
        let Some(parts) = read_parts(path, &bytes, MAGIC, 2)? else {
            if bytes.starts_with(b"SQLAGG") {
                tracing::warn!(checkpoint = %path.display(), "checkpoint of another format version: starting over");
                return Ok(None);
            }
            return Err(corrupt("not a checkpoint file"));
        };
        let header: CheckpointHeader =
            serde_json::from_slice(&parts[0]).map_err(|e| corrupt(&format!("header: {e}")))?;
        let dir = state_dir(path);
        let mut state = Vec::new();
        for file in &header.state_files {
            let parts = read_state_file(&dir, &file.name, 2)?;
            state.push(SavedState { written: read_ipc(&parts[0])?, removed: read_ipc(&parts[1])? });
        }
        // Closed windows' rows: in the manifest (checkpoints written before `.closed`
        // files), then the files in order.
        let mut closed: Vec<RecordBatch> = read_ipc(&parts[1])?.into_iter().collect();
        for file in &header.closed_files {
            closed.extend(read_ipc(&read_state_file(&dir, &file.name, 1)?[0])?);
        }
        let closed_rows = match closed.first() {
            Some(first) => Some(datafusion::arrow::compute::concat_batches(&first.schema(), &closed)?),
            None => None,
        };
        remove_unnamed(&dir, &header);
        Ok(Some(Checkpoint { header, closed_rows, state }))
    }
}

/// The `count` parts of state file `name` in `dir`.
fn read_state_file(dir: &Path, name: &str, count: usize) -> Result<Vec<Vec<u8>>> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| Error::external(format!("checkpoint {}: {e}", path.display())))?;
    read_parts(&path, &bytes, STATE_MAGIC, count)?
        .ok_or_else(|| Error::internal(format!("checkpoint {}: not a state file", path.display())))
}

/// Removes the files of `dir` the manifest does not name.
fn remove_unnamed(dir: &Path, manifest: &CheckpointHeader) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let named = manifest.state_files.iter().map(|f| &f.name).chain(manifest.closed_files.iter().map(|f| &f.name));
        if !named.into_iter().any(|n| *n == name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes a pipeline's checkpoints, each on a writer thread while the pipeline goes
/// on; one at a time.
pub struct CheckpointWriter {
    manifest: PathBuf,
    /// The files of the last checkpoint written.
    files: Vec<StateFile>,
    /// Its files of closed windows' rows.
    closed: Vec<ClosedFile>,
    next: u64,
    pending: Option<std::thread::JoinHandle<Result<WriterDone>>>,
}

/// What the writer thread hands back: the checkpoint written and its files.
type WriterDone = (Written, Vec<StateFile>, Vec<ClosedFile>);

/// A checkpoint on disk: the batch it holds and its size.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub batch: u64,
    pub bytes: u64,
}

impl CheckpointWriter {
    /// A writer continuing `resumed`'s files (none for a new version).
    pub fn new(manifest: PathBuf, resumed: Option<&CheckpointHeader>) -> Self {
        let files = resumed.map(|h| h.state_files.clone()).unwrap_or_default();
        let closed = resumed.map(|h| h.closed_files.clone()).unwrap_or_default();
        // Numbers go on after every file there, also those of another version of the
        // pipeline (whose manifest may still name them until this one replaces it).
        let there = std::fs::read_dir(state_dir(&manifest))
            .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_else(|_| Vec::new());
        let numbers = there
            .iter()
            .map(String::as_str)
            .chain(files.iter().map(|f| f.name.as_str()))
            .chain(closed.iter().map(|f| f.name.as_str()));
        let next = numbers.filter_map(|name| name.split('.').next()?.parse::<u64>().ok()).max().map_or(1, |n| n + 1);
        CheckpointWriter { manifest, files, closed, next, pending: None }
    }

    /// Whether the next checkpoint should save every group rather than the changes.
    pub fn wants_full(&self) -> bool {
        let Some(full) = self.files.first().filter(|f| f.full) else { return true };
        let deltas: u64 = self.files[1..].iter().map(|f| f.bytes).sum();
        deltas > full.bytes.max(MIN_REWRITE_BYTES) || self.files.len() > MAX_DELTAS
    }

    /// Starts writing a checkpoint (after the one before, if it is still being
    /// written: call [`Self::finish`] first to learn when that one is on disk).
    /// `closed_rows` is every closed window's rows so far (it only grows): the rows after
    /// those already in files go into a new one, merged with the files before it while
    /// it is at least as large as they are.
    pub fn start(
        &mut self,
        mut header: CheckpointHeader,
        state: StateChange,
        closed_rows: Option<RecordBatch>,
    ) -> Result<()> {
        self.finish()?;
        let (full, written, removed) = match state {
            StateChange::Full(written) => (true, written, None),
            StateChange::Delta { written, removed } => (false, written, Some(removed)),
        };
        let name = format!("{}.{}", self.next, if full { "full" } else { "delta" });
        self.next += 1;
        let dir = state_dir(&self.manifest);
        let manifest = self.manifest.clone();
        let mut files = if full { Vec::new() } else { self.files.clone() };
        // The file's size is known once encoded: the writer thread fills it in.
        files.push(StateFile { name: name.clone(), bytes: 0, full });
        let (closed, new_closed) = self.closed_files(closed_rows.as_ref());
        let batch = header.batch;
        let job = move || -> Result<WriterDone> {
            let parts = [Part::Batch(Some(&written)), Part::Batch(removed.as_ref().filter(|r| r.num_rows() > 0))];
            let mut size = write_atomically(&dir.join(&name), STATE_MAGIC, &parts)?;
            files.last_mut().expect("pushed above").bytes = size;
            if let Some((name, rows)) = &new_closed {
                size += write_atomically(&dir.join(name), STATE_MAGIC, &[Part::Batch(Some(rows))])?;
            }
            header.state_files = files.clone();
            header.closed_files = closed.clone();
            let header_bytes = serde_json::to_vec(&header).map_err(|e| Error::internal(e.to_string()))?;
            let bytes = write_atomically(&manifest, MAGIC, &[Part::Bytes(&header_bytes), Part::Bytes(&[])])?;
            if full || new_closed.is_some() {
                // Files replaced (state before a full one, closed rows merged), and any
                // of another version of the pipeline.
                remove_unnamed(&dir, &header);
            }
            Ok((Written { batch, bytes: bytes + size }, files, closed))
        };
        let handle = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(job)
            .map_err(|e| Error::internal(format!("checkpoint writer thread: {e}")))?;
        self.pending = Some(handle);
        Ok(())
    }

    /// Waits for the checkpoint being written, if any; returns it once written.
    pub fn finish(&mut self) -> Result<Option<Written>> {
        let Some(handle) = self.pending.take() else { return Ok(None) };
        let (written, files, closed) =
            handle.join().map_err(|_| Error::internal("the checkpoint writer thread panicked".to_string()))??;
        self.files = files;
        self.closed = closed;
        Ok(Some(written))
    }

    /// The closed-rows files of the next checkpoint, and the new one to write (its name
    /// and rows) if rows closed since the last checkpoint.
    fn closed_files(&mut self, closed_rows: Option<&RecordBatch>) -> (Vec<ClosedFile>, Option<(String, RecordBatch)>) {
        let total = closed_rows.map_or(0, |f| f.num_rows() as u64);
        let mut kept = self.closed.clone();
        let mut start: u64 = kept.iter().map(|f| f.rows).sum();
        // (Fewer rows than the files hold cannot happen: rows only close. Rewrite them.)
        if start > total {
            kept.clear();
            start = 0;
        }
        let (Some(closed_rows), true) = (closed_rows, total > start) else { return (kept, None) };
        while let Some(last) = kept.last()
            && last.rows <= total - start
        {
            start -= last.rows;
            kept.pop();
        }
        let name = format!("{}.closed", self.next);
        self.next += 1;
        kept.push(ClosedFile { name: name.clone(), rows: total - start });
        let rows = closed_rows.slice(start as usize, (total - start) as usize);
        (kept, Some((name, rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use std::sync::Arc;

    fn batch(values: Vec<i64>) -> RecordBatch {
        RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from(values)) as _)]).unwrap()
    }

    fn header(batch: u64) -> CheckpointHeader {
        CheckpointHeader {
            sql_hash: "abc".into(),
            offset: SourceOffset::File { file: "f".into(), line: batch },
            batch,
            ..Default::default()
        }
    }

    #[test]
    fn a_full_state_then_deltas_load_back_in_order_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "p");
        assert!(Checkpoint::load(&path).unwrap().is_none());
        let mut writer = CheckpointWriter::new(path.clone(), None);
        assert!(writer.wants_full());
        writer.start(header(1), StateChange::Full(batch(vec![1, 2])), None).unwrap();
        let done = writer.finish().unwrap().unwrap();
        assert_eq!(done.batch, 1);
        assert!(!writer.wants_full(), "a small delta after a full state");
        let delta = StateChange::Delta { written: batch(vec![3]), removed: batch(vec![1]) };
        writer.start(header(2), delta, Some(batch(vec![9]))).unwrap();
        writer.finish().unwrap();

        let loaded = Checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(loaded.header.batch, 2);
        assert_eq!(
            loaded.header.state_files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["1.full", "2.delta"]
        );
        assert_eq!(loaded.state[0].written, Some(batch(vec![1, 2])));
        assert_eq!(loaded.state[0].removed, None);
        assert_eq!(loaded.state[1].written, Some(batch(vec![3])));
        assert_eq!(loaded.state[1].removed, Some(batch(vec![1])));
        assert_eq!(loaded.closed_rows, Some(batch(vec![9])));
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["p.checkpoint", "p.state"]);
    }

    #[test]
    fn a_new_full_state_replaces_the_older_files_and_a_restarted_writer_continues_the_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "p");
        let mut writer = CheckpointWriter::new(path.clone(), None);
        writer.start(header(1), StateChange::Full(batch(vec![1])), None).unwrap();
        writer.start(header(2), StateChange::Delta { written: batch(vec![2]), removed: batch(vec![]) }, None).unwrap();
        writer.start(header(3), StateChange::Full(batch(vec![1, 2])), None).unwrap();
        writer.finish().unwrap();
        let loaded = Checkpoint::load(&path).unwrap().unwrap();
        let files: Vec<_> = std::fs::read_dir(state_dir(&path)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, ["3.full"]);
        let mut writer = CheckpointWriter::new(path.clone(), Some(&loaded.header));
        writer.start(header(4), StateChange::Delta { written: batch(vec![3]), removed: batch(vec![]) }, None).unwrap();
        writer.finish().unwrap();
        let loaded = Checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(
            loaded.header.state_files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["3.full", "4.delta"]
        );
        // A new version of the pipeline starts its own files after those, and its first
        // (full) checkpoint removes the old version's.
        let mut writer = CheckpointWriter::new(path.clone(), None);
        writer.start(header(1), StateChange::Full(batch(vec![7])), None).unwrap();
        writer.finish().unwrap();
        let files: Vec<_> = std::fs::read_dir(state_dir(&path)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, ["5.full"]);
    }

    #[test]
    fn closed_rows_are_written_as_they_close_into_few_files_and_load_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "p");
        let closed_on_disk = || {
            let names = std::fs::read_dir(state_dir(&path)).unwrap().map(|e| e.unwrap().file_name());
            names.filter(|n| n.to_string_lossy().ends_with(".closed")).count()
        };
        let none = || StateChange::Delta { written: batch(vec![]), removed: batch(vec![]) };
        let mut writer = CheckpointWriter::new(path.clone(), None);
        writer.start(header(0), StateChange::Full(batch(vec![])), None).unwrap();
        let mut all = Vec::new();
        for n in 1..=20 {
            all.push(n);
            writer.start(header(n as u64), none(), Some(batch(all.clone()))).unwrap();
            let files = writer.finish().unwrap().map(|_| writer.closed.clone()).unwrap();
            // Sizes halve (or better) from file to file: about log2(rows) files.
            assert!(files.windows(2).all(|w| w[0].rows > w[1].rows), "{files:?}");
            assert_eq!(closed_on_disk(), files.len(), "merged files are removed");
        }
        let loaded = Checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(loaded.closed_rows, Some(batch(all.clone())));
        assert!(loaded.header.closed_files.len() <= 5, "{:?}", loaded.header.closed_files);
        // Nothing closed since: no file written; a restarted writer goes on.
        let mut writer = CheckpointWriter::new(path.clone(), Some(&loaded.header));
        writer.start(header(21), none(), Some(batch(all.clone()))).unwrap();
        writer.finish().unwrap();
        assert_eq!(writer.closed, loaded.header.closed_files);
        all.push(21);
        writer.start(header(22), none(), Some(batch(all.clone()))).unwrap();
        writer.finish().unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap().unwrap().closed_rows, Some(batch(all)));
    }

    #[test]
    fn a_state_file_without_a_manifest_is_removed_and_an_old_format_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "p");
        let mut writer = CheckpointWriter::new(path.clone(), None);
        writer.start(header(1), StateChange::Full(batch(vec![1])), None).unwrap();
        writer.finish().unwrap();
        // A crash after a state file was written, before the manifest.
        write_atomically(&state_dir(&path).join("2.delta"), STATE_MAGIC, &[Part::Bytes(&[]), Part::Bytes(&[])])
            .unwrap();
        let loaded = Checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(loaded.header.batch, 1);
        let files: Vec<_> = std::fs::read_dir(state_dir(&path)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files, ["1.full"]);
        std::fs::write(&path, b"SQLAGG01whatever").unwrap();
        assert!(Checkpoint::load(&path).unwrap().is_none());
        std::fs::write(&path, b"garbage!garbage!").unwrap();
        assert!(Checkpoint::load(&path).is_err());
    }
}
