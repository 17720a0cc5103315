//! `generator`: writes synthetic user-interaction events as JSON-lines batch files,
//! and with `--to kafka://host:port/topic` then publishes them to a topic.
//! Memory does not depend on the batch size: lines go straight to a buffered writer,
//! and are read back one at a time to publish.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use generator::batch_files;
use generator::events::{self, EventGenerator, EventOptions, TimestampFormat};
use generator::nexmark::{Layout, NexmarkGenerator};
use generator::publish::{self, PublishOptions};
use kafka_conf::KafkaUri;

/// The data set written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Dataset {
    /// User interactions (user_id, item_id, interaction_type, timestamp).
    Interactions,
    /// Nexmark's bids, flat (auction, bidder, price, channel, url, date_time, extra);
    /// --count counts bids.
    Bids,
    /// Nexmark's persons, auctions and bids in its single-topic layout
    /// (event_type, person, auction, bid).
    Nexmark,
}

/// Writes `count` user-interaction events (or Nexmark events) as JSON-lines batch files
/// into `out`, and optionally publishes them to a Kafka topic.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The data set: interactions, bids (Nexmark's bids alone) or nexmark (Nexmark's
    /// persons, auctions and bids, 1:3:46). With bids and nexmark, --users, --items,
    /// --out-of-order-*, --late-share and --timestamp-format do not apply.
    #[arg(long, env = "GENERATOR_DATASET", value_enum, default_value_t = Dataset::Interactions)]
    dataset: Dataset,
    /// Number of events to write.
    #[arg(long, env = "GENERATOR_COUNT", default_value_t = 100_000)]
    count: u64,
    /// Events per batch file.
    #[arg(long, env = "GENERATOR_BATCH_SIZE", default_value_t = 10_000)]
    batch_size: u64,
    /// Directory of the batch-file log (created if missing).
    #[arg(long, env = "GENERATOR_OUT", default_value = "data/events")]
    out: PathBuf,
    /// Distinct users (user_id is 1..=users).
    #[arg(long, env = "GENERATOR_USERS", default_value_t = 1_000)]
    users: u64,
    /// Distinct items (item_id is 1..=items).
    #[arg(long, env = "GENERATOR_ITEMS", default_value_t = 100)]
    items: u64,
    /// Seed of the random choices. With a seed (and without --start-time) the output
    /// is the same on every run: the simulated clock then starts at 2026-01-01T00:00:00.
    #[arg(long, env = "GENERATOR_SEED")]
    seed: Option<u64>,
    /// Seconds to pause after each batch file (a steady stream for live demos); with
    /// --to, after publishing each file.
    #[arg(long, env = "GENERATOR_INTERVAL_SECONDS", default_value_t = 0.0)]
    interval_seconds: f64,
    /// Publish the files, once written, to this topic: `kafka://host:port[,host:port]/topic`.
    #[arg(long, env = "GENERATOR_TO")]
    to: Option<String>,
    /// With --to: at most this many events per second (default: as fast as the broker takes them).
    #[arg(long, env = "GENERATOR_RATE")]
    rate: Option<f64>,
    /// With --to: a librdkafka producer setting, `key=value` (repeatable; `;`-separated
    /// in the environment variable), e.g. `compression.type=zstd`, `security.protocol=SASL_SSL`.
    /// Overrides --kafka-conf-file.
    #[arg(long, env = "GENERATOR_PRODUCER_CONF", value_delimiter = ';', value_parser = kafka_conf::parse_key_value, hide_env_values = true)]
    producer_conf: Vec<(String, String)>,
    /// With --to: a file of librdkafka settings, `key=value` lines, `#` comments (e.g. a
    /// mounted secret with `security.protocol`, `sasl.username`, `sasl.password`).
    #[arg(long, env = "GENERATOR_KAFKA_CONF_FILE")]
    kafka_conf_file: Option<PathBuf>,
    /// With --to: the JSON field whose value is the message key.
    #[arg(long, env = "GENERATOR_KEY_FIELD", default_value = "user_id")]
    key_field: String,
    /// With --to: --count is how many events the topic should hold. Publish only the
    /// difference from what it has ever received (nothing if it holds that many), so a
    /// second run (a one-shot container started again) does not publish twice.
    #[arg(long, env = "GENERATOR_TOP_UP", requires = "to")]
    top_up: bool,
    /// With --to: create the topic with this many partitions if it does not exist
    /// (otherwise the broker's auto-creation decides).
    #[arg(long, env = "GENERATOR_PARTITIONS")]
    partitions: Option<i32>,
    /// Event time of the first event (ISO-8601, UTC). Default: now, or a fixed time with --seed.
    #[arg(long, env = "GENERATOR_START_TIME")]
    start_time: Option<String>,
    /// Simulated events per second of event time: the clock advances 1/rate per event.
    #[arg(long, env = "GENERATOR_EVENTS_PER_SECOND", default_value_t = 100.0)]
    events_per_second: f64,
    /// Share (0..1) of events whose time is up to --out-of-order-seconds behind the clock.
    #[arg(long, env = "GENERATOR_OUT_OF_ORDER_SHARE", default_value_t = 0.0)]
    out_of_order_share: f64,
    /// How far out-of-order events may lag the clock.
    #[arg(long, env = "GENERATOR_OUT_OF_ORDER_SECONDS", default_value_t = 120.0)]
    out_of_order_seconds: f64,
    /// Share (0..1) of events that are late: 1 to 2 hours behind the clock, past any
    /// usual allowed delay, so a windowed pipeline drops them.
    #[arg(long, env = "GENERATOR_LATE_SHARE", default_value_t = 0.0)]
    late_share: f64,
    /// How timestamps are written: iso (no offset), iso-offset, epoch-ms, or mixed (all three).
    #[arg(long, env = "GENERATOR_TIMESTAMP_FORMAT", value_enum, default_value_t = TimestampFormat::Iso)]
    timestamp_format: TimestampFormat,
}

fn main() -> anyhow::Result<()> {
    // Colours only on a terminal: log files and `docker logs` get plain text.
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    let args = Args::parse();
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(args.users > 0 && args.items > 0, "--users and --items must be at least 1");
    let start_time = match (&args.start_time, args.seed) {
        (Some(text), _) => {
            events::parse_start_time(text).with_context(|| format!("--start-time {text:?} is not an ISO-8601 time"))?
        }
        (None, Some(_)) => events::parse_start_time("2026-01-01T00:00:00")?,
        (None, None) => chrono::Utc::now().timestamp_micros(),
    };
    let publish = match &args.to {
        Some(to) => {
            anyhow::ensure!(args.rate.is_none_or(|r| r > 0.0), "--rate must be positive");
            let mut producer_conf = match &args.kafka_conf_file {
                Some(path) => kafka_conf::read_conf_file(path)?,
                None => Vec::new(),
            };
            producer_conf.extend(args.producer_conf.iter().cloned());
            let options = PublishOptions {
                uri: KafkaUri::parse(to)?,
                producer_conf,
                key_field: args.key_field.clone(),
                interval: std::time::Duration::from_secs_f64(args.interval_seconds.max(0.0)),
                rate: args.rate,
                partitions: args.partitions,
                progress_bar: true,
            };
            // Before writing anything: an unreachable broker is an error at once.
            publish::check_reachable(&options)?;
            Some(options)
        }
        None => None,
    };
    let count = match &publish {
        Some(options) if args.top_up => {
            let held = publish::messages_in_topic(options)?;
            let missing = args.count.saturating_sub(held);
            if missing == 0 {
                tracing::info!(topic = %options.uri, held, wanted = args.count, "the topic already holds the events; nothing to publish");
                return Ok(());
            }
            tracing::info!(topic = %options.uri, held, wanted = args.count, publishing = missing, "topping the topic up");
            missing
        }
        _ => args.count,
    };
    let seed = args.seed.unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64);
    anyhow::ensure!(args.events_per_second > 0.0, "--events-per-second must be positive");
    // When publishing, the pause is between published files, not written ones.
    let write_pause = if publish.is_some() { 0.0 } else { args.interval_seconds.max(0.0) };
    let write_pause = std::time::Duration::from_secs_f64(write_pause);
    let written = match args.dataset {
        Dataset::Interactions => {
            let mut generator = EventGenerator::new(EventOptions {
                seed,
                users: args.users,
                items: args.items,
                start_time_micros: start_time,
                events_per_second: args.events_per_second,
                out_of_order_share: args.out_of_order_share,
                out_of_order_seconds: args.out_of_order_seconds,
                late_share: args.late_share,
                timestamp_format: args.timestamp_format,
            });
            batch_files::write_batches(&args.out, &mut generator, count, args.batch_size, write_pause)
        }
        Dataset::Bids | Dataset::Nexmark => {
            let layout = if args.dataset == Dataset::Bids { Layout::Bids } else { Layout::Nexmark };
            let mut generator = NexmarkGenerator::new(layout, seed, start_time, args.events_per_second);
            batch_files::write_batches(&args.out, &mut generator, count, args.batch_size, write_pause)
        }
    }
    .with_context(|| format!("writing batch files into {}", args.out.display()))?;
    tracing::info!(files = written.len(), events = count, out = %args.out.display(), "written");
    if let Some(options) = publish {
        let started = std::time::Instant::now();
        let sent = publish::publish(&written, count, &options)?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(events = sent, to = %options.uri, seconds, events_per_second = sent as f64 / seconds.max(1e-9), "published");
    }
    Ok(())
}
