//! `dashboard --store <uri> [--listen ADDR]`: the web dashboard (see the library's docs).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use dashboard::AppState;
use dashboard::auth::{Access, Credentials, Secret};

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
    /// Address to listen on (`0.0.0.0:8501` to be reachable from other machines: then a
    /// password or token is required, or --allow-unauthenticated).
    #[arg(long, env = "DASHBOARD_LISTEN", default_value = "127.0.0.1:8501")]
    listen: String,
    /// The user name of HTTP basic auth (with the password).
    #[arg(long, env = "DASHBOARD_AUTH_USER", default_value = "admin")]
    auth_user: String,
    /// A file holding the password of HTTP basic auth (a trailing newline is ignored).
    /// Or the password itself in env DASHBOARD_PASSWORD (no flag takes it: other local
    /// users can read command lines).
    #[arg(long, env = "DASHBOARD_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// A file holding a token accepted as `Authorization: Bearer <token>` (API clients,
    /// Prometheus). Or the token itself in env DASHBOARD_TOKEN.
    #[arg(long, env = "DASHBOARD_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Serve without credentials on an address reachable from other machines.
    #[arg(long, env = "DASHBOARD_ALLOW_UNAUTHENTICATED", value_parser = clap::builder::BoolishValueParser::new())]
    allow_unauthenticated: bool,
    /// Seconds between the pages' live refreshes.
    #[arg(long, env = "DASHBOARD_REFRESH_SECONDS", default_value_t = 3.0)]
    refresh_seconds: f64,
    /// Alert rules (TOML, see the README); a bad file stops the start with its line and reason.
    #[arg(long, env = "DASHBOARD_ALERTS")]
    alerts: Option<std::path::PathBuf>,
    /// Seconds between evaluations of the alert rules.
    #[arg(long, env = "DASHBOARD_ALERTS_INTERVAL_SECONDS", default_value_t = 10.0)]
    alerts_interval_seconds: f64,
    /// The URL of the `default` contact point: it receives the notifications (JSON
    /// POSTs) of alerts that start firing or resolve, unless the rules file routes them
    /// elsewhere (see the README's contact points and policy).
    #[arg(long, env = "DASHBOARD_WEBHOOK", hide_env_values = true)]
    webhook: Option<String>,
    /// A folder of panel files (`*.toml`, one panel each; see the README), watched while
    /// running. Default: `panels` if that folder exists; without one the pages show only
    /// their automatic charts.
    #[arg(long, env = "DASHBOARD_PANELS")]
    panels: Option<PathBuf>,
}

/// A secret from the environment variable `var` or from `file`, not both. An empty
/// variable counts as unset (compose passes unset variables as empty ones).
fn secret(var: &str, file: Option<&PathBuf>, flag: &str) -> anyhow::Result<Option<Secret>> {
    let from_env = std::env::var_os(var).filter(|v| !v.is_empty());
    match (from_env, file) {
        (Some(_), Some(_)) => anyhow::bail!("both {var} and {flag} are set: use one"),
        (Some(value), None) => Ok(Some(Secret::new(value.into_encoded_bytes(), var)?)),
        (None, Some(path)) => Ok(Some(Secret::from_file(path)?)),
        (None, None) => Ok(None),
    }
}

/// Who may see the dashboard on `listen` (see `dashboard::auth`), logged without secrets.
async fn access(args: &Args) -> anyhow::Result<Access> {
    let password = secret("DASHBOARD_PASSWORD", args.password_file.as_ref(), "--password-file")?;
    let token = secret("DASHBOARD_TOKEN", args.token_file.as_ref(), "--token-file")?;
    let credentials = Credentials::new(&args.auth_user, password, token)?;
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&args.listen)
        .await
        .with_context(|| format!("--listen {}: not an address to listen on", args.listen))?
        .collect();
    let access = Access::decide(credentials, &args.listen, &addresses, args.allow_unauthenticated)?;
    match &access {
        Access::Protected(c) => tracing::info!(
            basic_auth_user = c.has_password().then_some(c.user()),
            bearer_token = c.has_token(),
            "credentials required on every route but /healthz"
        ),
        Access::Open if dashboard::auth::is_loopback(&addresses) => {
            tracing::info!("no credentials: listening on loopback, only this machine can connect")
        }
        Access::Open => tracing::warn!(
            listen = %args.listen,
            "--allow-unauthenticated: every result and the SQL of every pipeline are served to anyone who can reach \
             this address"
        ),
    }
    Ok(access)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in log files or `docker logs`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    // Before the store, which may be waited for: a dashboard that would serve openly
    // where it must not stops at once.
    let access = Arc::new(access(&args).await?);
    let rules = match &args.alerts {
        Some(path) => dashboard::alerts::rules::load_file(path)?,
        None => dashboard::alerts::RulesFile::default(),
    };
    let notifier =
        dashboard::alerts::Notifier::new(args.webhook.clone(), rules.contact_points.clone(), rules.policy.clone());
    if args.alerts.is_some() {
        // Names and kinds only: the URLs carry tokens.
        let contact_points: Vec<String> =
            notifier.contact_points().iter().map(|c| format!("{} ({})", c.name, c.kind.as_str())).collect();
        tracing::info!(rules = rules.rules.len(), contact_points = ?contact_points, "alert rules loaded");
    }
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
    let metrics = Arc::new(dashboard::metrics::Metrics::new());
    let store: Arc<dyn store::Store> =
        Arc::new(dashboard::metrics::MeteredStore::new(Arc::from(store), metrics.clone()));
    let alerts = Arc::new(dashboard::alerts::AlertsView::new(rules.rules.clone()));
    alerts.set_notifications(notifier.contact_points().to_vec(), notifier.policy().clone());
    // Kept for the life of the process: it watches the rules file.
    let mut _rules_watcher = None;
    if let Some(path) = &args.alerts {
        // Each instance as its latest stored transition left it (not all normal again).
        let history = store.alert_history(dashboard::alerts::engine::RESTORE_HISTORY).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the alert history; every alert starts normal");
            Vec::new()
        });
        let engine = dashboard::alerts::Engine::restored(rules.rules.clone(), &history);
        let reloaded = match dashboard::alerts::reload::watch(path, rules, alerts.clone()) {
            Ok((watcher, reloaded)) => {
                _rules_watcher = Some(watcher);
                Some(reloaded)
            }
            Err(e) => {
                tracing::warn!(error = %e, file = %path.display(), "cannot watch the rules file; edits need a restart");
                None
            }
        };
        let interval = std::time::Duration::from_secs_f64(args.alerts_interval_seconds.max(0.1));
        let run = dashboard::alerts::run(
            engine,
            store.clone(),
            notifier,
            alerts.clone(),
            metrics.clone(),
            interval,
            reloaded,
        );
        tokio::spawn(run);
    }
    // The pipelines' health over time, for the overview (kept in the store).
    tokio::spawn(dashboard::health::run(store.clone(), dashboard::health::Sampler::default()));
    // The panels folder, read now and again after each change in it.
    let panels_dir = args.panels.clone().or_else(|| Some(PathBuf::from("panels")).filter(|d| d.is_dir()));
    let panels = Arc::new(dashboard::panels::PanelsView::default());
    let mut _panels_watcher = None;
    if let Some(dir) = &panels_dir {
        let loaded = dashboard::panels::load_dir(dir);
        for e in &loaded.errors {
            tracing::warn!(error = %e, "a panel file was not taken");
        }
        tracing::info!(folder = %dir.display(), panels = loaded.panels.len(), "panels loaded");
        panels.set(loaded);
        match dashboard::panels::watch(dir, panels.clone()) {
            Ok(watcher) => _panels_watcher = Some(watcher),
            Err(e) => {
                tracing::warn!(error = %e, folder = %dir.display(), "cannot watch the panels folder; edits need a restart")
            }
        }
    }
    let state = AppState { store, refresh_seconds: args.refresh_seconds.max(0.5), alerts, access, metrics, panels };
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
