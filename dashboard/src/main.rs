//! `dashboard`: placeholder until the web dashboard's issue.
//!
//! Prints every pipeline's status and result-table size from the store, refreshing
//! every few seconds, so the embedded demo shows its live aggregates in the
//! terminal. The web UI (axum + askama on port 8501) replaces this.

use std::time::Duration;

use clap::Parser;
use store::{SqliteStore, StoreUri};

/// Shows pipeline status and results from the store (terminal placeholder).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The results store: `sqlite:<path>`.
    #[arg(long, env = "DASHBOARD_STORE", default_value = "sqlite:data/results.sqlite")]
    store: String,
    /// Seconds between refreshes.
    #[arg(long, env = "DASHBOARD_INTERVAL_SECONDS", default_value_t = 2.0)]
    interval_seconds: f64,
    /// Print once and exit.
    #[arg(long)]
    once: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let StoreUri::Sqlite(path) = StoreUri::parse(&args.store)?;
    loop {
        match SqliteStore::open(&path).and_then(|store| render(&store)) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("dashboard: {e}"),
        }
        if args.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(args.interval_seconds.max(0.1)));
    }
}

fn render(store: &SqliteStore) -> store::Result<String> {
    let mut out = format!(
        "{:<28} {:<10} {:>10} {:>10} {:>6} {:>6} {:>8}  {}\n",
        "pipeline", "state", "consumed", "ok", "bad", "late", "rows", "watermark"
    );
    for s in store.statuses()? {
        let rows = store.read_table(&s.name).map(|(_, rows)| rows.len()).unwrap_or(0);
        out.push_str(&format!(
            "{:<28} {:<10} {:>10} {:>10} {:>6} {:>6} {:>8}  {}\n",
            s.name,
            s.state,
            s.events_in,
            s.events_ok,
            s.events_bad,
            s.events_late,
            rows,
            s.watermark.unwrap_or_default()
        ));
        if let Some(error) = s.last_error {
            out.push_str(&format!("    error: {error}\n"));
        }
    }
    Ok(out)
}
