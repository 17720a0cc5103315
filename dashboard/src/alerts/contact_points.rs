//! Contact points, as Grafana's: where a group's notification goes and in what shape.
//!
//! * `webhook`: a JSON POST in the shape of Grafana's webhook contact point (itself
//!   Alertmanager's webhook payload plus `title`, `state` and `message`): `status`,
//!   `groupKey`, `groupLabels`, `commonLabels`, and `alerts[]` each with its labels,
//!   annotations, values and `startsAt` / `endsAt`;
//! * `slack`: a Slack incoming webhook's message: `text` (what notifications and
//!   clients without blocks show) and `blocks` (a header, the firing and the resolved
//!   alerts, the group), one message per group.
//!
//! A URL is never logged or shown (it usually carries a token): the pages and the API
//! show where it comes from instead (`--webhook`, `url`, `env NAME`). A notification
//! that does not arrive is kept and sent again at each evaluation, up to
//! [`MAX_ATTEMPTS`] times; a newer one for the same group replaces it (it says more).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use store::iso_micros;

use super::notify::{Alert, Notification};

/// The shape of what a contact point receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Webhook,
    Slack,
}

impl Kind {
    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "webhook" => Some(Kind::Webhook),
            "slack" => Some(Kind::Slack),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Slack => "slack",
        }
    }
}

/// The name of the contact point `--webhook` gives, where rules go unless the policy
/// or the rule names another.
pub const DEFAULT: &str = "default";

/// A contact point: its name, kind, and URL (which serialising and `Debug` leave out).
#[derive(Clone, PartialEq, Serialize)]
pub struct ContactPoint {
    pub name: String,
    pub kind: Kind,
    /// Where the URL comes from, shown instead of it: `--webhook`, `url`, `env NAME`.
    pub url_from: String,
    #[serde(skip)]
    url: String,
}

impl std::fmt::Debug for ContactPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactPoint")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url_from", &self.url_from)
            .finish_non_exhaustive()
    }
}

impl ContactPoint {
    pub fn new(name: impl Into<String>, kind: Kind, url: impl Into<String>, url_from: impl Into<String>) -> Self {
        ContactPoint { name: name.into(), kind, url: url.into(), url_from: url_from.into() }
    }

    /// The `--webhook` contact point.
    pub fn default_webhook(url: impl Into<String>) -> Self {
        ContactPoint::new(DEFAULT, Kind::Webhook, url, "--webhook")
    }

    /// What this contact point receives for `notification` at `now` (microseconds).
    pub fn payload(&self, notification: &Notification, now: i64) -> Value {
        match self.kind {
            Kind::Webhook => webhook_payload(&self.name, notification, now),
            Kind::Slack => slack_payload(notification),
        }
    }
}

/// Why a notification did not arrive (without the URL, which often carries a token).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("contact point {0} answered {1}")]
    Status(String, reqwest::StatusCode),
    #[error("contact point {0}: the request failed: {1}")]
    Request(String, reqwest::Error),
    #[error("no contact point named {0}")]
    Unknown(String),
}

/// Attempts per notification, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// Notifications kept for another attempt, at most (the oldest go first).
const MAX_KEPT: usize = 1_000;

/// Sends payloads, and keeps those that did not arrive for another attempt.
pub struct Delivery {
    client: reqwest::Client,
    /// Notifications that did not arrive, oldest first.
    failed: Mutex<VecDeque<Failed>>,
}

struct Failed {
    contact_point: String,
    group_key: String,
    payload: Value,
    attempts: u32,
}

impl Default for Delivery {
    fn default() -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client");
        Delivery { client, failed: Mutex::new(VecDeque::new()) }
    }
}

impl Delivery {
    /// Sends `payload` for `group_key` to `to`; if it does not arrive, keeps it for
    /// [`Delivery::retry_failed`]. A notification of the group still waiting is moot.
    pub async fn send(&self, to: &ContactPoint, group_key: &str, payload: Value) -> Result<(), DeliveryError> {
        let sent = self.post(to, &payload).await;
        if let Ok(mut failed) = self.failed.lock() {
            failed.retain(|f| !(f.contact_point == to.name && f.group_key == group_key));
            if sent.is_err() {
                let (contact_point, group_key) = (to.name.clone(), group_key.to_string());
                failed.push_back(Failed { contact_point, group_key, payload, attempts: 1 });
                while failed.len() > MAX_KEPT {
                    failed.pop_front();
                }
            }
        }
        sent
    }

    /// Sends again the notifications that did not arrive, to the contact points of
    /// those names in `contact_points` (as the rules file says now); returns, per
    /// attempt, whether it arrived. One that fails its last attempt is dropped (and logged).
    pub async fn retry_failed(&self, contact_points: &[ContactPoint]) -> Vec<bool> {
        let waiting: Vec<Failed> = match self.failed.lock() {
            Ok(mut failed) => failed.drain(..).collect(),
            Err(_) => return Vec::new(),
        };
        let mut outcomes = Vec::new();
        for mut f in waiting {
            let Some(to) = contact_points.iter().find(|c| c.name == f.contact_point) else {
                tracing::warn!(contact_point = %f.contact_point, group = %f.group_key, "alert notification dropped: its contact point is gone");
                continue;
            };
            let sent = self.post(to, &f.payload).await;
            outcomes.push(sent.is_ok());
            f.attempts += 1;
            match sent {
                Ok(()) => {
                    tracing::info!(contact_point = %to.name, group = %f.group_key, attempts = f.attempts, "alert notification delivered on retry")
                }
                Err(e) if f.attempts >= MAX_ATTEMPTS => {
                    tracing::warn!(error = %e, group = %f.group_key, attempts = f.attempts, "alert notification given up")
                }
                Err(_) => {
                    if let Ok(mut failed) = self.failed.lock() {
                        // Unless a newer one for the group came in meanwhile.
                        if !failed.iter().any(|n| n.contact_point == f.contact_point && n.group_key == f.group_key) {
                            failed.push_back(f);
                        }
                    }
                }
            }
        }
        outcomes
    }

    /// POSTs `payload` to `to`, once. The error never holds the URL.
    async fn post(&self, to: &ContactPoint, payload: &Value) -> Result<(), DeliveryError> {
        match self.client.post(&to.url).json(payload).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(DeliveryError::Status(to.name.clone(), response.status())),
            Err(e) => Err(DeliveryError::Request(to.name.clone(), e.without_url())),
        }
    }
}

/// `[FIRING:2] high (p critical)`, as Grafana titles a group: the status (with the
/// count of firing alerts), the group labels' values, then the other labels all its
/// alerts share.
pub fn title(notification: &Notification) -> String {
    let status = match notification.firing.len() {
        0 => "RESOLVED".to_string(),
        n => format!("FIRING:{n}"),
    };
    let group: Vec<&str> = notification.group_labels.values().map(String::as_str).collect();
    let common = common_labels(notification);
    let rest: Vec<&str> =
        common.iter().filter(|(k, _)| !notification.group_labels.contains_key(*k)).map(|(_, v)| v.as_str()).collect();
    let mut title = format!("[{status}] {}", group.join(" "));
    if !rest.is_empty() {
        title.push_str(&format!(" ({})", rest.join(" ")));
    }
    title
}

/// The labels every alert of the notification has, with the same value.
fn common_labels(notification: &Notification) -> BTreeMap<String, String> {
    let mut alerts = notification.alerts();
    let Some(first) = alerts.next() else { return BTreeMap::new() };
    let mut common = first.labels();
    for alert in alerts {
        let labels = alert.labels();
        common.retain(|k, v| labels.get(k) == Some(v));
    }
    common
}

/// One line of text per alert: `high item_id=7 on p: 42 (critical)`.
fn summary(alert: &Alert) -> String {
    let i = &alert.instance;
    let instance = if i.instance.is_empty() { String::new() } else { format!(" {}", i.instance) };
    let value = i.value.map_or_else(|| "no value".to_string(), |v| v.to_string());
    format!("{}{instance} on {}: {value} ({})", i.rule, i.pipeline, i.severity)
}

fn webhook_payload(receiver: &str, notification: &Notification, now: i64) -> Value {
    let alert = |a: &Alert| {
        let status = if a.resolved_at.is_some() { "resolved" } else { "firing" };
        let starts_at = a.instance.firing_since.map(iso_micros).unwrap_or_else(|| iso_micros(now));
        // Alertmanager's "no end yet".
        let ends_at = a.resolved_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), iso_micros);
        json!({
            "status": status,
            "labels": a.labels(),
            "annotations": { "summary": summary(a) },
            "values": { "value": a.instance.value },
            "startsAt": starts_at,
            "endsAt": ends_at,
        })
    };
    let firing = !notification.firing.is_empty();
    let mut message = Vec::new();
    for (heading, alerts) in [("Firing", &notification.firing), ("Resolved", &notification.resolved)] {
        if !alerts.is_empty() {
            message.push(format!("{heading}:"));
            message.extend(alerts.iter().map(|a| format!("- {}", summary(a))));
        }
    }
    json!({
        "receiver": receiver,
        "status": if firing { "firing" } else { "resolved" },
        "state": if firing { "alerting" } else { "ok" },
        "alerts": notification.alerts().map(alert).collect::<Vec<_>>(),
        "groupKey": notification.group_key,
        "groupLabels": notification.group_labels,
        "commonLabels": common_labels(notification),
        "commonAnnotations": {},
        "truncatedAlerts": 0,
        "version": "1",
        "title": title(notification),
        "message": message.join("\n"),
    })
}

/// Slack's limits: a header's text, a section's text.
const SLACK_HEADER_CHARS: usize = 150;
const SLACK_SECTION_CHARS: usize = 3_000;

/// Text for Slack's `mrkdwn`: `&`, `<` and `>` are its control characters (`<…>` makes
/// a link or a mention), so values from the data are escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `text` cut to `max` characters, with `…` where it was cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if text.chars().count() > max => format!("{}…", &text[..at]),
        _ => text.to_string(),
    }
}

fn slack_payload(notification: &Notification) -> Value {
    let title = title(notification);
    let mut blocks =
        vec![json!({"type": "header", "text": {"type": "plain_text", "text": cut(&title, SLACK_HEADER_CHARS)}})];
    for (heading, alerts) in [("Firing", &notification.firing), ("Resolved", &notification.resolved)] {
        if alerts.is_empty() {
            continue;
        }
        // As many lines as fit in a section, then how many more there are.
        let mut text = format!("*{heading}*");
        for (shown, alert) in alerts.iter().enumerate() {
            let since = match (alert.resolved_at, alert.instance.firing_since) {
                (Some(at), _) => format!(", resolved {}", iso_micros(at)),
                (None, Some(at)) => format!(", since {}", iso_micros(at)),
                (None, None) => String::new(),
            };
            let line = format!("\n• {}{}", slack_escape(&summary(alert)), since);
            let more = format!("\n… and {} more", alerts.len() - shown);
            if text.len() + line.len() + more.len() > SLACK_SECTION_CHARS {
                text.push_str(&more);
                break;
            }
            text.push_str(&line);
        }
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
    }
    let group: Vec<String> = notification.group_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let context = cut(&slack_escape(&format!("group {}", group.join(", "))), SLACK_SECTION_CHARS);
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    json!({ "text": title, "blocks": blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_a_character_and_slack_controls_are_escaped() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abcd", 4), "abcd");
        assert_eq!(cut("ééééé", 3), "éé…");
        assert_eq!(slack_escape("<@here> & <http://x|y>"), "&lt;@here&gt; &amp; &lt;http://x|y&gt;");
    }

    #[test]
    fn debug_never_shows_the_url() {
        let c = ContactPoint::new("ops", Kind::Slack, "https://hooks.slack.com/services/T0/B0/secret", "url");
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!shown.contains("secret") && shown.contains("ops"), "{shown}");
    }
}
