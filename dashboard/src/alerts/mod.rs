//! Threshold alerts, evaluated in the dashboard process like Grafana's: each rule (or,
//! with `per_group`, each group of its pipeline's result) is an alert instance moving
//! Normal → Pending (condition holds, for less than the pending period) → Firing →
//! Recovering (condition no longer holds, for less than `keep_firing_seconds`; back to
//! Firing if it holds again) → Normal (resolved); NoData when the pipeline has no rows to judge, Error when the
//! rule cannot be evaluated (no such column, no number). Every transition is stored
//! in the store's alert collection with the value that caused it; transitions to
//! firing and resolved are POSTed to the optional webhook.
//!
//! For windowed results a rule looks at the latest window only (the current one).

pub mod engine;
pub mod reload;
pub mod rules;
pub mod silences;
pub mod webhook;

pub use engine::{AlertState, Engine, Instance};
pub use rules::{Rule, RulesError};

use std::sync::{Arc, RwLock};

use store::Store;

use crate::metrics::Metrics;

/// What the pages show of the alerts: the rules, every instance's current state, and
/// why the rules file's last edit was not taken (if it was not).
#[derive(Default)]
pub struct AlertsView {
    rules: RwLock<Vec<Rule>>,
    pub instances: RwLock<Vec<Instance>>,
    pub rules_error: RwLock<Option<String>>,
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

    pub fn rules_error(&self) -> Option<String> {
        self.rules_error.read().ok().and_then(|e| e.clone())
    }

    pub fn instances(&self) -> Vec<Instance> {
        self.instances.read().map(|i| i.clone()).unwrap_or_default()
    }
}

/// One evaluation at `now` (microseconds): every transition is stored in the store's
/// alert collection, and sent to the webhook if it is to firing or a resolve; `metrics`
/// count the evaluation, its transitions and webhook requests, and the instances' states.
pub async fn evaluate_once(
    engine: &mut Engine,
    store: &dyn Store,
    webhook: Option<&webhook::Webhook>,
    view: &AlertsView,
    metrics: &Metrics,
    now: i64,
) {
    let started = std::time::Instant::now();
    if let Some(webhook) = webhook {
        for arrived in webhook.retry_failed().await {
            metrics.webhook_request(arrived);
        }
    }
    // Read once per evaluation; without them (a store error) nothing is silenced.
    let silences = match webhook {
        Some(_) => store.silences().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the silences");
            Vec::new()
        }),
        None => Vec::new(),
    };
    for (transition, instance) in engine.evaluate(store, now).await {
        tracing::info!(rule = %transition.rule, instance = %transition.instance, from = %transition.from, to = %transition.to, value = ?transition.value, "alert");
        metrics.alert_transition(&transition.rule, &transition.to);
        if let Err(e) = store.record_alert(&transition).await {
            tracing::warn!(error = %e, "could not store an alert transition");
        }
        // Notified: starting to fire, and resolving. Recovering is still firing (the
        // receiver hears nothing); back to firing from it is the same alert.
        let was_firing = ["firing", "recovering"].contains(&transition.from.as_str());
        let resolved = was_firing && transition.to == "normal";
        let fires = instance.state == AlertState::Firing && !was_firing;
        let silenced = silences::silencing(&silences, &instance, now);
        if let Some(silence) = silenced
            && (fires || resolved)
        {
            tracing::info!(rule = %transition.rule, instance = %transition.instance, silence = %silence.id, "alert notification silenced");
        }
        if let Some(webhook) = webhook
            && (fires || resolved)
            && silenced.is_none()
        {
            let key = (instance.rule.clone(), instance.instance.clone());
            let sent = webhook.notify(key, webhook::payload(&instance, now)).await;
            if let Err(e) = &sent {
                tracing::warn!(error = %e, rule = %transition.rule, "alert webhook failed; it is sent again at the next evaluation");
            }
            metrics.webhook_request(sent.is_ok());
        }
    }
    let instances = engine.instances();
    metrics.alert_evaluation(started.elapsed().as_secs_f64(), &instances);
    if let Ok(mut shown) = view.instances.write() {
        *shown = instances;
    }
}

/// Evaluates the rules every `interval`, for ever (the task is dropped at shutdown);
/// when `reloaded` brings new rules (the rules file changed), they replace the old ones
/// at once and are evaluated (instances of rules that stay keep their state).
pub async fn run(
    mut engine: Engine,
    store: Arc<dyn Store>,
    webhook: Option<webhook::Webhook>,
    view: Arc<AlertsView>,
    metrics: Arc<Metrics>,
    interval: std::time::Duration,
    mut reloaded: Option<tokio::sync::watch::Receiver<Vec<Rule>>>,
) {
    loop {
        let now = chrono::Utc::now().timestamp_micros();
        evaluate_once(&mut engine, store.as_ref(), webhook.as_ref(), &view, &metrics, now).await;
        let changed = async {
            let Some(rules) = reloaded.as_mut() else { return std::future::pending().await };
            match rules.changed().await {
                Ok(()) => Some(rules.borrow_and_update().clone()),
                // The watcher is gone: evaluate on the interval alone.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            Some(rules) = changed => {
                tracing::info!(rules = rules.len(), "alert rules reloaded");
                engine.set_rules(rules.clone());
                view.set_rules(rules);
            }
        }
    }
}
