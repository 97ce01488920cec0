//! `Tpl<T>`: a typed field that may instead hold a `{{ template }}` rendered at run time.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

/// A literal `T`, or a template string that must render to one.
#[derive(Debug, Clone, PartialEq)]
pub enum Tpl<T> {
    Value(T),
    Template(String),
}

/// Whether a string holds template syntax.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Whether a string is a plan placeholder (`⟨steps.x.outputs.y⟩`): a value known only at run
/// time, which a typed field accepts as it accepts the template it came from.
pub fn is_placeholder(s: &str) -> bool {
    s.starts_with('⟨') && s.ends_with('⟩')
}

impl<T> Tpl<T> {
    pub fn value(&self) -> Option<&T> {
        match self {
            Tpl::Value(v) => Some(v),
            Tpl::Template(_) => None,
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Tpl<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if let serde_json::Value::String(s) = &v
            && (is_template(s) || is_placeholder(s))
        {
            return Ok(Tpl::Template(s.clone()));
        }
        T::deserialize(v).map(Tpl::Value).map_err(D::Error::custom)
    }
}

impl<T: Serialize> Serialize for Tpl<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Tpl::Value(v) => v.serialize(s),
            Tpl::Template(t) => t.serialize(s),
        }
    }
}

impl<T: fmt::Display> fmt::Display for Tpl<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tpl::Value(v) => v.fmt(f),
            Tpl::Template(t) => f.write_str(t),
        }
    }
}

impl<T: JsonSchema> JsonSchema for Tpl<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Templated_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let inner = generator.subschema_for::<T>();
        schemars::json_schema!({
            "anyOf": [inner, {"type": "string", "pattern": r"\{[{%]"}],
        })
    }
}
