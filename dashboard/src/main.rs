//! `dashboard`: placeholder until the web dashboard's issue.
//!
//! Prints every pipeline's status and result-table size from the store (SQLite or
//! MongoDB, through `store::Store`), refreshing every few seconds, so the embedded
//! demo shows its live aggregates in the terminal. The web UI (axum + askama on port
//! 8501) replaces this.

use std::time::Duration;

use clap::Parser;
use store::Store;

/// Shows pipeline status and results from the store (terminal placeholder).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The results store: `sqlite:<path>` or `mongodb://[user:password@]host[:port]/<database>`.
    #[arg(long, env = "DASHBOARD_STORE", default_value = "sqlite:data/results.sqlite", hide_env_values = true)]
    store: String,
    /// The MongoDB database, if the store URI does not name one.
    #[arg(long, env = "DASHBOARD_DATABASE")]
    database: Option<String>,
    /// Seconds between refreshes.
    #[arg(long, env = "DASHBOARD_INTERVAL_SECONDS", default_value_t = 2.0)]
    interval_seconds: f64,
    /// Print once and exit.
    #[arg(long)]
    once: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut store: Option<Box<dyn Store>> = None;
        loop {
            if store.is_none() {
                match store::open(&args.store, args.database.as_deref()).await {
                    Ok(opened) => store = Some(opened),
                    Err(e) if e.is_retryable() && !args.once => eprintln!("dashboard: {e}"),
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(opened) = &store {
                match render(opened.as_ref()).await {
                    Ok(text) => println!("{text}"),
                    Err(e) if args.once => return Err(e.into()),
                    Err(e) => eprintln!("dashboard: {e}"),
                }
            }
            if args.once {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs_f64(args.interval_seconds.max(0.1))).await;
        }
    })
}

async fn render(store: &dyn Store) -> store::Result<String> {
    let mut out = format!(
        "{:<28} {:<10} {:>10} {:>10} {:>6} {:>6} {:>8}  {}\n",
        "pipeline", "state", "consumed", "ok", "bad", "late", "rows", "watermark"
    );
    for s in store.statuses().await? {
        let rows = store.read_table(&s.name).await?.map_or(0, |t| t.rows.len());
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
