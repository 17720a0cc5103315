//! Checkpoints: a pipeline's state and source offset, saved together in one file.
//!
//! `<checkpoint-dir>/<pipeline>.checkpoint` holds a JSON header (SQL hash, source
//! offset, watermark, counters, what was last written) and two Arrow IPC streams (the
//! group state, and the final rows of closed windows that a second stage still
//! reads). It is written to a dot-file, synced and renamed over the old one, so a crash
//! leaves either the old checkpoint or the new one, never a torn file.
//!
//! Sinks are written *before* the checkpoint. After a crash the pipeline resumes from
//! the checkpoint and runs again the batches the offset log holds beyond it, over the
//! same records (see [`crate::pipeline::offset_log`]); since those batches and their
//! results are the same as before, the results end up the same.

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::watermark::WatermarkState;
use crate::source::SourceOffset;

const MAGIC: &[u8; 8] = b"SQLAGG01";

/// Events counted by a pipeline: `consumed = ok + bad + late`; and result rows written.
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
    /// For pipelines that diff whole results: `_id` → fingerprint of the row written.
    pub written: HashMap<String, u64>,
    /// The number of the last micro-batch the state holds (see the offset log).
    #[serde(default)]
    pub batch: u64,
}

#[derive(Debug, Default)]
pub struct Checkpoint {
    pub header: CheckpointHeader,
    pub state: Option<RecordBatch>,
    pub finalized: Option<RecordBatch>,
}

pub fn path_for(dir: &Path, pipeline: &str) -> PathBuf {
    dir.join(format!("{pipeline}.checkpoint"))
}

fn ipc_bytes(batch: Option<&RecordBatch>) -> Result<Vec<u8>> {
    let Some(batch) = batch else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
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

impl Checkpoint {
    /// Writes the checkpoint atomically (dot-file, fsync, rename); returns its size.
    pub fn save(&self, path: &Path) -> Result<u64> {
        let fail = |e: std::io::Error| Error::external(format!("checkpoint {}: {e}", path.display()));
        let header = serde_json::to_vec(&self.header).map_err(|e| Error::internal(e.to_string()))?;
        let parts = [header, ipc_bytes(self.state.as_ref())?, ipc_bytes(self.finalized.as_ref())?];
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(fail)?;
        file.write_all(MAGIC).map_err(fail)?;
        let mut size = MAGIC.len() as u64;
        for part in &parts {
            file.write_all(&(part.len() as u64).to_le_bytes()).map_err(fail)?;
            file.write_all(part).map_err(fail)?;
            size += 8 + part.len() as u64;
        }
        file.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)?;
        Ok(size)
    }

    /// Deletes the checkpoint, if there is one.
    pub fn remove(path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::external(format!("checkpoint {}: {e}", path.display())))
            }
            _ => Ok(()),
        }
    }

    /// Reads a checkpoint; `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::external(format!("checkpoint {}: {e}", path.display()))),
        };
        let corrupt = |what: &str| Error::internal(format!("checkpoint {}: {what}", path.display()));
        let mut cursor = Cursor::new(bytes.as_slice());
        let mut magic = [0u8; 8];
        cursor.read_exact(&mut magic).map_err(|_| corrupt("too short"))?;
        if &magic != MAGIC {
            return Err(corrupt("not a checkpoint file"));
        }
        let mut parts = Vec::new();
        for _ in 0..3 {
            let mut len = [0u8; 8];
            cursor.read_exact(&mut len).map_err(|_| corrupt("truncated"))?;
            let mut part = vec![0u8; u64::from_le_bytes(len) as usize];
            cursor.read_exact(&mut part).map_err(|_| corrupt("truncated"))?;
            parts.push(part);
        }
        let header: CheckpointHeader =
            serde_json::from_slice(&parts[0]).map_err(|e| corrupt(&format!("header: {e}")))?;
        Ok(Some(Checkpoint { header, state: read_ipc(&parts[1])?, finalized: read_ipc(&parts[2])? }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use std::sync::Arc;

    #[test]
    fn a_saved_checkpoint_loads_back_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "p");
        assert!(Checkpoint::load(&path).unwrap().is_none());
        let batch = RecordBatch::try_from_iter([("k", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
        let mut header = CheckpointHeader {
            sql_hash: "abc".into(),
            offset: SourceOffset::File { file: "f".into(), line: 3 },
            ..Default::default()
        };
        header.written.insert("x".into(), 7);
        Checkpoint { header: header.clone(), state: Some(batch.clone()), finalized: None }.save(&path).unwrap();
        let loaded = Checkpoint::load(&path).unwrap().unwrap();
        assert_eq!(loaded.header, header);
        assert_eq!(loaded.state.unwrap(), batch);
        assert!(loaded.finalized.is_none());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["p.checkpoint"]);
    }
}
