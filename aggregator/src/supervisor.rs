//! Runs every pipeline of a `.sql` file or directory, each on its own thread, and
//! keeps the running set equal to the files.
//!
//! Start-up and reload are one code path, [`Supervisor::reconcile`]: it lists the
//! files, reads each one's SHA-256, and diffs that set against the running pipelines:
//!
//! * a new file (or a file whose pipeline failed, once its content changes) → start;
//! * a changed hash → plan the new version first; if it plans, stop the old version
//!   and start the new one, which replays into a shadow table (see `runner`); if it
//!   does not, the old version keeps running and its status shows the error;
//! * a deleted file → stop; its results stay, its status says `inactive` (also for a
//!   pipeline that had failed, and, at start-up, for files deleted while the
//!   aggregator was not running).
//!
//! While running (not `--available-now`), the directory is watched with `notify`.
//! Editors save in several steps (truncate, write, rename), so events only arm a
//! debounce timer; when the files have been quiet for [`DEBOUNCE`], we reconcile —
//! which acts on content hashes, not on events. A periodic rescan covers file
//! systems that do not report changes.
//!
//! A pipeline that fails (its file does not parse or plan, or a fatal error) fails
//! alone: its error, naming the file, is logged and written to its status row, and
//! the others run on. A panic is such a failure too: it ends the pipeline's thread,
//! is caught, and becomes the pipeline's error; the process and its other pipelines
//! go on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::Watcher;
use store::PipelineStatus;

use crate::error::{Error, Result};
use crate::pipeline::definition::{self, PipelineDefinition};
use crate::pipeline::plan::StreamingPlan;
use crate::pipeline::runner::{Notice, Pipeline};
use crate::pipeline::{PipelineOptions, Shutdown};
use crate::sink;
use crate::sink::qlik::QlikHub;
use crate::source::schema::SourceSchema;

/// Quiet time after a file event before the files are read.
pub const DEBOUNCE: Duration = Duration::from_millis(500);
/// Rescan this often even without file events.
const RESCAN: Duration = Duration::from_secs(5);

/// What became of each pipeline.
#[derive(Debug, Default)]
pub struct Summary {
    pub finished: Vec<PipelineStatus>,
    /// (file, error) of pipelines that failed.
    pub failed: Vec<(PathBuf, Error)>,
}

/// The pipeline files at `path`: the file itself, or the directory's `*.sql` files by name.
pub fn pipeline_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(if path.is_file() { vec![path.to_path_buf()] } else { Vec::new() });
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

fn pipeline_name(file: &Path) -> String {
    definition::pipeline_name(file).unwrap_or_default()
}

/// Runs one pipeline to its end on the current thread.
pub fn run_one(
    def: PipelineDefinition,
    schema: &SourceSchema,
    options: &PipelineOptions,
    shutdown: Shutdown,
    notice: Notice,
) -> Result<PipelineStatus> {
    let file = def.path.display().to_string();
    // The pipeline runs on this thread (`block_on`); the runtime's one worker thread
    // runs what it spawns: the sink's writes, which so overlap with the next batch.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("sink-{}", def.name))
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("tokio runtime: {e}")))?;
    // A panic is a bug of ours (or of a library) that some input triggers: it must
    // end this pipeline with its message, not the process with every pipeline.
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            let pipeline = Pipeline::start(def, schema, options, &shutdown, notice).await?;
            pipeline.run(shutdown).await
        })
    }));
    let result = ran.unwrap_or_else(|panic| {
        let message = crate::source::decode::panic_message(panic.as_ref());
        Err(Error::internal(format!("the pipeline panicked: {message}")))
    });
    result.map_err(|e| name_file(e, &file))
}

/// Every error names the pipeline's file (planner errors already do).
fn name_file(e: Error, file: &str) -> Error {
    if e.message.contains(file) { e } else { e.context(format!("pipeline {file}")) }
}

/// Which status row a pipeline that is not running (failed or inactive) gets.
enum StatusBase {
    /// This one (its last status, known to the caller).
    Last(Box<PipelineStatus>),
    /// The row the store holds (whatever version wrote it).
    Stored,
    /// The row the store holds if that version wrote it (its counters, SQL…), else a
    /// new row for that version: the file's hash and text.
    Version { sql_hash: String, sql_text: Option<String> },
}

/// Writes a status row for a pipeline that is not running (failed or inactive).
fn record_state(file: &Path, options: &PipelineOptions, state: &str, error: Option<&Error>, base: StatusBase) {
    let name = pipeline_name(file);
    if state == "failed" {
        crate::metrics::metrics().pipeline_failures.get_or_create(&crate::metrics::Metrics::pipeline(&name)).inc();
    }
    let fresh = || PipelineStatus { name: name.clone(), sql_file: file.display().to_string(), ..Default::default() };
    let write = async {
        let stored = match &base {
            StatusBase::Last(_) => None,
            _ => {
                let store = store::open(&options.sink_uri, options.sink_database.as_deref()).await?;
                store.status(&name).await?
            }
        };
        let mut status = match base {
            StatusBase::Last(last) => *last,
            StatusBase::Stored => stored.unwrap_or_else(fresh),
            StatusBase::Version { sql_hash, sql_text } => match stored {
                Some(stored) if stored.sql_hash == sql_hash => stored,
                _ => PipelineStatus { sql_hash, sql_text, ..fresh() },
            },
        };
        status.state = state.into();
        status.progress = None;
        if let Some(error) = error {
            status.last_error = Some(error.to_string());
        }
        let mut sink = sink::open(&options.sink_uri, options.sink_database.as_deref(), &name, &name).await?;
        sink.write_status(&status).await
    };
    let written = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("tokio runtime: {e}")))
        .and_then(|runtime| runtime.block_on(write));
    if let Err(e) = written {
        tracing::warn!(pipeline = %name, error = %e, "could not write status");
    }
}

/// A pipeline thread.
struct Running {
    file: PathBuf,
    hash: String,
    stop: Shutdown,
    notice: Notice,
    handle: JoinHandle<Result<PipelineStatus>>,
}

/// The set of running pipelines, kept equal to the files at `sql`.
pub struct Supervisor {
    sql: PathBuf,
    schema: Arc<SourceSchema>,
    options: Arc<PipelineOptions>,
    shutdown: Shutdown,
    running: BTreeMap<String, Running>,
    /// Hashes that failed to plan or run, by pipeline: retried only when the file changes.
    failed_hashes: BTreeMap<String, String>,
    /// The files of pipelines that failed (and are not running), by pipeline.
    failed_files: BTreeMap<String, PathBuf>,
    summary: Summary,
}

impl Supervisor {
    pub fn new(sql: &Path, schema: SourceSchema, options: PipelineOptions, shutdown: Shutdown) -> Self {
        Supervisor {
            sql: sql.to_path_buf(),
            schema: Arc::new(schema),
            options: Arc::new(options),
            shutdown,
            running: BTreeMap::new(),
            failed_hashes: BTreeMap::new(),
            failed_files: BTreeMap::new(),
            summary: Summary::default(),
        }
    }

    /// Diffs the files against the running pipelines: starts, replaces and stops.
    pub fn reconcile(&mut self) -> Result<()> {
        self.reap_finished();
        let files = pipeline_files(&self.sql)?;
        let mut wanted: BTreeMap<String, (PathBuf, String, String)> = BTreeMap::new();
        for file in files {
            // A file being replaced may vanish between listing and reading: next time.
            let Ok(text) = std::fs::read_to_string(&file) else { continue };
            let hash = definition::sql_hash(&text);
            wanted.insert(pipeline_name(&file), (file, text, hash));
        }
        let gone: Vec<String> = self.running.keys().filter(|name| !wanted.contains_key(*name)).cloned().collect();
        for name in gone {
            let running = self.running.remove(&name).expect("listed above");
            tracing::info!(pipeline = %name, file = %running.file.display(), "file deleted: stopping the pipeline");
            let file = running.file.clone();
            let last = self.stop(running);
            let base = last.map_or(StatusBase::Stored, |last| StatusBase::Last(Box::new(last)));
            record_state(&file, &self.options, "inactive", None, base);
        }
        // A failed pipeline whose file is deleted is not failed any more: inactive.
        let failed_gone: Vec<String> =
            self.failed_hashes.keys().filter(|name| !wanted.contains_key(*name)).cloned().collect();
        for name in failed_gone {
            self.failed_hashes.remove(&name);
            if let Some(file) = self.failed_files.remove(&name) {
                tracing::info!(pipeline = %name, file = %file.display(), "file of a failed pipeline deleted");
                record_state(&file, &self.options, "inactive", None, StatusBase::Stored);
            }
        }
        for (name, (file, text, hash)) in wanted {
            if let Some(running) = self.running.get(&name)
                && running.hash == hash
            {
                // Back to the running version: forget a rejected edit.
                *running.notice.lock().expect("notice lock") = None;
                continue;
            }
            if self.failed_hashes.get(&name) == Some(&hash) {
                continue;
            }
            match self.plan(&file, &text) {
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "pipeline file does not plan");
                    self.failed_hashes.insert(name.clone(), hash.clone());
                    match self.running.get(&name) {
                        Some(old) => {
                            let message = format!("edit not applied, the previous version keeps running: {e}");
                            *old.notice.lock().expect("notice lock") = Some(message);
                        }
                        None => {
                            let version = StatusBase::Version { sql_hash: hash, sql_text: Some(text.clone()) };
                            record_state(&file, &self.options, "failed", Some(&e), version);
                            self.failed_files.insert(name.clone(), file.clone());
                            self.summary.failed.push((file.clone(), e));
                        }
                    }
                }
                Ok(def) => {
                    if let Some(old) = self.running.remove(&name) {
                        tracing::info!(pipeline = %name, "file changed: replacing the pipeline with its new version");
                        self.stop(old);
                    }
                    self.failed_hashes.remove(&name);
                    self.failed_files.remove(&name);
                    self.spawn(def, file, hash);
                }
            }
        }
        Ok(())
    }

    /// At start-up: pipelines whose status the store still shows as not inactive
    /// although their file (among those this aggregator runs) was deleted while no
    /// aggregator ran are marked inactive. Statuses of files elsewhere (another
    /// aggregator's) are left alone.
    fn retire_vanished(&self) -> Result<()> {
        let files: Vec<String> = pipeline_files(&self.sql)?.iter().map(|f| pipeline_name(f)).collect();
        let statuses = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("tokio runtime: {e}")))?
            .block_on(async {
                let store = store::open(&self.options.sink_uri, self.options.sink_database.as_deref()).await?;
                store.statuses().await
            })?;
        for status in statuses {
            if status.state != "inactive" && !files.contains(&status.name) && self.runs(Path::new(&status.sql_file)) {
                tracing::info!(pipeline = %status.name, file = %status.sql_file, "file deleted while stopped");
                record_state(
                    &PathBuf::from(&status.sql_file),
                    &self.options,
                    "inactive",
                    None,
                    StatusBase::Last(Box::new(status)),
                );
            }
        }
        Ok(())
    }

    /// Whether `file` is (or was) one of the pipeline files at `--sql`.
    fn runs(&self, file: &Path) -> bool {
        let dir_of = |path: &Path| {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            dir.canonicalize().ok()
        };
        if self.sql.is_dir() {
            file.extension().is_some_and(|x| x == "sql") && dir_of(file) == self.sql.canonicalize().ok()
        } else {
            file.file_name() == self.sql.file_name() && dir_of(file) == dir_of(&self.sql)
        }
    }

    /// Parses and plans a file without running it.
    fn plan(&self, file: &Path, text: &str) -> Result<PipelineDefinition> {
        let def = PipelineDefinition::parse(file, text)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| Error::internal(format!("tokio runtime: {e}")))?;
        runtime
            .block_on(StreamingPlan::new(&def, &self.schema))
            .map_err(|e| name_file(e, &file.display().to_string()))?;
        Ok(def)
    }

    fn spawn(&mut self, def: PipelineDefinition, file: PathBuf, hash: String) {
        let name = def.name.clone();
        let stop = self.shutdown.child();
        let notice: Notice = Arc::default();
        let (schema, options, thread_stop, thread_notice) =
            (self.schema.clone(), self.options.clone(), stop.clone(), notice.clone());
        let handle = std::thread::Builder::new()
            .name(format!("pipeline-{name}"))
            .spawn(move || run_one(def, &schema, &options, thread_stop, thread_notice))
            .expect("spawn a pipeline thread");
        tracing::info!(pipeline = %name, file = %file.display(), "pipeline started");
        self.running.insert(name, Running { file, hash, stop, notice, handle });
    }

    /// Stops a pipeline and waits for it (it finishes its batch and checkpoints).
    fn stop(&mut self, running: Running) -> Option<PipelineStatus> {
        running.stop.trigger();
        self.join(running)
    }

    fn join(&mut self, running: Running) -> Option<PipelineStatus> {
        let name = pipeline_name(&running.file);
        match running.handle.join() {
            Ok(Ok(status)) => {
                self.summary.finished.push(status.clone());
                Some(status)
            }
            Ok(Err(e)) => {
                tracing::error!(file = %running.file.display(), error = %e, "pipeline failed");
                let version = StatusBase::Version { sql_hash: running.hash.clone(), sql_text: None };
                record_state(&running.file, &self.options, "failed", Some(&e), version);
                self.failed_hashes.insert(name.clone(), running.hash);
                self.failed_files.insert(name, running.file.clone());
                self.summary.failed.push((running.file, e));
                None
            }
            Err(panic) => {
                let message = crate::source::decode::panic_message(panic.as_ref());
                let e = Error::internal(format!("{}: the pipeline panicked: {message}", running.file.display()));
                let version = StatusBase::Version { sql_hash: running.hash.clone(), sql_text: None };
                record_state(&running.file, &self.options, "failed", Some(&e), version);
                self.failed_hashes.insert(name.clone(), running.hash);
                self.failed_files.insert(name, running.file.clone());
                self.summary.failed.push((running.file, e));
                None
            }
        }
    }

    /// Collects pipelines that ended by themselves (failed, or drained with `--available-now`).
    fn reap_finished(&mut self) {
        let done: Vec<String> =
            self.running.iter().filter(|(_, r)| r.handle.is_finished()).map(|(n, _)| n.clone()).collect();
        for name in done {
            let running = self.running.remove(&name).expect("listed above");
            self.join(running);
        }
    }

    /// Waits for every pipeline to end by itself (`--available-now`).
    pub fn wait_all(mut self) -> Summary {
        let all: Vec<Running> = std::mem::take(&mut self.running).into_values().collect();
        for running in all {
            self.join(running);
        }
        self.summary
    }

    /// Stops every pipeline and returns what became of them.
    pub fn stop_all(self) -> Summary {
        for running in self.running.values() {
            running.stop.trigger();
        }
        self.wait_all()
    }

    /// Watches the files and reconciles after each burst of changes, until shutdown.
    pub fn watch(mut self) -> Result<Summary> {
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.send(());
            }
        })
        .map_err(|e| Error::external(format!("watching {}: {e}", self.sql.display())))?;
        // Watch the directory (for a single file, its parent): editors replace files.
        let dir = if self.sql.is_dir() {
            self.sql.clone()
        } else {
            self.sql.parent().unwrap_or(Path::new(".")).to_path_buf()
        };
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| Error::external(format!("watching {}: {e}", dir.display())))?;
        tracing::info!(dir = %dir.display(), "watching pipeline files");
        let mut changed_at: Option<Instant> = None;
        let mut last_scan = Instant::now();
        while !self.shutdown.is_triggered() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => changed_at = Some(Instant::now()),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let settled = changed_at.is_some_and(|t| t.elapsed() >= DEBOUNCE);
            if settled || last_scan.elapsed() >= RESCAN {
                changed_at = None;
                last_scan = Instant::now();
                if let Err(e) = self.reconcile() {
                    tracing::error!(error = %e, "could not read the pipeline files");
                }
            }
        }
        Ok(self.stop_all())
    }
}

/// Runs all pipelines at `sql`: with `available_now` until each has drained its
/// source; otherwise until `shutdown`, following changes to the files.
pub fn run(sql: &Path, schema: &SourceSchema, options: &PipelineOptions, shutdown: Shutdown) -> Result<Summary> {
    if !sql.exists() {
        return Err(Error::user(format!("--sql {}: no such file or directory", sql.display())));
    }
    // One Qlik push for the whole process: pipelines that target the same app share
    // its reload orchestrator. It starts its threads now but connects only to targets.
    let mut options = options.clone();
    let hub = QlikHub::start(options.qlik.clone(), &options.sink_uri, options.sink_database.as_deref())?;
    options.qlik_hub = Some(hub.clone());
    let mut supervisor = Supervisor::new(sql, schema.clone(), options.clone(), shutdown);
    if let Err(e) = supervisor.retire_vanished() {
        tracing::warn!(error = %e, "could not look for pipelines whose files were deleted");
    }
    let summary = match supervisor.reconcile() {
        Err(e) => Err(e),
        Ok(()) if options.available_now => {
            if supervisor.running.is_empty() && supervisor.summary.failed.is_empty() {
                Err(Error::user(format!("--sql {}: no .sql files", sql.display())))
            } else {
                Ok(supervisor.wait_all())
            }
        }
        Ok(()) => supervisor.watch(),
    };
    // The last changes reach the Qlik apps before the process exits (up to a timeout).
    hub.finish();
    summary
}
