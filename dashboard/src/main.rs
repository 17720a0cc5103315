//! `dashboard --store <uri> [--listen ADDR]`: the web dashboard (see the library's docs).

use std::sync::Arc;

use clap::Parser;
use dashboard::AppState;

/// Serves the dashboard: pipeline status, live results and charts from the store.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The results store: `sqlite:<path>` or `mongodb://[user:password@]host[:port]/<database>`.
    #[arg(long, env = "DASHBOARD_STORE", default_value = "sqlite:data/results.sqlite", hide_env_values = true)]
    store: String,
    /// The MongoDB database, if the store URI does not name one.
    #[arg(long, env = "DASHBOARD_DATABASE")]
    database: Option<String>,
    /// Address to listen on (`0.0.0.0:8501` to be reachable from other machines).
    #[arg(long, env = "DASHBOARD_LISTEN", default_value = "127.0.0.1:8501")]
    listen: String,
    /// Seconds between the pages' live refreshes.
    #[arg(long, env = "DASHBOARD_REFRESH_SECONDS", default_value_t = 3.0)]
    refresh_seconds: f64,
    /// Alert rules (TOML, see the README); a bad file stops the start with its line and reason.
    #[arg(long, env = "DASHBOARD_ALERTS")]
    alerts: Option<std::path::PathBuf>,
    /// Seconds between evaluations of the alert rules.
    #[arg(long, env = "DASHBOARD_ALERTS_INTERVAL_SECONDS", default_value_t = 10.0)]
    alerts_interval_seconds: f64,
    /// A URL that receives a JSON POST on every transition to firing or resolved.
    #[arg(long, env = "DASHBOARD_WEBHOOK", hide_env_values = true)]
    webhook: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rules = match &args.alerts {
        Some(path) => dashboard::alerts::rules::load(path)?,
        None => Vec::new(),
    };
    // A store that is not up yet (MongoDB starting beside us) is waited for.
    let store = loop {
        match store::open(&args.store, args.database.as_deref()).await {
            Ok(store) => break store,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "store not answering; retrying in 2 s");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen on {}: {e}", args.listen))?;
    tracing::info!(store = %store.uri(), url = %format!("http://{}", listener.local_addr()?), "dashboard listening");
    let store: Arc<dyn store::Store> = Arc::from(store);
    let alerts = Arc::new(dashboard::alerts::AlertsView { rules: rules.clone(), ..Default::default() });
    if !rules.is_empty() {
        let engine = dashboard::alerts::Engine::new(rules);
        let webhook = args.webhook.clone().map(dashboard::alerts::webhook::Webhook::new);
        let interval = std::time::Duration::from_secs_f64(args.alerts_interval_seconds.max(0.1));
        tokio::spawn(dashboard::alerts::run(engine, store.clone(), webhook, alerts.clone(), interval));
    }
    let state = AppState { store, refresh_seconds: args.refresh_seconds.max(0.5), alerts };
    // Ctrl-C, or SIGTERM from `docker stop`: finish the requests in flight, then exit.
    let shutdown = async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    dashboard::run(listener, state, shutdown).await?;
    Ok(())
}
