//! The Qlik sink: each pipeline's result kept as a table in one or more Qlik apps.
//!
//! ```text
//! pipeline threads ──(version, rows changed)──▶ QlikFeed ──▶ one AppPush task per app
//!                                                             │ reads the result from the store
//!                                                             │ SetScript → DoReloadEx (partial) → DoSave
//!                                                             ▼
//!                                                       Qlik engine (QIX over WebSocket)
//! ```
//!
//! * [`qix`] — the engine client (JSON-RPC 2.0 over WebSocket);
//! * [`script`] — the load script: `Replace LOAD … INLINE` per table, every value
//!   escaped, plus a marker table with the result version the app holds;
//! * [`push`] — [`QlikHub`] (one per aggregator process, its own threads) and its
//!   per-app reload orchestrators.
//!
//! The store stays the one source of truth: a reload reads the pipeline's current
//! result from the store (SQLite or MongoDB) and replaces the app's table with it. So
//! the push never holds back the store sink (pipelines only note "changed" in memory),
//! a dead or slow engine holds back nothing but its own app, and after a restart the
//! app's marker says whether anything is missing.

pub mod push;
pub mod qix;
pub mod script;

use std::time::Duration;

pub use push::{QlikFeed, QlikHub};

/// How results are pushed to Qlik (flags `--qlik*`; every knob has a default).
#[derive(Clone)]
pub struct QlikOptions {
    /// Apps every pipeline pushes to (`--qlik`), besides a file's own `-- qlik:` lines.
    pub targets: Vec<String>,
    /// Handshake headers for every engine (`--qlik-header`, and `--qlik-token` as
    /// `Authorization: Bearer …`).
    pub headers: Vec<(String, String)>,
    /// A reload starts once this many result rows changed…
    pub min_rows: u64,
    /// …or when no change came for this long…
    pub idle: Duration,
    /// …or when the oldest change waiting is this old.
    pub max_delay: Duration,
    /// Never two reloads of an app closer than this (end to start)…
    pub min_interval: Duration,
    /// …nor closer than `pace` × the last reload's duration: the engine spends at most
    /// 1 / (1 + pace) of its time reloading, and a burst makes a few large reloads.
    pub pace: f64,
    pub call_timeout: Duration,
    pub reload_timeout: Duration,
    /// At exit, how long to wait for the last changes to reach the apps.
    pub flush_timeout: Duration,
}

/// Shows the headers' names only: their values are credentials (Bearer tokens, sessions).
impl std::fmt::Debug for QlikOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self.headers.iter().map(|(name, _)| format!("{name}: ***")).collect();
        let targets: Vec<String> =
            self.targets.iter().map(|t| QlikTarget::parse(t).map_or_else(|_| "?".into(), |t| t.display())).collect();
        f.debug_struct("QlikOptions")
            .field("targets", &targets)
            .field("headers", &headers)
            .field("min_rows", &self.min_rows)
            .field("idle", &self.idle)
            .field("max_delay", &self.max_delay)
            .field("min_interval", &self.min_interval)
            .field("pace", &self.pace)
            .field("call_timeout", &self.call_timeout)
            .field("reload_timeout", &self.reload_timeout)
            .field("flush_timeout", &self.flush_timeout)
            .finish()
    }
}

impl Default for QlikOptions {
    fn default() -> Self {
        QlikOptions {
            targets: Vec::new(),
            headers: Vec::new(),
            min_rows: 10_000,
            idle: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            min_interval: Duration::from_secs(1),
            pace: 1.0,
            call_timeout: Duration::from_secs(30),
            reload_timeout: Duration::from_secs(600),
            flush_timeout: Duration::from_secs(30),
        }
    }
}

/// A target: an engine's WebSocket URL and the app in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QlikTarget {
    /// `ws://host:9076/app/<app>` or `wss://…`, as given.
    pub url: String,
    /// The app (document) to open: the path segment after `/app/`, percent-decoded.
    pub app: String,
}

impl QlikTarget {
    /// Parses `ws[s]://host[:port]/…/app/<app>`.
    pub fn parse(url: &str) -> Result<QlikTarget, String> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("wss://"))
            .ok_or_else(|| format!("Qlik target {:?}: expected ws://host:port/app/<app> or wss://…", redact(url)))?;
        let path = rest.split(['?', '#']).next().unwrap_or_default();
        let app = path
            .rsplit_once("/app/")
            .map(|(_, app)| app.trim_end_matches('/'))
            .filter(|app| !app.is_empty() && !app.contains('/'))
            .ok_or_else(|| format!("Qlik target {:?}: no /app/<app> in its path", redact(url)))?;
        Ok(QlikTarget { url: url.to_string(), app: percent_decode(app) })
    }

    /// The URL without credentials, for logs and status.
    pub fn display(&self) -> String {
        redact(&self.url)
    }
}

/// `ws://user:secret@host/…` → `ws://***@host/…`.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[authority_end..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a `--qlik-header` value, `Name: value`.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| "expected `Name: value`".to_string())?;
    let name = name.trim();
    if name.is_empty() {
        return Err("expected `Name: value`".into());
    }
    Ok((name.to_string(), value.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_app_and_hide_credentials() {
        let t = QlikTarget::parse("ws://localhost:9076/app/sales%20eu.qvf").unwrap();
        assert_eq!(t.app, "sales eu.qvf");
        let t = QlikTarget::parse("wss://me:secret@tenant.qlikcloud.com/app/0f3a?reloadUri=x").unwrap();
        assert_eq!(t.app, "0f3a");
        assert_eq!(t.display(), "wss://***@tenant.qlikcloud.com/app/0f3a?reloadUri=x");
        assert!(QlikTarget::parse("http://host/app/x").is_err());
        assert!(QlikTarget::parse("ws://host:9076/").unwrap_err().contains("/app/<app>"));
    }

    #[test]
    fn headers_parse_as_name_and_value() {
        assert_eq!(parse_header("X-Qlik-Session: s1").unwrap(), ("X-Qlik-Session".into(), "s1".into()));
        assert!(parse_header("no colon").is_err());
    }
}
