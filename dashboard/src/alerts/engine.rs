//! The alert state machine over a store's results.

use std::collections::BTreeMap;

use serde::Serialize;
use store::{AlertTransition, ColumnType, ResultTable, Store, iso_micros};

use super::rules::{Reduce, Rule};
use crate::web::view::text;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Normal,
    Pending,
    Firing,
    /// Was firing; the condition stopped holding less than `keep_firing_seconds` ago.
    Recovering,
    NoData,
    Error,
}

impl AlertState {
    pub const ALL: [AlertState; 6] = [
        AlertState::Normal,
        AlertState::Pending,
        AlertState::Firing,
        AlertState::Recovering,
        AlertState::NoData,
        AlertState::Error,
    ];

    /// The state a stored transition names (`firing`…).
    pub fn parse(text: &str) -> Option<AlertState> {
        AlertState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Normal => "normal",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Recovering => "recovering",
            AlertState::NoData => "nodata",
            AlertState::Error => "error",
        }
    }
}

/// One alert instance: a rule, or a rule and one group.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub rule: String,
    pub pipeline: String,
    pub severity: String,
    /// Empty for a whole-result rule, else the group's labels `col=value,…`.
    pub instance: String,
    pub labels: BTreeMap<String, String>,
    pub state: AlertState,
    pub value: Option<f64>,
    /// Microseconds: when the current state began.
    pub since: i64,
    /// Microseconds: when it started firing (for the notifications' startsAt).
    pub firing_since: Option<i64>,
    pub message: Option<String>,
}

/// What one evaluation found for one instance.
struct Observation {
    labels: BTreeMap<String, String>,
    value: Result<Option<f64>, String>,
}

/// The rules and the state of every instance.
pub struct Engine {
    pub rules: Vec<Rule>,
    instances: BTreeMap<(String, String), Instance>,
}

/// Stored transitions read back at start to restore the instances' states.
pub const RESTORE_HISTORY: usize = 100_000;

impl Engine {
    pub fn new(rules: Vec<Rule>) -> Self {
        Engine { rules, instances: BTreeMap::new() }
    }

    /// An engine whose instances are as their latest stored transition left them
    /// (`history` newest first, as [`Store::alert_history`] gives it), for the rules
    /// that still exist: after a restart a firing alert stays firing (and is not
    /// notified again), and a pending one keeps counting from when it began.
    pub fn restored(rules: Vec<Rule>, history: &[AlertTransition]) -> Self {
        let mut engine = Engine::new(rules);
        for transition in history {
            let Some(rule) = engine.rules.iter().find(|r| r.name == transition.rule) else { continue };
            let key = (transition.rule.clone(), transition.instance.clone());
            let Some(state) = AlertState::parse(&transition.to) else { continue };
            if engine.instances.contains_key(&key) {
                continue; // an older transition of an instance already restored
            }
            let at = store::parse_iso_micros(&transition.at).unwrap_or_default();
            let instance = Instance {
                rule: rule.name.clone(),
                pipeline: rule.pipeline.clone(),
                severity: rule.severity.clone(),
                instance: transition.instance.clone(),
                // Until the next evaluation gives them exactly.
                labels: labels_of(&transition.instance),
                state,
                value: transition.value,
                since: at,
                firing_since: (state == AlertState::Firing).then_some(at),
                message: transition.message.clone(),
            };
            engine.instances.insert(key, instance);
        }
        engine
    }

    /// Replaces the rules: instances of rules that keep their name keep their state,
    /// those of rules that are gone leave.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        self.instances.retain(|(rule, _), _| rules.iter().any(|r| &r.name == rule));
        self.rules = rules;
    }

    /// Every instance, by rule and instance.
    pub fn instances(&self) -> Vec<Instance> {
        self.instances.values().cloned().collect()
    }

    /// Evaluates every rule at `now` (microseconds); returns the transitions (with the
    /// instance after each), already applied to the engine's state.
    pub async fn evaluate(&mut self, store: &dyn Store, now: i64) -> Vec<(AlertTransition, Instance)> {
        let mut transitions = Vec::new();
        for rule in self.rules.clone() {
            let table = match store.status(&rule.pipeline).await {
                Ok(Some(status)) => status.table().to_string(),
                _ => rule.pipeline.clone(),
            };
            let observations = match store.read_table(&table).await {
                Ok(table) => observe(&rule, table.as_ref()),
                Err(e) => vec![Observation { labels: BTreeMap::new(), value: Err(e.to_string()) }],
            };
            let mut seen = Vec::new();
            for observation in observations {
                let instance = instance_key(&observation.labels);
                seen.push(instance.clone());
                if let Some(t) = self.step(&rule, instance, observation.labels, observation.value, now) {
                    transitions.push(t);
                }
            }
            // Groups that left the result have no data any more.
            let gone: Vec<(String, String)> =
                self.instances.keys().filter(|(r, i)| r == &rule.name && !seen.contains(i)).cloned().collect();
            for (_, instance) in gone {
                let labels = self.instances[&(rule.name.clone(), instance.clone())].labels.clone();
                if let Some(t) = self.step(&rule, instance, labels, Ok(None), now) {
                    transitions.push(t);
                }
            }
        }
        transitions
    }

    /// Moves one instance by what was observed; returns its transition, if any.
    fn step(
        &mut self,
        rule: &Rule,
        instance: String,
        labels: BTreeMap<String, String>,
        value: Result<Option<f64>, String>,
        now: i64,
    ) -> Option<(AlertTransition, Instance)> {
        let key = (rule.name.clone(), instance.clone());
        let current = self.instances.entry(key).or_insert_with(|| Instance {
            rule: rule.name.clone(),
            pipeline: rule.pipeline.clone(),
            severity: rule.severity.clone(),
            instance,
            labels: labels.clone(),
            state: AlertState::Normal,
            value: None,
            since: now,
            firing_since: None,
            message: None,
        });
        current.labels = labels;
        let pending_micros = (rule.pending_seconds * 1e6) as i64;
        let keep_firing_micros = (rule.keep_firing_seconds * 1e6) as i64;
        let (next, message) = match &value {
            Err(e) => (AlertState::Error, Some(e.clone())),
            Ok(None) => (AlertState::NoData, None),
            Ok(Some(v)) if rule.condition.holds(*v) => match current.state {
                // Back before the keep-firing period ran out: still the same alert.
                AlertState::Firing | AlertState::Recovering => (AlertState::Firing, None),
                AlertState::Pending if now - current.since >= pending_micros => (AlertState::Firing, None),
                AlertState::Pending => (AlertState::Pending, None),
                _ if pending_micros == 0 => (AlertState::Firing, None),
                _ => (AlertState::Pending, None),
            },
            Ok(Some(_)) => match current.state {
                AlertState::Firing if keep_firing_micros > 0 => (AlertState::Recovering, None),
                AlertState::Recovering if now - current.since < keep_firing_micros => (AlertState::Recovering, None),
                _ => (AlertState::Normal, None),
            },
        };
        if let Ok(v) = &value {
            current.value = *v;
        }
        current.message = message.clone();
        if next == current.state {
            return None;
        }
        let from = current.state;
        current.state = next;
        current.since = now;
        if next == AlertState::Firing && from != AlertState::Recovering {
            current.firing_since = Some(now);
        }
        let transition = AlertTransition {
            rule: rule.name.clone(),
            instance: current.instance.clone(),
            pipeline: rule.pipeline.clone(),
            severity: rule.severity.clone(),
            from: from.as_str().into(),
            to: next.as_str().into(),
            value: value.ok().flatten(),
            at: iso_micros(now),
            message,
        };
        Some((transition, current.clone()))
    }
}

fn instance_key(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The labels an instance key holds, as far as its text tells (see [`instance_key`]).
fn labels_of(instance: &str) -> BTreeMap<String, String> {
    instance.split(',').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The rule's instances and their values in `table` (`None`: the pipeline has no result yet).
fn observe(rule: &Rule, table: Option<&ResultTable>) -> Vec<Observation> {
    let whole = |value| vec![Observation { labels: BTreeMap::new(), value }];
    let Some(table) = table else { return whole(Ok(None)) };
    let Some(value_column) = table.columns.iter().position(|c| c.name == rule.value) else {
        return whole(Err(format!("pipeline {} has no column `{}`", rule.pipeline, rule.value)));
    };
    if let Some(missing) = rule.filter.keys().find(|k| !table.columns.iter().any(|c| &c.name == *k)) {
        return whole(Err(format!("pipeline {} has no column `{missing}` to filter on", rule.pipeline)));
    }
    let window = table.columns.iter().position(|c| c.column_type == ColumnType::Window);
    let start = |row: &store::ResultRow| window.and_then(|w| row.values[w].window_start());
    let latest = table.rows.iter().filter_map(start).max();
    let rows: Vec<&store::ResultRow> = table
        .rows
        .iter()
        .filter(|row| window.is_none() || start(row) == latest)
        .filter(|row| {
            rule.filter.iter().all(|(column, wanted)| {
                let i = table.columns.iter().position(|c| &c.name == column).unwrap_or(0);
                &text(&row.values[i]) == wanted
            })
        })
        .collect();
    let values: Vec<Option<f64>> = rows.iter().map(|row| row.values[value_column].number()).collect();
    if rows.is_empty() {
        return whole(Ok(None));
    }
    if values.iter().all(Option::is_none) {
        return whole(Err(format!("column `{}` of {} holds no numbers", rule.value, rule.pipeline)));
    }
    if rule.per_group {
        return rows
            .iter()
            .zip(values)
            .map(|(row, value)| Observation {
                labels: table
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != value_column && Some(*i) != window)
                    .map(|(i, c)| (c.name.clone(), text(&row.values[i])))
                    .collect(),
                value: Ok(value),
            })
            .collect();
    }
    let numbers: Vec<f64> = values.into_iter().flatten().collect();
    let reduced = match rule.reduce {
        Reduce::Max => numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Reduce::Min => numbers.iter().copied().fold(f64::INFINITY, f64::min),
        Reduce::Sum => numbers.iter().sum(),
        Reduce::Avg => numbers.iter().sum::<f64>() / numbers.len() as f64,
    };
    whole(Ok(Some(reduced)))
}
