//! The enigma.js engine schemas (`testkit/qix/*.json`, MIT, see `LICENSE-enigma.js.txt`)
//! and the check of every request against them.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::SchemaVersion;

/// One input parameter of a method (`structs.<Class>.<Method>.In[i]`).
#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub name: String,
    pub default: Value,
    pub optional: bool,
}

/// Classes -> methods -> ordered input parameters.
#[derive(Debug)]
pub(crate) struct Schema {
    pub version: &'static str,
    classes: HashMap<String, HashMap<String, Vec<Param>>>,
}

/// The schema of a version, parsed once per process.
pub(crate) fn schema(version: SchemaVersion) -> &'static Schema {
    static V12_612: OnceLock<Schema> = OnceLock::new();
    static V12_2027: OnceLock<Schema> = OnceLock::new();
    match version {
        SchemaVersion::V12_612 => {
            V12_612.get_or_init(|| Schema::parse("12.612.0", include_str!("../../qix/enigma-schema-12.612.0.json")))
        }
        SchemaVersion::V12_2027 => {
            V12_2027.get_or_init(|| Schema::parse("12.2027.0", include_str!("../../qix/enigma-schema-12.2027.0.json")))
        }
    }
}

impl Schema {
    /// Parses an embedded schema file (ours, so a broken one is a bug: panic).
    fn parse(version: &'static str, text: &str) -> Schema {
        let root: Value = serde_json::from_str(text).expect("embedded enigma schema is valid JSON");
        let structs = root.get("structs").and_then(Value::as_object).expect("schema has structs");
        let mut classes = HashMap::new();
        for (class, methods) in structs {
            let Some(methods) = methods.as_object() else { continue };
            let mut by_name = HashMap::new();
            for (method, def) in methods {
                // Only entries with an `In` list are methods.
                let Some(inputs) = def.get("In").and_then(Value::as_array) else { continue };
                let params = inputs
                    .iter()
                    .map(|p| Param {
                        name: p.get("Name").and_then(Value::as_str).unwrap_or_default().to_string(),
                        default: p.get("DefaultValue").cloned().unwrap_or(Value::Null),
                        optional: p.get("Optional").and_then(Value::as_bool).unwrap_or(false),
                    })
                    .collect();
                by_name.insert(method.clone(), params);
            }
            classes.insert(class.clone(), by_name);
        }
        Schema { version, classes }
    }

    /// The input parameters of `class.method`, if the method exists.
    pub(crate) fn method(&self, class: &str, method: &str) -> Option<&[Param]> {
        self.classes.get(class)?.get(method).map(Vec::as_slice)
    }

    /// Checks a request's params (absent = `[]`) against the method's `In` list.
    pub(crate) fn check_params(inputs: &[Param], params: Option<&Value>) -> Result<(), String> {
        match params {
            None => required_present(inputs, |_| false),
            Some(Value::Array(values)) => {
                if values.len() > inputs.len() {
                    return Err(format!("too many parameters: {} given, at most {}", values.len(), inputs.len()));
                }
                for (param, value) in inputs.iter().zip(values) {
                    check_value(param, value)?;
                }
                required_present(inputs, |i| i < values.len())
            }
            Some(Value::Object(values)) => {
                for (name, value) in values {
                    let param = inputs.iter().find(|p| &p.name == name);
                    check_value(param.ok_or_else(|| format!("unknown parameter {name}"))?, value)?;
                }
                required_present(inputs, |i| values.contains_key(&inputs[i].name))
            }
            Some(other) => Err(format!("params must be an array or an object, got {}", type_name(other))),
        }
    }
}

/// Every parameter not marked `Optional` must be given.
fn required_present(inputs: &[Param], given: impl Fn(usize) -> bool) -> Result<(), String> {
    match inputs.iter().enumerate().find(|(i, p)| !p.optional && !given(*i)) {
        Some((_, p)) => Err(format!("missing required parameter {}", p.name)),
        None => Ok(()),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Same JSON type as the default (a null default accepts anything).
fn same_type(default: &Value, value: &Value) -> bool {
    default.is_null() || type_name(default) == type_name(value)
}

/// A parameter value must have its default's JSON type. For an object default, only its
/// keys are allowed, each with the default's type — except for generic property
/// structures (defaults with `qInfo`, e.g. CreateSessionObject's `qProp`), which by
/// design carry any custom properties.
fn check_value(param: &Param, value: &Value) -> Result<(), String> {
    if !same_type(&param.default, value) {
        return Err(format!(
            "parameter {}: expected {}, got {}",
            param.name,
            type_name(&param.default),
            type_name(value)
        ));
    }
    if let (Value::Object(default), Value::Object(given)) = (&param.default, value) {
        check_keys(&param.name, default, given)?;
    }
    Ok(())
}

fn check_keys(name: &str, default: &Map<String, Value>, given: &Map<String, Value>) -> Result<(), String> {
    if default.is_empty() || default.contains_key("qInfo") {
        return Ok(());
    }
    for (key, value) in given {
        let Some(expected) = default.get(key) else {
            return Err(format!("parameter {name}: unknown key {key}"));
        };
        if !same_type(expected, value) {
            return Err(format!("parameter {name}.{key}: expected {}, got {}", type_name(expected), type_name(value)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_load_and_differ() {
        let old = schema(SchemaVersion::V12_612);
        let new = schema(SchemaVersion::V12_2027);
        assert_eq!((old.version, new.version), ("12.612.0", "12.2027.0"));
        let reload_old = old.method("Doc", "DoReloadEx").expect("DoReloadEx");
        assert!(Schema::check_params(reload_old, Some(&json!([{"qPartial": true}]))).is_ok());
        // qSkipStore only exists in the newer engine.
        let params = json!({"qParams": {"qPartial": true, "qSkipStore": false}});
        assert!(Schema::check_params(reload_old, Some(&params)).is_err());
        let reload_new = new.method("Doc", "DoReloadEx").expect("DoReloadEx");
        assert!(Schema::check_params(reload_new, Some(&params)).is_ok());
        assert!(old.method("Global", "NoSuchMethod").is_none());
    }

    #[test]
    fn params_are_checked() {
        let s = schema(SchemaVersion::V12_612);
        let open = s.method("Global", "OpenDoc").expect("OpenDoc");
        assert!(Schema::check_params(open, Some(&json!(["app"]))).is_ok());
        assert!(Schema::check_params(open, Some(&json!({"qDocName": "app", "qNoData": true}))).is_ok());
        let err = |p: Value| Schema::check_params(open, Some(&p)).expect_err("violation");
        assert!(err(json!([])).contains("missing required parameter qDocName"));
        assert!(err(json!([1])).contains("expected string, got number"));
        assert!(err(json!(["a", "", "", "", false, 1])).contains("too many"));
        assert!(err(json!({"qDocName": "a", "qBogus": 1})).contains("unknown parameter qBogus"));
        assert!(err(json!("a")).contains("array or an object"));
        assert!(Schema::check_params(open, None).is_err());
        let create = s.method("Doc", "CreateSessionObject").expect("CreateSessionObject");
        let props = json!([{"qInfo": {"qType": "x"}, "qHyperCubeDef": {}}]);
        assert!(Schema::check_params(create, Some(&props)).is_ok());
    }
}
