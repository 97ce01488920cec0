//! The JSON Schema of runbooks, generated from the model and the actions' `with` types, and the
//! mapping of its validation errors to diagnostics on the node at fault.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::model::{DURATION_PATTERN, Runbook};
use crate::actions;
use crate::diagnostics::{At, Code, Diagnostic, did_you_mean, ptr};

pub const SCHEMA_FILE: &str = "schemas/runbook.v1.json";

/// The runbook schema (JSON Schema 2020-12).
pub fn generate() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut root = generator.into_root_schema_for::<Runbook>().to_value();
    let catalog = actions::catalog();

    let defs = root["$defs"]
        .as_object_mut()
        .expect("the model has definitions");
    let mut branches = Vec::new();
    for info in &catalog {
        let mut with = info.with_schema.clone().to_value();
        let with_obj = with.as_object_mut().expect("object schema");
        with_obj.remove("$schema");
        if let Some(Value::Object(nested)) = with_obj.remove("$defs") {
            for (name, def) in nested {
                if let Some(existing) = defs.get(&name) {
                    assert_eq!(
                        existing, &def,
                        "two different types share the schema name {name}"
                    );
                }
                defs.insert(name, def);
            }
        }
        let def_name = format!("with.{}", info.name);
        defs.insert(def_name.clone(), with);
        branches.push(json!({
            "if": {"properties": {"action": {"const": info.name}}, "required": ["action"]},
            "then": {"properties": {"with": {"$ref": format!("#/$defs/{def_name}")}}},
        }));
    }
    let names: Vec<&str> = catalog.iter().map(|i| i.name).collect();
    for def in ["Step", "Compensation"] {
        let d = defs.get_mut(def).expect("step types are in the schema");
        d["properties"]["action"]["enum"] = json!(names);
        d["allOf"] = Value::Array(branches.clone());
    }
    root["$id"] = json!("urn:lifeboat:schema:runbook:v1");
    drop_null(&mut root);
    root
}

/// Optional fields may be left out, not set to null: `timeout: ` (empty) is a mistake worth an
/// error, and without the null branch every type error names the real type, not "anyOf".
fn drop_null(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(branches)) = map.get("anyOf")
                && branches.len() == 2
                && let Some(null_at) = branches.iter().position(|b| b == &json!({"type": "null"}))
            {
                let keep = branches[1 - null_at].clone();
                map.remove("anyOf");
                if let Value::Object(k) = keep {
                    for (key, val) in k {
                        map.entry(key).or_insert(val);
                    }
                }
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types[0].clone();
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(e)) = map.get_mut("enum") {
                e.retain(|x| !x.is_null());
            }
            for child in map.values_mut() {
                drop_null(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| jsonschema::validator_for(schema()).expect("the generated schema is valid"))
}

fn schema() -> &'static Value {
    static S: OnceLock<Value> = OnceLock::new();
    S.get_or_init(generate)
}

/// Every schema violation in `doc`, as diagnostics.
pub fn check(doc: &Value) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    for e in validator().iter_errors(doc) {
        let pointer = e.instance_path().to_string();
        for d in to_diagnostics(&e, &pointer, doc) {
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
    out
}

fn to_diagnostics(
    e: &jsonschema::ValidationError<'_>,
    pointer: &str,
    doc: &Value,
) -> Vec<Diagnostic> {
    use jsonschema::error::ValidationErrorKind as K;
    let instance = doc.pointer(pointer).unwrap_or(&Value::Null);
    let place = describe_place(pointer, doc);
    match e.kind() {
        K::AdditionalProperties { unexpected } => {
            let allowed = allowed_fields(pointer, doc);
            unexpected
                .iter()
                .map(|name| {
                    let mut help = did_you_mean(name, allowed.iter().map(String::as_str));
                    if help.is_none() && !allowed.is_empty() {
                        help = Some(format!("expected one of: {}", allowed.join(", ")));
                    }
                    Diagnostic::new(
                        Code::UnknownField,
                        At::key(ptr(pointer, name)),
                        format!("unknown field `{name}` {place}"),
                    )
                    .label("not a field here")
                    .help_opt(help)
                })
                .collect()
        }
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![
                Diagnostic::new(
                    Code::MissingField,
                    At::key(pointer),
                    format!("missing field `{name}` {place}"),
                )
                .label(format!("`{name}` is required here"))
                .help_opt(field_doc(pointer, name, doc)),
            ]
        }
        K::Type { kind } => {
            let expected = type_name(kind);
            let mut d = Diagnostic::new(
                Code::WrongType,
                At::node(pointer),
                format!("expected {expected} {place}, found {}", short(instance)),
            );
            if pointer == "/metadata/version" {
                d.code = Code::InvalidVersion;
                d.message = format!(
                    "`metadata.version` must be a semantic version in quotes; YAML read {}",
                    short(instance)
                );
                d = d.help("write three numbers, quoted: version: \"2.1.0\"");
            } else if is_duration_field(pointer, doc) {
                d.code = Code::InvalidDuration;
                d.message = format!(
                    "expected a duration such as `90s` {place}, found {}",
                    short(instance)
                );
                d = d.help("write durations as text with a unit: `90s`, `10m`, `1h30m`");
            }
            vec![d]
        }
        K::Enum { options } => vec![enum_error(pointer, instance, options, &place)],
        K::Constant { expected_value } => vec![enum_error(
            pointer,
            instance,
            &json!([expected_value.as_ref()]),
            &place,
        )],
        K::Pattern { pattern } => vec![pattern_error(pointer, instance, pattern)],
        K::AnyOf { .. } => {
            let expected = schema_at(pointer, doc)
                .and_then(|s| s.get("anyOf"))
                .and_then(|a| a.get(0))
                .and_then(|first| {
                    resolve(first)
                        .get("type")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .unwrap_or_else(|| "a value".into());
            vec![Diagnostic::new(
                Code::WrongType,
                At::node(pointer),
                format!(
                    "expected {} or a `{{{{ template }}}}` {place}, found {}",
                    article(&expected),
                    short(instance)
                ),
            )]
        }
        K::MinProperties { .. } | K::MaxProperties { .. } if is_exactly_one(pointer) => {
            let what = if pointer.starts_with("/secrets/") {
                "a secret needs exactly one source: `env` or `file`".to_string()
            } else {
                let kinds: Vec<&str> = super::ConnectionKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect();
                format!("a connection needs exactly one kind: {}", kinds.join(", "))
            };
            vec![Diagnostic::new(Code::ExactlyOne, At::node(pointer), what)]
        }
        K::MinItems { .. } if pointer == "/steps" => {
            vec![Diagnostic::new(
                Code::InvalidValue,
                At::node(pointer),
                "a runbook needs at least one step",
            )]
        }
        _ => vec![Diagnostic::new(
            Code::InvalidValue,
            At::node(pointer),
            format!("{} {place}", e.masked()),
        )],
    }
}

fn is_exactly_one(pointer: &str) -> bool {
    let segs: Vec<&str> = pointer.split('/').collect();
    segs.len() == 3 && (segs[1] == "secrets" || segs[1] == "connections")
}

fn enum_error(pointer: &str, instance: &Value, options: &Value, place: &str) -> Diagnostic {
    let opts: Vec<String> = options
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
                .collect()
        })
        .unwrap_or_default();
    let got = instance
        .as_str()
        .map_or_else(|| instance.to_string(), String::from);
    let hint = did_you_mean(&got, opts.iter().map(String::as_str));
    let segs: Vec<&str> = pointer.split('/').collect();
    let is_action = segs.last() == Some(&"action")
        && matches!(segs.get(1), Some(&("steps" | "on_failure" | "finally")));
    if is_action {
        return Diagnostic::new(
            Code::UnknownAction,
            At::node(pointer),
            format!("unknown action `{got}`"),
        )
        .label("no such action")
        .help(hint.unwrap_or_else(|| "`lifeboat actions` lists them all".into()));
    }
    if pointer == "/apiVersion" || pointer == "/kind" {
        return Diagnostic::new(
            Code::UnsupportedVersion,
            At::node(pointer),
            format!(
                "unsupported {} `{got}`; this lifeboat reads {}",
                &pointer[1..],
                opts.join(", ")
            ),
        );
    }
    Diagnostic::new(
        Code::InvalidValue,
        At::node(pointer),
        format!("`{got}` is not allowed {place}"),
    )
    .label(format!("expected one of: {}", opts.join(", ")))
    .help_opt(hint)
}

fn pattern_error(pointer: &str, instance: &Value, pattern: &str) -> Diagnostic {
    let got = instance.as_str().unwrap_or_default();
    if pattern == DURATION_PATTERN {
        let why = super::duration::parse(got)
            .err()
            .unwrap_or_else(|| format!("`{got}` is not a duration"));
        return Diagnostic::new(
            Code::InvalidDuration,
            At::node(pointer),
            format!("invalid duration: {why}"),
        )
        .help("a duration is a number and a unit (ms, s, m, h, d): `90s`, `10m`, `1h30m`");
    }
    let segs: Vec<&str> = pointer.split('/').collect();
    let message = match segs.as_slice() {
        ["", "steps" | "on_failure" | "finally", _, "id"]
        | [
            "",
            "drill",
            "scenarios",
            _,
            "steady_state" | "inject",
            _,
            "id",
        ] => format!(
            "invalid step id `{got}`: an id starts with a lowercase letter and holds only lowercase letters, digits and `_`"
        ),
        ["", "metadata", "name"] => {
            format!("invalid runbook name `{got}`: use lowercase letters, digits and dashes")
        }
        ["", "params" | "secrets" | "connections", _] => format!(
            "invalid name `{got}`: names are letters, digits and `_`, not starting with a digit, so templates can use them"
        ),
        _ => format!("`{got}` does not match the pattern {pattern}"),
    };
    Diagnostic::new(Code::InvalidValue, At::node(pointer), message)
}

/// "in `with` of `postgres.query` (step `restore`)", "in `metadata`", ...
fn describe_place(pointer: &str, doc: &Value) -> String {
    let segs: Vec<&str> = pointer.split('/').skip(1).collect();
    match segs.as_slice() {
        [] => "at the top level".into(),
        ["steps" | "on_failure" | "finally", _, rest @ ..]
        | [
            "drill",
            "scenarios",
            _,
            "steady_state" | "inject",
            _,
            rest @ ..,
        ] => {
            let base_len = segs.len() - rest.len();
            let base: String = segs[..base_len].iter().map(|s| format!("/{s}")).collect();
            let step = doc.pointer(&base);
            let id = step
                .and_then(|s| s.get("id"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            let action = step.and_then(|s| s.get("action")).and_then(Value::as_str);
            match (rest, action) {
                (["with", ..], Some(a)) => format!("in `with` of `{a}` (step `{id}`)"),
                (["compensate", "with", ..], _) => {
                    let ca = step
                        .and_then(|s| s.pointer("/compensate/action"))
                        .and_then(Value::as_str)
                        .unwrap_or("?");
                    format!("in `with` of `{ca}` (compensation of step `{id}`)")
                }
                _ => format!("in step `{id}`"),
            }
        }
        [first, ..] => format!("in `{}`", unescape(first)),
    }
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn is_duration_field(pointer: &str, doc: &Value) -> bool {
    schema_at(pointer, doc)
        .is_some_and(|s| s.get("pattern").and_then(Value::as_str) == Some(DURATION_PATTERN))
}

fn type_name(kind: &jsonschema::error::TypeKind) -> String {
    use jsonschema::error::TypeKind;
    let one = |t: &jsonschema::JsonType| article(&t.to_string());
    match kind {
        TypeKind::Single(t) => one(t),
        TypeKind::Multiple(ts) => ts.iter().map(|t| one(&t)).collect::<Vec<_>>().join(" or "),
    }
}

fn article(t: &str) -> String {
    match t {
        "object" => "a mapping".into(),
        "array" => "a list".into(),
        "string" => "a string".into(),
        "integer" => "an integer".into(),
        "number" => "a number".into(),
        "boolean" => "true or false".into(),
        "null" => "nothing".into(),
        other => other.to_string(),
    }
}

/// A value in a few words, for "found ..." (never long: a whole mapping is not useful there).
pub fn short(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) if s.chars().count() > 40 => {
            format!("a string `{}…`", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("the string `{s}`"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn resolve(s: &Value) -> &Value {
    let mut cur = s;
    for _ in 0..16 {
        match cur
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(p) => match schema().pointer(p) {
                Some(next) => cur = next,
                None => break,
            },
            None => break,
        }
    }
    cur
}

/// The schema that applies to the instance at `pointer`, following `$ref`, `properties`, `items`,
/// `additionalProperties`, and the per-action `with` branches.
fn schema_at<'a>(pointer: &str, doc: &Value) -> Option<&'a Value> {
    let mut s = resolve(schema());
    let mut at = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = unescape(seg);
        let next = if let Some(p) = s.get("properties").and_then(|p| p.get(&seg)) {
            // A step's `with` is described by the branch its `action` selects.
            let branch = (seg == "with")
                .then(|| doc.pointer(&format!("{at}/action")).and_then(Value::as_str))
                .flatten()
                .and_then(|action| {
                    s.get("allOf")?.as_array()?.iter().find(|b| {
                        b.pointer("/if/properties/action/const")
                            .and_then(Value::as_str)
                            == Some(action)
                    })
                })
                .and_then(|b| b.pointer("/then/properties/with"));
            branch.unwrap_or(p)
        } else if let Some(i) = s.get("items").filter(|i| i.is_object()) {
            i
        } else if let Some(a) = s.get("additionalProperties").filter(|a| a.is_object()) {
            a
        } else if let Some(anyof) = s.get("anyOf").and_then(Value::as_array) {
            // Option<T> is `anyOf [T, null]`: descend into the first branch that is not null.
            anyof
                .iter()
                .map(resolve)
                .find(|b| b.get("type").and_then(Value::as_str) != Some("null"))?
        } else {
            return None;
        };
        s = resolve(next);
        if let Some(anyof) = s.get("anyOf").and_then(Value::as_array)
            && anyof.len() == 2
            && anyof
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("null"))
        {
            s = anyof
                .iter()
                .map(resolve)
                .find(|b| b.get("type").and_then(Value::as_str) != Some("null"))?;
        }
        at = ptr(&at, &seg);
    }
    Some(s)
}

fn allowed_fields(pointer: &str, doc: &Value) -> Vec<String> {
    schema_at(pointer, doc)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn field_doc(pointer: &str, name: &str, doc: &Value) -> Option<String> {
    let s = schema_at(&ptr(pointer, name), doc)?;
    s.get("description")
        .and_then(Value::as_str)
        .map(|d| format!("`{name}`: {d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_a_with_branch() {
        let s = generate();
        for name in crate::actions::NAMES {
            assert!(s["$defs"][format!("with.{name}")].is_object(), "{name}");
        }
        assert_eq!(
            s["$defs"]["Step"]["allOf"].as_array().unwrap().len(),
            crate::actions::NAMES.len()
        );
    }

    #[test]
    fn schema_walker_finds_action_fields() {
        let doc = json!({"steps": [{"id": "q", "action": "postgres.query", "with": {}}]});
        let fields = allowed_fields("/steps/0/with", &doc);
        assert!(fields.contains(&"sql".to_string()), "{fields:?}");
        assert!(is_duration_field("/steps/0/timeout", &doc));
    }
}
