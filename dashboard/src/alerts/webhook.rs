//! The webhook: a JSON POST on every transition to firing and to resolved, in the
//! spirit of Grafana's webhook payload. The URL is never logged or shown (it often
//! carries a token). A notification that does not arrive is kept and sent again at
//! each evaluation, up to [`MAX_ATTEMPTS`] times; a newer one for the same instance
//! replaces it (a resolve that arrives makes a lost firing moot).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use store::iso_micros;

use super::{AlertState, Instance};

/// Why a notification did not arrive (without the URL, which often carries a token).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the webhook request failed: {0}")]
    Request(reqwest::Error),
}

pub struct Webhook {
    url: String,
    client: reqwest::Client,
    /// Notifications that did not arrive, oldest first: (rule, instance), payload, attempts.
    failed: Mutex<VecDeque<Failed>>,
}

struct Failed {
    instance: (String, String),
    payload: Value,
    attempts: u32,
}

/// Attempts per notification, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// Notifications kept for another attempt, at most (the oldest go first).
const MAX_KEPT: usize = 1_000;

/// The payload for `instance`, which just became firing or resolved at `now`.
pub fn payload(instance: &Instance, now: i64) -> Value {
    let status = if instance.state == AlertState::Firing { "firing" } else { "resolved" };
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), instance.rule.clone().into());
    labels.insert("pipeline".into(), instance.pipeline.clone().into());
    labels.insert("severity".into(), instance.severity.clone().into());
    for (k, v) in &instance.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone().into());
    }
    let starts_at = instance.firing_since.map(iso_micros).unwrap_or_else(|| iso_micros(now));
    let ends_at = if status == "resolved" { iso_micros(now) } else { "0001-01-01T00:00:00Z".into() };
    let value = instance.value.map_or(Value::Null, |v| json!(v));
    let summary = format!(
        "{} {} {}{}",
        instance.rule,
        status,
        instance.pipeline,
        if instance.instance.is_empty() { String::new() } else { format!(" ({})", instance.instance) }
    );
    json!({
        "receiver": "dashboard",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": { "summary": summary },
            "values": { "value": value },
            "startsAt": starts_at,
            "endsAt": ends_at,
        }],
        "groupLabels": { "alertname": instance.rule },
        "commonLabels": labels,
        "title": format!("[{}] {}", status.to_uppercase(), instance.rule),
        "message": summary,
    })
}

impl Webhook {
    pub fn new(url: String) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client");
        Webhook { url, client, failed: Mutex::new(VecDeque::new()) }
    }

    /// Sends the notification of `instance` (rule, instance); if it does not arrive,
    /// keeps it for [`Webhook::retry_failed`]. Returns whether it arrived.
    pub async fn notify(&self, instance: (String, String), payload: Value) -> Result<(), WebhookError> {
        let sent = self.send(&payload).await;
        if let Ok(mut failed) = self.failed.lock() {
            // Newer news for the instance: an older notification waiting is moot.
            failed.retain(|f| f.instance != instance);
            if sent.is_err() {
                failed.push_back(Failed { instance, payload, attempts: 1 });
                while failed.len() > MAX_KEPT {
                    failed.pop_front();
                }
            }
        }
        sent
    }

    /// Sends again the notifications that did not arrive; returns, per attempt,
    /// whether it arrived. One that fails its last attempt is dropped (and logged).
    pub async fn retry_failed(&self) -> Vec<bool> {
        let waiting: Vec<Failed> = match self.failed.lock() {
            Ok(mut failed) => failed.drain(..).collect(),
            Err(_) => return Vec::new(),
        };
        let mut outcomes = Vec::new();
        for mut f in waiting {
            let sent = self.send(&f.payload).await;
            outcomes.push(sent.is_ok());
            f.attempts += 1;
            match sent {
                Ok(()) => {
                    tracing::info!(rule = %f.instance.0, attempts = f.attempts, "alert notification delivered on retry")
                }
                Err(e) if f.attempts >= MAX_ATTEMPTS => {
                    tracing::warn!(error = %e, rule = %f.instance.0, attempts = f.attempts, "alert notification given up")
                }
                Err(_) => {
                    if let Ok(mut failed) = self.failed.lock() {
                        // Unless a newer one for the instance came in meanwhile.
                        if !failed.iter().any(|n| n.instance == f.instance) {
                            failed.push_back(f);
                        }
                    }
                }
            }
        }
        outcomes
    }

    /// Sends `payload`, once (no retry). The error never holds the URL.
    pub async fn send(&self, payload: &Value) -> Result<(), WebhookError> {
        match self.client.post(&self.url).json(payload).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(WebhookError::Status(response.status())),
            Err(e) => Err(WebhookError::Request(e.without_url())),
        }
    }
}
