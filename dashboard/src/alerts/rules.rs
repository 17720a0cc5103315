//! Alert rules, from a TOML file:
//!
//! ```toml
//! [[rule]]
//! name = "many_views"              # unique
//! pipeline = "user_interactions_5m"
//! value = "interaction_count"      # the value column
//! filter = { interaction_type = "view" }   # optional: rows whose columns show these texts
//! condition = "above"              # above | below | outside | within
//! threshold = 100                  # above / below
//! # range = [10, 100]              # outside / within
//! pending_seconds = 60             # how long the condition must hold before firing (default 0)
//! keep_firing_seconds = 120        # how long a firing alert stays (Recovering) after the condition stops holding (default 0)
//! severity = "critical"            # free text (default "warning")
//! per_group = true                 # one alert instance per group (default false)
//! reduce = "max"                   # without per_group: max | min | sum | avg of the rows (default max)
//! contact_point = "ops"            # where its notifications go (default: the policy's)
//!
//! [[contact_point]]
//! name = "ops"                     # unique; `default` is --webhook's
//! kind = "slack"                   # webhook | slack
//! url_env = "OPS_SLACK_URL"        # the URL from this environment variable, or `url = "https://…"`
//!
//! [policy]                         # every field optional; Grafana's defaults
//! contact_point = "default"        # of rules that name none
//! group_by = ["alertname"]         # `["..."]`: every instance alone
//! group_wait = "30s"               # a duration (ms, s, m, h, d) or seconds
//! group_interval = "5m"
//! repeat_interval = "4h"
//! ```
//!
//! A bad file fails at start with its line and the reason (never a contact point's URL).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::contact_points::{self, ContactPoint, Kind};
use super::notify::Policy;
use crate::watch::{FileError, line_of};

/// When a rule's condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Condition {
    Above { threshold: f64 },
    Below { threshold: f64 },
    Outside { low: f64, high: f64 },
    Within { low: f64, high: f64 },
}

impl Condition {
    pub fn holds(&self, value: f64) -> bool {
        match *self {
            Condition::Above { threshold } => value > threshold,
            Condition::Below { threshold } => value < threshold,
            Condition::Outside { low, high } => value < low || value > high,
            Condition::Within { low, high } => (low..=high).contains(&value),
        }
    }

    /// The threshold lines to draw on a chart.
    pub fn thresholds(&self) -> Vec<f64> {
        match *self {
            Condition::Above { threshold } | Condition::Below { threshold } => vec![threshold],
            Condition::Outside { low, high } | Condition::Within { low, high } => vec![low, high],
        }
    }
}

/// How a rule without `per_group` reduces the rows to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    Max,
    Min,
    Sum,
    Avg,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub name: String,
    pub pipeline: String,
    pub value: String,
    pub filter: BTreeMap<String, String>,
    pub condition: Condition,
    pub pending_seconds: f64,
    /// How long a firing instance stays (Recovering) once the condition stops holding.
    pub keep_firing_seconds: f64,
    pub severity: String,
    pub per_group: bool,
    pub reduce: Reduce,
    /// Where its notifications go; `None`: the policy's contact point.
    pub contact_point: Option<String>,
}

/// Everything the rules file says: rules, contact points, notification policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RulesFile {
    pub rules: Vec<Rule>,
    pub contact_points: Vec<ContactPoint>,
    pub policy: Policy,
}

/// A rule as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleText {
    name: String,
    pipeline: String,
    value: String,
    #[serde(default)]
    filter: BTreeMap<String, toml::Value>,
    condition: String,
    threshold: Option<f64>,
    range: Option<[f64; 2]>,
    #[serde(default)]
    pending_seconds: f64,
    #[serde(default)]
    keep_firing_seconds: f64,
    severity: Option<String>,
    #[serde(default)]
    per_group: bool,
    reduce: Option<Reduce>,
    contact_point: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactPointText {
    name: String,
    kind: String,
    url: Option<String>,
    url_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyText {
    contact_point: Option<String>,
    group_by: Option<Vec<String>>,
    group_wait: Option<toml::Value>,
    group_interval: Option<toml::Value>,
    repeat_interval: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesText {
    #[serde(default)]
    rule: Vec<toml::Spanned<RuleText>>,
    #[serde(default)]
    contact_point: Vec<toml::Spanned<ContactPointText>>,
    policy: Option<toml::Spanned<PolicyText>>,
}

/// A duration as the policy takes it: seconds, or text such as `30s`, `5m`, `1h30m`,
/// `500ms`, `1d` (Grafana's and Prometheus' units).
pub fn duration_seconds(value: &toml::Value) -> Result<f64, String> {
    let seconds = match value {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        toml::Value::String(text) => {
            let bad = || format!("`{text}` is not a duration such as 30s, 5m, 4h or 1h30m");
            let (mut total, mut rest) = (0.0, text.trim());
            if rest.is_empty() {
                return Err(bad());
            }
            while !rest.is_empty() {
                let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
                let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
                let unit_end = rest[digits..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |i| digits + i);
                let unit = match &rest[digits..unit_end] {
                    "ms" => 0.001,
                    "s" => 1.0,
                    "m" => 60.0,
                    "h" => 3600.0,
                    "d" => 86_400.0,
                    _ => return Err(bad()),
                };
                total += number * unit;
                rest = &rest[unit_end..];
            }
            total
        }
        other => return Err(format!("expected a duration such as \"30s\" or seconds, found {}", other.type_str())),
    };
    if seconds >= 0.0 && seconds.is_finite() { Ok(seconds) } else { Err("a duration is 0 or more".into()) }
}

/// Reads the rules of `path`.
pub fn load(path: &Path) -> Result<Vec<Rule>, FileError> {
    Ok(load_file(path)?.rules)
}

/// Reads the rules, contact points and policy of `path`.
pub fn load_file(path: &Path) -> Result<RulesFile, FileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        file: file.clone(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse_file(&text, &file)
}

/// Parses rules from `text` (`file` names it in errors).
pub fn parse(text: &str, file: &str) -> Result<Vec<Rule>, FileError> {
    Ok(parse_file(text, file)?.rules)
}

/// Parses rules, contact points and policy from `text` (`file` names it in errors).
pub fn parse_file(text: &str, file: &str) -> Result<RulesFile, FileError> {
    parse_with_env(text, file, &|var| std::env::var(var).ok())
}

/// [`parse_file`], with `env` giving the environment variables `url_env` names.
fn parse_with_env(text: &str, file: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<RulesFile, FileError> {
    let error =
        |offset: usize, message: String| FileError { file: file.to_string(), line: line_of(text, offset), message };
    let parsed: RulesText = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        error(offset, e.message().to_string())
    })?;
    let mut contact_points: Vec<ContactPoint> = Vec::new();
    for spanned in parsed.contact_point {
        let at = spanned.span().start;
        let c = spanned.into_inner();
        let fail = |message: String| error(at, format!("contact point `{}`: {message}", c.name));
        if c.name.is_empty() {
            return Err(error(at, "a contact point needs a `name`".into()));
        }
        if c.name == contact_points::DEFAULT {
            return Err(fail("the name `default` is --webhook's contact point".into()));
        }
        if contact_points.iter().any(|x| x.name == c.name) {
            return Err(fail("a contact point of that name comes earlier".into()));
        }
        let kind = Kind::parse(&c.kind).ok_or_else(|| fail(format!("unknown kind `{}` (webhook, slack)", c.kind)))?;
        // Errors never quote the URL: it usually carries a token.
        let (url, url_from) = match (c.url, &c.url_env) {
            (Some(url), None) => (url, "url".to_string()),
            (None, Some(var)) => match env(var) {
                Some(url) if !url.is_empty() => (url, format!("env {var}")),
                _ => return Err(fail(format!("the environment variable {var} (`url_env`) is not set"))),
            },
            (Some(_), Some(_)) => return Err(fail("give `url` or `url_env`, not both".into())),
            (None, None) => return Err(fail("needs `url` or `url_env`".into())),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(fail(format!("the URL ({url_from}) must start with http:// or https://")));
        }
        contact_points.push(ContactPoint::new(c.name.clone(), kind, url, url_from));
    }
    let known = |name: &str| name == contact_points::DEFAULT || contact_points.iter().any(|c| c.name == name);
    let mut policy = Policy::default();
    if let Some(spanned) = parsed.policy {
        let at = spanned.span().start;
        let p = spanned.into_inner();
        let fail = |message: String| error(at, format!("policy: {message}"));
        if let Some(name) = p.contact_point {
            if !known(&name) {
                return Err(fail(format!("no contact point named `{name}`")));
            }
            policy.contact_point = name;
        }
        if let Some(group_by) = p.group_by {
            if group_by.iter().any(|l| l.is_empty()) {
                return Err(fail("`group_by` names labels; an empty one means nothing".into()));
            }
            policy.group_by = group_by;
        }
        let seconds = |field: &str, value: Option<toml::Value>, default: f64| match value {
            Some(value) => duration_seconds(&value).map_err(|e| fail(format!("`{field}`: {e}"))),
            None => Ok(default),
        };
        policy.group_wait_seconds = seconds("group_wait", p.group_wait, policy.group_wait_seconds)?;
        policy.group_interval_seconds = seconds("group_interval", p.group_interval, policy.group_interval_seconds)?;
        policy.repeat_interval_seconds = seconds("repeat_interval", p.repeat_interval, policy.repeat_interval_seconds)?;
        if policy.repeat_interval_seconds <= 0.0 {
            return Err(fail("`repeat_interval` must be more than 0".into()));
        }
    }
    let mut rules: Vec<Rule> = Vec::new();
    for spanned in parsed.rule {
        let at = spanned.span().start;
        let r = spanned.into_inner();
        let fail = |message: String| error(at, format!("rule `{}`: {message}", r.name));
        let two = |kind: &str| match r.range {
            Some([low, high]) if low <= high => Ok((low, high)),
            Some(_) => Err(fail(format!("`range` of `{kind}` must be [low, high] with low <= high"))),
            None => Err(fail(format!("`{kind}` needs `range = [low, high]`"))),
        };
        let one = |kind: &str| r.threshold.ok_or_else(|| fail(format!("`{kind}` needs `threshold`")));
        let condition = match r.condition.as_str() {
            "above" => Condition::Above { threshold: one("above")? },
            "below" => Condition::Below { threshold: one("below")? },
            "outside" => two("outside").map(|(low, high)| Condition::Outside { low, high })?,
            "within" => two("within").map(|(low, high)| Condition::Within { low, high })?,
            other => return Err(fail(format!("unknown condition `{other}` (above, below, outside, within)"))),
        };
        if rules.iter().any(|x| x.name == r.name) {
            return Err(fail("a rule of that name comes earlier".into()));
        }
        if !(r.pending_seconds >= 0.0 && r.pending_seconds.is_finite()) {
            return Err(fail("`pending_seconds` must be 0 or more".into()));
        }
        if !(r.keep_firing_seconds >= 0.0 && r.keep_firing_seconds.is_finite()) {
            return Err(fail("`keep_firing_seconds` must be 0 or more".into()));
        }
        if let Some(name) = r.contact_point.as_deref().filter(|name| !known(name)) {
            return Err(fail(format!("no contact point named `{name}`")));
        }
        let filter = r
            .filter
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => format!("{other:?}"),
                };
                (k.clone(), text)
            })
            .collect();
        rules.push(Rule {
            filter,
            condition,
            pending_seconds: r.pending_seconds,
            keep_firing_seconds: r.keep_firing_seconds,
            severity: r.severity.clone().unwrap_or_else(|| "warning".into()),
            per_group: r.per_group,
            reduce: r.reduce.unwrap_or(Reduce::Max),
            contact_point: r.contact_point.clone(),
            name: r.name,
            pipeline: r.pipeline,
            value: r.value,
        });
    }
    Ok(RulesFile { rules, contact_points, policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_gives_its_rules() {
        let rules = parse(
            r#"
[[rule]]
name = "many"
pipeline = "p"
value = "n"
filter = { kind = "view", id = 7 }
condition = "outside"
range = [1, 10]
pending_seconds = 30
per_group = true

[[rule]]
name = "few"
pipeline = "p"
value = "n"
condition = "below"
threshold = 2.5
severity = "critical"
reduce = "sum"
"#,
            "alerts.toml",
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].condition, Condition::Outside { low: 1.0, high: 10.0 });
        assert_eq!(rules[0].filter["kind"], "view");
        assert_eq!(rules[0].filter["id"], "7");
        assert_eq!((rules[0].per_group, rules[0].pending_seconds, rules[0].severity.as_str()), (true, 30.0, "warning"));
        assert_eq!((rules[1].condition, rules[1].reduce), (Condition::Below { threshold: 2.5 }, Reduce::Sum));
    }

    #[test]
    fn a_bad_file_names_the_line_and_the_reason() {
        let cases = [
            (
                "[[rule]]\nname = \"a\"\npipeline = \"p\"\nvalue = \"n\"\ncondition = \"abov\"\nthreshold = 1\n",
                1,
                "unknown condition `abov`",
            ),
            (
                "\n\n[[rule]]\nname = \"a\"\npipeline = \"p\"\nvalue = \"n\"\ncondition = \"within\"\n",
                3,
                "needs `range",
            ),
            (
                "[[rule]]\nname = \"a\"\npipeline = \"p\"\nvalue = \"n\"\ncondition = \"above\"\nthreshold = \"x\"\n",
                6,
                "invalid type",
            ),
            ("[[rule]]\nname = \"a\"\npipeline = \"p\"\nvalu = \"n\"\n", 4, "unknown field `valu`"),
            ("[[rule]]\nname = \"a\"\n", 1, "missing field `pipeline`"),
            ("[[rule]\n", 1, ""),
        ];
        for (text, line, reason) in cases {
            let e = parse(text, "alerts.toml").unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("alerts.toml:{line}: ")) && e.message.contains(reason), "{e}");
        }
    }

    #[test]
    fn contact_points_and_the_policy_are_read_with_grafanas_defaults() {
        let env = |var: &str| {
            (var == "RULES_TEST_SLACK_URL").then(|| "https://hooks.slack.com/services/T/B/secret".to_string())
        };
        let file = parse_with_env(
            r#"
[[contact_point]]
name = "ops"
kind = "slack"
url_env = "RULES_TEST_SLACK_URL"

[[contact_point]]
name = "pager"
kind = "webhook"
url = "http://pager.example/hook"

[policy]
contact_point = "ops"
group_by = ["alertname", "pipeline"]
group_wait = "1m30s"
repeat_interval = 7200

[[rule]]
name = "a"
pipeline = "p"
value = "n"
condition = "above"
threshold = 1
contact_point = "pager"
"#,
            "alerts.toml",
            &env,
        )
        .unwrap();
        let names: Vec<(&str, Kind, &str)> =
            file.contact_points.iter().map(|c| (c.name.as_str(), c.kind, c.url_from.as_str())).collect();
        assert_eq!(names, [("ops", Kind::Slack, "env RULES_TEST_SLACK_URL"), ("pager", Kind::Webhook, "url")]);
        assert_eq!(file.policy.contact_point, "ops");
        assert_eq!(file.policy.group_by, ["alertname", "pipeline"]);
        assert_eq!(
            (file.policy.group_wait_seconds, file.policy.group_interval_seconds, file.policy.repeat_interval_seconds),
            (90.0, 300.0, 7200.0),
            "group_interval keeps Grafana's default"
        );
        assert_eq!(file.rules[0].contact_point.as_deref(), Some("pager"));
        let defaults = parse_file("", "alerts.toml").unwrap().policy;
        assert_eq!(defaults, Policy::default());
        assert_eq!(
            (defaults.contact_point.as_str(), defaults.group_wait_seconds, defaults.repeat_interval_seconds),
            ("default", 30.0, 14_400.0)
        );
    }

    #[test]
    fn durations_read_as_grafana_writes_them() {
        let d = |text: &str| duration_seconds(&toml::Value::String(text.into()));
        assert_eq!(d("30s"), Ok(30.0));
        assert_eq!(d("5m"), Ok(300.0));
        assert_eq!(d("4h"), Ok(14_400.0));
        assert_eq!(d("1h30m"), Ok(5_400.0));
        assert_eq!(d("500ms"), Ok(0.5));
        assert_eq!(d("1.5s"), Ok(1.5));
        assert_eq!(duration_seconds(&toml::Value::Integer(2)), Ok(2.0));
        for bad in ["", "5", "5x", "m", "-1s"] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_contact_points_and_policies_name_the_line_and_never_the_url() {
        let rule = "[[rule]]\nname = \"a\"\npipeline = \"p\"\nvalue = \"n\"\ncondition = \"above\"\nthreshold = 1\n";
        let cases = [
            (
                "[[contact_point]]\nname = \"x\"\nkind = \"email\"\nurl = \"http://h/secret\"\n",
                1,
                "unknown kind `email`",
            ),
            (
                "[[contact_point]]\nname = \"x\"\nkind = \"slack\"\nurl = \"ftp://h/secret\"\n",
                1,
                "must start with http",
            ),
            ("[[contact_point]]\nname = \"x\"\nkind = \"slack\"\n", 1, "needs `url` or `url_env`"),
            (
                "[[contact_point]]\nname = \"x\"\nkind = \"slack\"\nurl_env = \"RULES_TEST_UNSET_VAR\"\n",
                1,
                "is not set",
            ),
            ("[[contact_point]]\nname = \"default\"\nkind = \"slack\"\nurl = \"http://h/secret\"\n", 1, "--webhook"),
            ("\n[policy]\ncontact_point = \"nobody\"\n", 2, "no contact point named `nobody`"),
            ("[policy]\ngroup_wait = \"soon\"\n", 1, "`group_wait`: `soon` is not a duration"),
            ("[policy]\nrepeat_interval = 0\n", 1, "more than 0"),
            ("[policy]\ngroup_by = \"alertname\"\n", 2, "invalid type"),
        ];
        for (text, line, reason) in cases {
            let e = parse_file(text, "alerts.toml").unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(reason) && !e.to_string().contains("secret"), "{e}");
        }
        let e = parse_file(&format!("{rule}contact_point = \"nobody\"\n"), "alerts.toml").unwrap_err();
        assert!(e.message.contains("rule `a`: no contact point named `nobody`"), "{e}");
        assert!(parse_file(&format!("{rule}contact_point = \"default\"\n"), "alerts.toml").is_ok());
    }
}
