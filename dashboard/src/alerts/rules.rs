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
//! ```
//!
//! A bad file fails at start with its line and the reason.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesText {
    #[serde(default)]
    rule: Vec<toml::Spanned<RuleText>>,
}

/// A rules file that cannot be used: `<file>:<line>: <reason>`.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct RulesError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Reads the rules of `path`.
pub fn load(path: &Path) -> Result<Vec<Rule>, RulesError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| RulesError {
        file: file.clone(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, &file)
}

/// Parses rules from `text` (`file` names it in errors).
pub fn parse(text: &str, file: &str) -> Result<Vec<Rule>, RulesError> {
    let error =
        |offset: usize, message: String| RulesError { file: file.to_string(), line: line_of(text, offset), message };
    let parsed: RulesText = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        error(offset, e.message().to_string())
    })?;
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
            name: r.name,
            pipeline: r.pipeline,
            value: r.value,
        });
    }
    Ok(rules)
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
}
