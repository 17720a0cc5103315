//! `aggregator`: runs one incremental SQL pipeline per `.sql` file.

use std::path::PathBuf;
use std::time::Duration;

use aggregator::pipeline::{PipelineOptions, Shutdown};
use aggregator::sink::qlik::QlikOptions;
use aggregator::source::SourceOptions;
use aggregator::source::schema::SourceSchema;
use clap::Parser;

// Micro-batches allocate and free buffers of megabytes; the system allocator hands
// them back to the kernel each time (page faults, zeroing), mimalloc reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps the answer to each `.sql` file live over an event stream, in a store.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A pipeline file, or a directory whose `*.sql` files are pipelines. Watched while
    /// running: a new file starts a pipeline, an edit replays, a deletion stops one.
    #[arg(long, env = "AGGREGATOR_SQL", default_value = "sql")]
    sql: PathBuf,
    /// Where events come from: `file:<dir>` (the batch-file log) or
    /// `kafka://host:port[,host:port]/topic` (all partitions of the topic).
    #[arg(long, env = "AGGREGATOR_SOURCE", default_value = "file:data/events")]
    source: String,
    /// A librdkafka consumer setting, `key=value` (repeatable; `;`-separated in the
    /// environment variable), e.g. `security.protocol=SASL_SSL`. Overrides --kafka-conf-file.
    #[arg(long, env = "AGGREGATOR_CONSUMER_CONF", value_delimiter = ';', value_parser = kafka_conf::parse_key_value, hide_env_values = true)]
    consumer_conf: Vec<(String, String)>,
    /// A file of librdkafka settings for the consumer and the dead-letter producer,
    /// `key=value` lines, `#` comments (e.g. a mounted secret with `security.protocol`,
    /// `sasl.username`, `sasl.password`).
    #[arg(long, env = "AGGREGATOR_KAFKA_CONF_FILE")]
    kafka_conf_file: Option<PathBuf>,
    /// A Kafka topic that also receives every bad record, unchanged, with the reason
    /// and source offset in the headers `x-reason` and `x-source-offset`.
    #[arg(long, env = "AGGREGATOR_DEAD_LETTER")]
    dead_letter: Option<String>,
    /// A librdkafka producer setting for --dead-letter, `key=value` (repeatable).
    /// Overrides --kafka-conf-file.
    #[arg(long, env = "AGGREGATOR_PRODUCER_CONF", value_delimiter = ';', value_parser = kafka_conf::parse_key_value, hide_env_values = true)]
    producer_conf: Vec<(String, String)>,
    /// A partition with nothing to read for this many seconds stops holding the
    /// watermark back (so windows of the busy partitions still close).
    #[arg(long, env = "AGGREGATOR_IDLE_TIMEOUT_SECONDS", default_value_t = 30.0)]
    idle_timeout_seconds: f64,
    /// Where results go: `sqlite:<path>` (embedded) or `mongodb://[user:password@]host[:port]/<database>`
    /// (`mongodb+srv://` too). The password never appears in logs or status.
    #[arg(long, env = "AGGREGATOR_SINK", default_value = "sqlite:data/results.sqlite", hide_env_values = true)]
    sink: String,
    /// The MongoDB database, if the sink URI does not name one (overrides the URI's).
    #[arg(long, env = "AGGREGATOR_DATABASE")]
    database: Option<String>,
    /// A file with one `CREATE TABLE` declaring the events' columns (default: the
    /// built-in user-interactions schema, `schemas/interactions.sql`).
    #[arg(long, env = "AGGREGATOR_SOURCE_SCHEMA")]
    source_schema: Option<PathBuf>,
    /// Directory of the pipelines' checkpoints (state + source offsets).
    #[arg(long, env = "AGGREGATOR_CHECKPOINT_DIR", default_value = "data/checkpoints")]
    checkpoint_dir: PathBuf,
    /// Process everything available at start, flush, checkpoint and exit.
    #[arg(long, env = "AGGREGATOR_AVAILABLE_NOW")]
    available_now: bool,
    /// Most records per micro-batch.
    #[arg(long, env = "AGGREGATOR_MAX_BATCH_RECORDS", default_value_t = 100_000)]
    max_batch_records: usize,
    /// Worker threads: the aggregation over the stream is split by a hash of its key
    /// into this many shards, and each micro-batch's JSON is decoded in this many
    /// chunks, at once (default: the machine's cores). The result does not depend on it.
    #[arg(long, env = "AGGREGATOR_WORKERS")]
    workers: Option<usize>,
    /// Records longer than this are bad records.
    #[arg(long, env = "AGGREGATOR_MAX_RECORD_BYTES", default_value_t = 1 << 20)]
    max_record_bytes: usize,
    /// Seconds between checkpoints (and always at exit).
    #[arg(long, env = "AGGREGATOR_CHECKPOINT_INTERVAL_SECONDS", default_value_t = 10.0)]
    checkpoint_interval_seconds: f64,
    /// How often an idle pipeline looks for new events, in milliseconds.
    #[arg(long, env = "AGGREGATOR_POLL_INTERVAL_MS", default_value_t = 500)]
    poll_interval_ms: u64,
    /// A Qlik app that receives every pipeline's result as a table, e.g.
    /// `ws://localhost:9076/app/results.qvf` (Qlik Core) or `wss://tenant/app/<app id>`
    /// (repeatable; `;`-separated in the environment variable). A file adds its own
    /// with `-- qlik: <url>` lines, and names the table with `-- qlik_table:`.
    #[arg(long = "qlik", env = "AGGREGATOR_QLIK", value_delimiter = ';')]
    qlik: Vec<String>,
    /// A header for the Qlik engines' WebSocket handshake, `Name: value`, e.g.
    /// `X-Qlik-Session: aggregator` (repeatable; `;`-separated in the variable).
    #[arg(long, env = "AGGREGATOR_QLIK_HEADERS", value_delimiter = ';', value_parser = aggregator::sink::qlik::parse_header, hide_env_values = true)]
    qlik_header: Vec<(String, String)>,
    /// A Bearer token for the Qlik engines (Qlik Sense JWT, Qlik Cloud API key).
    #[arg(long, env = "AGGREGATOR_QLIK_TOKEN", hide_env_values = true)]
    qlik_token: Option<String>,
    /// A Qlik reload starts once this many result rows changed…
    #[arg(long, env = "AGGREGATOR_QLIK_MIN_ROWS", default_value_t = 10_000)]
    qlik_min_rows: u64,
    /// …or when no change came for this many milliseconds…
    #[arg(long, env = "AGGREGATOR_QLIK_IDLE_MS", default_value_t = 1_000)]
    qlik_idle_ms: u64,
    /// …or when the oldest change waiting is this many milliseconds old.
    #[arg(long, env = "AGGREGATOR_QLIK_MAX_DELAY_MS", default_value_t = 10_000)]
    qlik_max_delay_ms: u64,
    /// Least time between the end of one reload of an app and the start of the next.
    #[arg(long, env = "AGGREGATOR_QLIK_MIN_INTERVAL_MS", default_value_t = 1_000)]
    qlik_min_interval_ms: u64,
    /// After a reload that took D, the next one waits at least this × D.
    #[arg(long, env = "AGGREGATOR_QLIK_PACE", default_value_t = 1.0)]
    qlik_pace: f64,
    /// Longest wait for a Qlik engine's answer (connect, open, set script, save).
    #[arg(long, env = "AGGREGATOR_QLIK_CALL_TIMEOUT_SECONDS", default_value_t = 30.0)]
    qlik_call_timeout_seconds: f64,
    /// Longest wait for one reload.
    #[arg(long, env = "AGGREGATOR_QLIK_RELOAD_TIMEOUT_SECONDS", default_value_t = 600.0)]
    qlik_reload_timeout_seconds: f64,
    /// At exit, how long to wait for the last changes to reach the Qlik apps.
    #[arg(long, env = "AGGREGATOR_QLIK_FLUSH_TIMEOUT_SECONDS", default_value_t = 30.0)]
    qlik_flush_timeout_seconds: f64,
    /// Serve Prometheus metrics at `http://ADDR/metrics`, e.g. `0.0.0.0:9464` (off by default).
    #[arg(long, env = "AGGREGATOR_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// At exit, write a JSON summary here: elapsed seconds, peak RSS, each pipeline's status.
    #[arg(long, env = "AGGREGATOR_SUMMARY_JSON")]
    summary_json: Option<PathBuf>,
}

fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}

/// Peak resident set size of this process in KiB (Linux; 0 elsewhere).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches("kB").trim().to_string()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colours for a terminal only: in log files they are escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    // Fail points from `FAILPOINTS` (test builds only; nothing in a normal build).
    let _fail_points = fail::FailScenario::setup();
    let started = std::time::Instant::now();
    // The file's Kafka settings first, so that the flags override them.
    let kafka_file = match &args.kafka_conf_file {
        Some(path) => kafka_conf::read_conf_file(path)?,
        None => Vec::new(),
    };
    let consumer_conf = kafka_file.iter().cloned().chain(args.consumer_conf).collect();
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("worker-{i}"))
        .build_global()
        .map_err(|e| anyhow::anyhow!("starting the worker threads: {e}"))?;
    let producer_conf = kafka_file.into_iter().chain(args.producer_conf).collect();
    let options = PipelineOptions {
        source_uri: args.source,
        sink_uri: args.sink,
        sink_database: args.database,
        checkpoint_dir: args.checkpoint_dir,
        available_now: args.available_now,
        max_batch_records: args.max_batch_records.max(1),
        max_record_bytes: args.max_record_bytes,
        checkpoint_interval: Duration::from_secs_f64(args.checkpoint_interval_seconds.max(0.0)),
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        workers,
        source: SourceOptions {
            consumer_conf,
            idle_timeout: Duration::from_secs_f64(args.idle_timeout_seconds.max(0.0)),
        },
        dead_letter_uri: args.dead_letter,
        producer_conf,
        qlik: QlikOptions {
            // Empty values (an unset variable passed on by docker-compose) mean none.
            targets: args.qlik.into_iter().filter(|t| !t.trim().is_empty()).collect(),
            headers: args
                .qlik_header
                .into_iter()
                .chain(
                    args.qlik_token
                        .filter(|t| !t.is_empty())
                        .map(|t| ("Authorization".to_string(), format!("Bearer {t}"))),
                )
                .collect(),
            min_rows: args.qlik_min_rows.max(1),
            idle: Duration::from_millis(args.qlik_idle_ms),
            max_delay: Duration::from_millis(args.qlik_max_delay_ms),
            min_interval: Duration::from_millis(args.qlik_min_interval_ms),
            pace: args.qlik_pace.max(0.0),
            call_timeout: seconds(args.qlik_call_timeout_seconds),
            reload_timeout: seconds(args.qlik_reload_timeout_seconds),
            flush_timeout: seconds(args.qlik_flush_timeout_seconds),
        },
        qlik_hub: None,
    };
    // A malformed --qlik is the command line's error, not every pipeline's.
    for target in &options.qlik.targets {
        aggregator::sink::qlik::QlikTarget::parse(target).map_err(anyhow::Error::msg)?;
    }
    if let Some(listen) = args.metrics_listen.as_deref().filter(|l| !l.trim().is_empty()) {
        aggregator::metrics::serve(listen)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let schema = runtime.block_on(async {
        match &args.source_schema {
            Some(path) => SourceSchema::from_file(path).await,
            None => SourceSchema::default_interactions().await,
        }
    })?;
    let shutdown = Shutdown::default();
    {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            // Ctrl-C, or SIGTERM from `docker stop`, systemd or kill.
            runtime.block_on(async {
                let mut terminate =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            });
            tracing::info!("stopping: finishing the current batches and checkpointing");
            shutdown.trigger();
        });
    }
    let summary = aggregator::supervisor::run(&args.sql, &schema, &options, shutdown)?;
    if let Some(path) = &args.summary_json {
        let report = serde_json::json!({
            "elapsed_seconds": started.elapsed().as_secs_f64(),
            "peak_rss_kib": peak_rss_kib(),
            "pipelines": summary.finished,
            // The state as the pipelines' last checkpoint found it (the metrics'
            // `aggregator_state_groups` and `aggregator_state_bytes`).
            "state": summary.finished.iter().map(|s| {
                let (m, labels) = (aggregator::metrics::metrics(), aggregator::metrics::Metrics::pipeline(&s.name));
                serde_json::json!({
                    "pipeline": s.name,
                    "groups": m.state_groups.get_or_create(&labels).get(),
                    "bytes": m.state_bytes.get_or_create(&labels).get(),
                })
            }).collect::<Vec<_>>(),
            "failed": summary.failed.iter().map(|(file, e)| serde_json::json!({"file": file, "error": e.to_string()})).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    for status in &summary.finished {
        tracing::info!(
            pipeline = %status.name, state = %status.state, consumed = status.events_in,
            ok = status.events_ok, bad = status.events_bad, late = status.events_late, "done"
        );
    }
    if !summary.failed.is_empty() {
        for (_, error) in &summary.failed {
            eprintln!("error: {error}");
        }
        anyhow::bail!("{} of {} pipelines failed", summary.failed.len(), summary.failed.len() + summary.finished.len());
    }
    Ok(())
}
