//! The notification policy, as Grafana's (which is Alertmanager's): alert instances
//! that start firing or resolve are routed to a contact point (the rule's
//! `contact_point`, else the policy's) and gathered in groups there, one group per
//! value of the policy's `group_by` labels (by default the rule's name). A group
//! speaks in one notification listing all its alerts:
//!
//! * a new group waits `group_wait` before its first notification, so alerts that
//!   fire together arrive together;
//! * after a notification, what changes (alerts that start firing, alerts that
//!   resolve) waits until `group_interval` has passed since it;
//! * a group that has said nothing new for `repeat_interval` while alerts in it still
//!   fire sends its notification again.
//!
//! Silenced alerts are left out of the notifications while the silence is in force (a
//! group whose alerts are all silenced sends nothing); a resolve is news only for an
//! alert whose firing was notified. A firing instance that goes to NoData or Error
//! leaves its group without a resolve (it is not known to be fine), as before groups.
//!
//! The groups are in memory: a restarted dashboard starts them from the instances
//! that are firing (see [`Notifier::restore`]), as if just notified.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use store::Silence;

use super::contact_points::{self, ContactPoint, Delivery, DeliveryError};
use super::{AlertState, Instance, silences};

/// Where alerts go and how they are grouped and timed (the `[policy]` of the rules file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// The contact point of rules that name none.
    pub contact_point: String,
    /// The labels whose values make a group (`alertname`, `pipeline`, `severity`, group
    /// columns); `...` alone makes each alert instance its own group.
    pub group_by: Vec<String>,
    pub group_wait_seconds: f64,
    pub group_interval_seconds: f64,
    pub repeat_interval_seconds: f64,
}

impl Default for Policy {
    /// Grafana's default policy.
    fn default() -> Self {
        Policy {
            contact_point: contact_points::DEFAULT.into(),
            group_by: vec!["alertname".into()],
            group_wait_seconds: 30.0,
            group_interval_seconds: 300.0,
            repeat_interval_seconds: 4.0 * 3600.0,
        }
    }
}

/// One alert in a group: the instance as it last was, and when it resolved (if it did).
#[derive(Debug, Clone)]
pub struct Alert {
    pub instance: Instance,
    /// Microseconds.
    pub resolved_at: Option<i64>,
}

impl Alert {
    /// `alertname`, `pipeline`, `severity` and the group's columns.
    pub fn labels(&self) -> BTreeMap<String, String> {
        silences::labels(&self.instance)
    }
}

/// What one group says at once.
#[derive(Debug, Clone)]
pub struct Notification {
    pub contact_point: String,
    /// `<contact point>:{label="value",…}`, the same for every notification of a group.
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    pub firing: Vec<Alert>,
    pub resolved: Vec<Alert>,
}

impl Notification {
    /// The firing alerts, then the resolved ones.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.firing.iter().chain(&self.resolved)
    }
}

type AlertKey = (String, String);

struct Group {
    contact_point: String,
    labels: BTreeMap<String, String>,
    /// By (rule, instance): firing alerts, and resolved ones not yet told.
    alerts: BTreeMap<AlertKey, Alert>,
    /// Microseconds: when the group may speak next (created + group_wait, then the
    /// last notification + group_interval).
    next_flush: i64,
    /// The last notification: when, and the alerts it listed as firing.
    notified_at: Option<i64>,
    notified_firing: BTreeSet<AlertKey>,
}

impl Group {
    /// The alerts to list now (not silenced at `now`): firing, and resolved ones whose
    /// firing was told.
    fn visible(&self, silences: &[Silence], now: i64) -> (Vec<AlertKey>, Vec<AlertKey>) {
        let shown = |(_, a): &(&AlertKey, &Alert)| silences::silencing(silences, &a.instance, now).is_none();
        let firing = self.alerts.iter().filter(|(_, a)| a.resolved_at.is_none()).filter(shown).map(|(k, _)| k.clone());
        let resolved = self
            .alerts
            .iter()
            .filter(|(k, a)| a.resolved_at.is_some() && self.notified_firing.contains(*k))
            .filter(shown)
            .map(|(k, _)| k.clone());
        (firing.collect(), resolved.collect())
    }

    /// When the group has something to say, given no new input: `next_flush` if there
    /// is news (a firing alert not told, a resolve), else the repeat of its firing alerts.
    fn speaks_at(&self, policy: &Policy, silences: &[Silence], now: i64) -> Option<i64> {
        let (firing, resolved) = self.visible(silences, now);
        if !resolved.is_empty() || firing.iter().any(|k| !self.notified_firing.contains(k)) {
            return Some(self.next_flush);
        }
        let repeat = micros(policy.repeat_interval_seconds);
        match (firing.is_empty(), self.notified_at) {
            (false, Some(at)) => Some(self.next_flush.max(at + repeat)),
            _ => None,
        }
    }
}

fn micros(seconds: f64) -> i64 {
    (seconds * 1e6) as i64
}

/// The groups of every contact point, and the delivery of their notifications.
pub struct Notifier {
    /// `--webhook`'s URL: the contact point named `default`.
    default_url: Option<String>,
    contact_points: Vec<ContactPoint>,
    policy: Policy,
    /// By group key.
    groups: BTreeMap<String, Group>,
    /// The silences as last read (at each evaluation).
    silences: Vec<Silence>,
    delivery: Delivery,
}

impl Notifier {
    /// With `--webhook`'s URL (if given) and the rules file's contact points and policy.
    pub fn new(default_url: Option<String>, contact_points: Vec<ContactPoint>, policy: Policy) -> Self {
        let mut notifier = Notifier {
            default_url,
            contact_points: Vec::new(),
            policy: Policy::default(),
            groups: BTreeMap::new(),
            silences: Vec::new(),
            delivery: Delivery::default(),
        };
        notifier.set_config(contact_points, policy);
        notifier
    }

    /// The rules file's contact points and policy changed: they apply from now on
    /// (the groups stay, and speak to the contact points of their names).
    pub fn set_config(&mut self, contact_points: Vec<ContactPoint>, policy: Policy) {
        self.contact_points = self.default_url.iter().map(|url| ContactPoint::default_webhook(url.clone())).collect();
        self.contact_points.extend(contact_points);
        self.policy = policy;
    }

    /// Every contact point, `--webhook`'s first.
    pub fn contact_points(&self) -> &[ContactPoint] {
        &self.contact_points
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The silences that apply from now (read at each evaluation).
    pub fn set_silences(&mut self, silences: Vec<Silence>) {
        self.silences = silences;
    }

    /// The contact point of a rule that names `contact_point` (or none).
    fn route(&self, contact_point: Option<&str>) -> String {
        contact_point.unwrap_or(&self.policy.contact_point).to_string()
    }

    /// The group labels and key of `instance` at `contact_point`.
    fn group_of(&self, contact_point: &str, instance: &Instance) -> (String, BTreeMap<String, String>) {
        let labels = silences::labels(instance);
        let group: BTreeMap<String, String> = if self.policy.group_by.iter().any(|l| l == "...") {
            labels
        } else {
            self.policy.group_by.iter().filter_map(|l| Some((l.clone(), labels.get(l)?.clone()))).collect()
        };
        let pairs: Vec<String> = group.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        (format!("{contact_point}:{{{}}}", pairs.join(",")), group)
    }

    /// Takes one transition of `instance` (its state after it), of a rule whose
    /// contact point is `contact_point`, at `now`: starting to fire joins (or makes)
    /// its group, resolving marks it resolved there, leaving firing otherwise (NoData,
    /// Error) takes it out quietly. Recovering is still firing.
    pub fn observe(&mut self, instance: &Instance, contact_point: Option<&str>, was_firing: bool, now: i64) {
        let contact_point = self.route(contact_point);
        let (key, labels) = self.group_of(&contact_point, instance);
        let alert_key = (instance.rule.clone(), instance.instance.clone());
        let firing = matches!(instance.state, AlertState::Firing | AlertState::Recovering);
        if firing && !was_firing {
            let wait = micros(self.policy.group_wait_seconds);
            let group = self.groups.entry(key).or_insert_with(|| Group {
                contact_point,
                labels,
                alerts: BTreeMap::new(),
                next_flush: now + wait,
                notified_at: None,
                notified_firing: BTreeSet::new(),
            });
            group.alerts.insert(alert_key, Alert { instance: instance.clone(), resolved_at: None });
            return;
        }
        let Some(group) = self.groups.get_mut(&key) else { return };
        if was_firing && instance.state == AlertState::Normal {
            group.alerts.insert(alert_key, Alert { instance: instance.clone(), resolved_at: Some(now) });
        } else if was_firing && !firing {
            group.alerts.remove(&alert_key);
            group.notified_firing.remove(&alert_key);
        }
    }

    /// The instances' latest values, for the notifications still to come.
    pub fn refresh(&mut self, instances: &[Instance]) {
        for group in self.groups.values_mut() {
            for ((rule, instance), alert) in group.alerts.iter_mut() {
                if alert.resolved_at.is_none()
                    && let Some(now) = instances.iter().find(|i| &i.rule == rule && &i.instance == instance)
                {
                    alert.instance = now.clone();
                }
            }
        }
    }

    /// After a restart: the firing instances (of rules with these contact points, by
    /// rule name), as if notified at `now` — they were, before it — so that they are
    /// repeated and resolved as usual, and not notified again now.
    pub fn restore(&mut self, instances: &[Instance], contact_point_of: impl Fn(&str) -> Option<String>, now: i64) {
        for instance in instances.iter().filter(|i| matches!(i.state, AlertState::Firing | AlertState::Recovering)) {
            let contact_point = contact_point_of(&instance.rule);
            self.observe(instance, contact_point.as_deref(), false, now);
            let (key, _) = self.group_of(&self.route(contact_point.as_deref()), instance);
            if let Some(group) = self.groups.get_mut(&key) {
                group.notified_at = Some(now);
                group.notified_firing.insert((instance.rule.clone(), instance.instance.clone()));
                group.next_flush = now + micros(self.policy.group_interval_seconds);
            }
        }
    }

    /// The notifications due at `now`, each group's state moved past it (its
    /// resolved alerts leave it; a group with no alerts left goes).
    pub fn due(&mut self, now: i64) -> Vec<Notification> {
        let mut out = Vec::new();
        let repeat = micros(self.policy.repeat_interval_seconds);
        let interval = micros(self.policy.group_interval_seconds);
        for (key, group) in self.groups.iter_mut().filter(|(_, g)| now >= g.next_flush) {
            let (firing, resolved) = group.visible(&self.silences, now);
            let news = !resolved.is_empty() || firing.iter().any(|k| !group.notified_firing.contains(k));
            let repeats = !firing.is_empty() && group.notified_at.is_some_and(|at| now >= at + repeat);
            if news || repeats {
                let take = |keys: &[AlertKey]| keys.iter().map(|k| group.alerts[k].clone()).collect::<Vec<_>>();
                out.push(Notification {
                    contact_point: group.contact_point.clone(),
                    group_key: key.clone(),
                    group_labels: group.labels.clone(),
                    firing: take(&firing),
                    resolved: take(&resolved),
                });
                group.notified_firing = firing.into_iter().collect();
                group.notified_at = Some(now);
                group.next_flush = now + interval;
            }
            // Resolved alerts are told now or never (their firing was not told, or
            // they are silenced).
            group.alerts.retain(|_, a| a.resolved_at.is_none());
            let alerts = &group.alerts;
            group.notified_firing.retain(|k| alerts.contains_key(k));
        }
        self.groups.retain(|_, g| !g.alerts.is_empty());
        out
    }

    /// When the next notification is due, given no new input (microseconds).
    pub fn next_due(&self, now: i64) -> Option<i64> {
        self.groups.values().filter_map(|g| g.speaks_at(&self.policy, &self.silences, now)).min()
    }

    /// Sends `notification` to its contact point (kept for another attempt if it does
    /// not arrive). One to `default` without `--webhook` goes nowhere.
    pub async fn send(&self, notification: &Notification, now: i64) -> Option<Result<(), DeliveryError>> {
        let Some(to) = self.contact_points.iter().find(|c| c.name == notification.contact_point) else {
            if notification.contact_point == contact_points::DEFAULT {
                return None;
            }
            return Some(Err(DeliveryError::Unknown(notification.contact_point.clone())));
        };
        Some(self.delivery.send(to, &notification.group_key, to.payload(notification, now)).await)
    }

    /// Sends again what did not arrive; per attempt, whether it arrived.
    pub async fn retry_failed(&self) -> Vec<bool> {
        self.delivery.retry_failed(&self.contact_points).await
    }
}
