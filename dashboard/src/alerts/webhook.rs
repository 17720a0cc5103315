//! The webhook: a JSON POST on every transition to firing and to resolved, in the
//! spirit of Grafana's webhook payload. The URL is never logged or shown (it often
//! carries a token).

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
}

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
        Webhook { url, client }
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
