//! Silences, as Grafana's: while a silence is active, the alert instances whose labels
//! all match its matchers are evaluated and recorded as usual, but not notified. They
//! are created and expired from `/alerts` and the API, and kept in the store.

use std::collections::BTreeMap;

use store::{Silence, iso_micros, parse_iso_micros};

use super::Instance;

/// The labels an instance is matched by: `alertname`, `pipeline`, `severity` and its
/// group's columns.
pub fn labels(instance: &Instance) -> BTreeMap<String, String> {
    let mut labels = instance.labels.clone();
    labels.insert("alertname".into(), instance.rule.clone());
    labels.insert("pipeline".into(), instance.pipeline.clone());
    labels.insert("severity".into(), instance.severity.clone());
    labels
}

/// Whether `silence` is in force at `now` (microseconds).
pub fn is_active(silence: &Silence, now: i64) -> bool {
    let at = |text: &str| parse_iso_micros(text).unwrap_or_default();
    at(&silence.created_at) <= now && now < at(&silence.ends_at)
}

/// The active silence that covers `instance` at `now`, if any.
pub fn silencing<'a>(silences: &'a [Silence], instance: &Instance, now: i64) -> Option<&'a Silence> {
    let labels = labels(instance);
    silences.iter().find(|s| is_active(s, now) && s.matchers.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A new silence from `now` for `minutes`.
pub fn new(matchers: BTreeMap<String, String>, minutes: f64, comment: String, now: i64) -> Result<Silence, String> {
    if matchers.is_empty() {
        return Err("a silence needs at least one matcher (label=value)".into());
    }
    if !(minutes > 0.0 && minutes.is_finite()) {
        return Err("a silence lasts a positive number of minutes".into());
    }
    Ok(Silence {
        // Unique for silences made by people: the microsecond it was made.
        id: format!("{now:x}"),
        matchers,
        comment,
        created_at: iso_micros(now),
        ends_at: iso_micros(now + (minutes * 60e6) as i64),
    })
}

/// Matchers written `alertname=high, item_id=7`.
pub fn parse_matchers(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| match m.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(format!("`{m}` is not label=value")),
        })
        .collect()
}
