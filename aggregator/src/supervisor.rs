//! Runs every pipeline of a `.sql` file or directory, each on its own thread.
//!
//! A pipeline whose file does not parse or plan fails alone: its error (naming the
//! file) is logged and written to its status row, and the others run on.

use std::path::{Path, PathBuf};

use store::PipelineStatus;

use crate::error::{Error, Result};
use crate::pipeline::definition::PipelineDefinition;
use crate::pipeline::runner::Pipeline;
use crate::pipeline::{PipelineOptions, Shutdown};
use crate::sink;
use crate::source::schema::SourceSchema;

/// What became of each pipeline.
#[derive(Debug, Default)]
pub struct Summary {
    pub finished: Vec<PipelineStatus>,
    /// (file, error) of pipelines that failed.
    pub failed: Vec<(PathBuf, Error)>,
}

/// The pipeline files at `path`: the file itself, or the directory's `*.sql` files by name.
pub fn pipeline_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::user(format!("--sql {}: {e}", path.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "sql")
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Runs one pipeline to its end on the current thread.
pub fn run_one(
    file: &Path,
    schema: &SourceSchema,
    options: &PipelineOptions,
    shutdown: Shutdown,
) -> Result<PipelineStatus> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("tokio runtime: {e}")))?;
    runtime
        .block_on(async {
            let def = match PipelineDefinition::from_file(file) {
                Ok(def) => def,
                Err(e) => {
                    record_failure(file, options, &e);
                    return Err(e);
                }
            };
            let pipeline = Pipeline::start(def, schema, options, &shutdown).await?;
            pipeline.run(shutdown).await
        })
        .map_err(|e| {
            // Every error names the pipeline's file (planner errors already do).
            let file = file.display().to_string();
            if e.message.contains(&file) { e } else { e.context(format!("pipeline {file}")) }
        })
}

/// Writes a failed status for a file that could not even be read as a pipeline.
fn record_failure(file: &Path, options: &PipelineOptions, error: &Error) {
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let status = PipelineStatus {
        name: name.clone(),
        sql_file: file.display().to_string(),
        state: "failed".into(),
        last_error: Some(error.to_string()),
        ..Default::default()
    };
    if let Ok(mut sink) = sink::open(&options.sink_uri, &name, &name) {
        let _ = sink.write_status(&status);
    }
}

/// Runs all pipelines at `sql` until they end (with `available_now`) or `shutdown`.
pub fn run(sql: &Path, schema: &SourceSchema, options: &PipelineOptions, shutdown: Shutdown) -> Result<Summary> {
    let files = pipeline_files(sql)?;
    if files.is_empty() {
        return Err(Error::user(format!("--sql {}: no .sql files", sql.display())));
    }
    let mut summary = Summary::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .iter()
            .map(|file| {
                let shutdown = shutdown.clone();
                let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let handle = std::thread::Builder::new()
                    .name(format!("pipeline-{name}"))
                    .spawn_scoped(scope, move || run_one(file, schema, options, shutdown))
                    .expect("spawn a pipeline thread");
                (file, handle)
            })
            .collect();
        for (file, handle) in handles {
            match handle.join() {
                Ok(Ok(status)) => summary.finished.push(status),
                Ok(Err(e)) => {
                    tracing::error!(file = %file.display(), error = %e, "pipeline failed");
                    summary.failed.push((file.clone(), e));
                }
                Err(_) => summary
                    .failed
                    .push((file.clone(), Error::internal(format!("{}: pipeline thread panicked", file.display())))),
            }
        }
    });
    Ok(summary)
}
