//! Threshold alerts, evaluated in the dashboard process like Grafana's: each rule (or,
//! with `per_group`, each group of its pipeline's result) is an alert instance moving
//! Normal → Pending (condition holds, for less than the pending period) → Firing →
//! Recovering (condition no longer holds, for less than `keep_firing_seconds`; back to
//! Firing if it holds again) → Normal (resolved); NoData when the pipeline has no rows to judge, Error when the
//! rule cannot be evaluated (no such column, no number). Every transition is stored
//! in the store's alert collection with the value that caused it; instances that
//! start firing or resolve are notified through the notification policy
//! (`notify.rs`: grouping, group wait and interval, repeat) to contact points
//! (`contact_points.rs`: `--webhook`'s, and the rules file's webhooks and Slack).
//!
//! For windowed results a rule looks at the latest window only (the current one).

pub mod contact_points;
pub mod engine;
pub mod notify;
pub mod reload;
pub mod rules;
pub mod silences;

pub use contact_points::ContactPoint;
pub use engine::{AlertState, Engine, Instance};
pub use notify::{Notifier, Policy};
pub use rules::{Rule, RulesFile};

use std::sync::{Arc, RwLock};

use store::Store;

use crate::metrics::Metrics;

/// What the pages show of the alerts: the rules, every instance's current state, the
/// contact points and the policy, and why the rules file's last edit was not taken
/// (if it was not).
#[derive(Default)]
pub struct AlertsView {
    rules: RwLock<Vec<Rule>>,
    pub instances: RwLock<Vec<Instance>>,
    pub rules_error: RwLock<Option<String>>,
    notifications: RwLock<(Vec<ContactPoint>, Policy)>,
}

impl AlertsView {
    pub fn new(rules: Vec<Rule>) -> Self {
        AlertsView { rules: RwLock::new(rules), ..Default::default() }
    }

    pub fn rules(&self) -> Vec<Rule> {
        self.rules.read().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn set_rules(&self, rules: Vec<Rule>) {
        if let Ok(mut shown) = self.rules.write() {
            *shown = rules;
        }
    }

    /// The contact points (`--webhook`'s first) and the policy in force.
    pub fn set_notifications(&self, contact_points: Vec<ContactPoint>, policy: Policy) {
        if let Ok(mut shown) = self.notifications.write() {
            *shown = (contact_points, policy);
        }
    }

    pub fn contact_points(&self) -> Vec<ContactPoint> {
        self.notifications.read().map(|n| n.0.clone()).unwrap_or_default()
    }

    pub fn policy(&self) -> Policy {
        self.notifications.read().map(|n| n.1.clone()).unwrap_or_default()
    }

    pub fn rules_error(&self) -> Option<String> {
        self.rules_error.read().ok().and_then(|e| e.clone())
    }

    pub fn instances(&self) -> Vec<Instance> {
        self.instances.read().map(|i| i.clone()).unwrap_or_default()
    }
}

/// One evaluation at `now` (microseconds): every transition is stored in the store's
/// alert collection, and handed to `notifier` (if any), which sends the notifications
/// due; `metrics` count the evaluation, its transitions and the notifications sent,
/// and the instances' states.
pub async fn evaluate_once(
    engine: &mut Engine,
    store: &dyn Store,
    notifier: Option<&mut Notifier>,
    view: &AlertsView,
    metrics: &Metrics,
    now: i64,
) {
    let started = std::time::Instant::now();
    let mut notifier = notifier;
    if let Some(notifier) = notifier.as_deref_mut().filter(|n| !n.contact_points().is_empty()) {
        for arrived in notifier.retry_failed().await {
            metrics.webhook_request(arrived);
        }
        // Read once per evaluation; without them (a store error) nothing is silenced.
        notifier.set_silences(store.silences().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the silences");
            Vec::new()
        }));
    }
    for (transition, instance) in engine.evaluate(store, now).await {
        tracing::info!(rule = %transition.rule, instance = %transition.instance, from = %transition.from, to = %transition.to, value = ?transition.value, "alert");
        metrics.alert_transition(&transition.rule, &transition.to);
        if let Err(e) = store.record_alert(&transition).await {
            tracing::warn!(error = %e, "could not store an alert transition");
        }
        // Recovering is still firing (the receiver hears nothing); back to firing
        // from it is the same alert.
        let was_firing = ["firing", "recovering"].contains(&transition.from.as_str());
        if let Some(notifier) = notifier.as_deref_mut() {
            let contact_point =
                engine.rules.iter().find(|r| r.name == instance.rule).and_then(|r| r.contact_point.clone());
            notifier.observe(&instance, contact_point.as_deref(), was_firing, now);
        }
    }
    let instances = engine.instances();
    if let Some(notifier) = notifier {
        notifier.refresh(&instances);
        send_due(notifier, metrics, now).await;
    }
    metrics.alert_evaluation(started.elapsed().as_secs_f64(), &instances);
    if let Ok(mut shown) = view.instances.write() {
        *shown = instances;
    }
}

/// Sends the notifications due at `now`.
pub async fn send_due(notifier: &mut Notifier, metrics: &Metrics, now: i64) {
    for notification in notifier.due(now) {
        let alerts = notification.firing.len() + notification.resolved.len();
        let sent = notifier.send(&notification, now).await;
        match &sent {
            None => {
                tracing::debug!(group = %notification.group_key, "no --webhook: the default contact point sends nothing")
            }
            Some(Ok(())) => {
                tracing::info!(contact_point = %notification.contact_point, group = %notification.group_key, firing = notification.firing.len(), resolved = notification.resolved.len(), "alert notification sent")
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, group = %notification.group_key, alerts, "alert notification failed; it is sent again at the next evaluation")
            }
        }
        if let Some(sent) = sent {
            metrics.webhook_request(sent.is_ok());
        }
    }
}

/// Evaluates the rules every `interval`, for ever (the task is dropped at shutdown),
/// and sends each notification when it is due (between evaluations too: a group's
/// wait and intervals are its own); when `reloaded` brings a new rules file (it
/// changed), its rules, contact points and policy replace the old ones at once and
/// are evaluated (instances of rules that stay keep their state, groups stay).
pub async fn run(
    mut engine: Engine,
    store: Arc<dyn Store>,
    mut notifier: Notifier,
    view: Arc<AlertsView>,
    metrics: Arc<Metrics>,
    interval: std::time::Duration,
    mut reloaded: Option<tokio::sync::watch::Receiver<RulesFile>>,
) {
    let now = || chrono::Utc::now().timestamp_micros();
    // Firing instances restored from the store: as notified before the restart.
    let routes: Vec<(String, Option<String>)> =
        engine.rules.iter().map(|r| (r.name.clone(), r.contact_point.clone())).collect();
    let route = |rule: &str| routes.iter().find(|(r, _)| r == rule).and_then(|(_, c)| c.clone());
    notifier.restore(&engine.instances(), route, now());
    let mut next_evaluation = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_evaluation {
            evaluate_once(&mut engine, store.as_ref(), Some(&mut notifier), &view, &metrics, now()).await;
            next_evaluation = tokio::time::Instant::now() + interval;
        } else {
            send_due(&mut notifier, &metrics, now()).await;
        }
        // Until the next evaluation, or the next notification due before it (not
        // sooner than 50 ms: a due time just passed is not worth a busy loop).
        let at = now();
        let wake = match notifier.next_due(at) {
            Some(due) => {
                let notify =
                    tokio::time::Instant::now() + std::time::Duration::from_micros((due - at).max(50_000) as u64);
                notify.min(next_evaluation)
            }
            None => next_evaluation,
        };
        let changed = async {
            let Some(file) = reloaded.as_mut() else { return std::future::pending().await };
            match file.changed().await {
                Ok(()) => Some(file.borrow_and_update().clone()),
                // The watcher is gone: evaluate on the interval alone.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            Some(file) = changed => {
                tracing::info!(rules = file.rules.len(), contact_points = file.contact_points.len(), "alert rules reloaded");
                engine.set_rules(file.rules.clone());
                view.set_rules(file.rules);
                notifier.set_config(file.contact_points, file.policy);
                view.set_notifications(notifier.contact_points().to_vec(), notifier.policy().clone());
                next_evaluation = tokio::time::Instant::now();
            }
        }
    }
}
