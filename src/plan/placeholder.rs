//! Stand-ins for what only a run knows. A placeholder renders as `⟨steps.x.outputs.key⟩`, a secret
//! as `***`; any attribute of one is another of the same kind, so templates render without the
//! values and the plan never holds one.

use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde_json::Value;

pub const MASK: &str = "***";

#[derive(Debug)]
struct Placeholder {
    path: String,
    secret: bool,
}

impl Object for Placeholder {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        let key = key.as_str().map_or_else(|| key.to_string(), String::from);
        Some(minijinja::Value::from_object(Placeholder {
            path: format!("{}.{key}", self.path),
            secret: self.secret,
        }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }

    fn is_true(self: &Arc<Self>) -> bool {
        true
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result
    where
        Self: Sized + 'static,
    {
        if self.secret {
            f.write_str(MASK)
        } else {
            write!(f, "⟨{}⟩", self.path)
        }
    }
}

fn placeholder(path: &str, secret: bool) -> minijinja::Value {
    minijinja::Value::from_object(Placeholder {
        path: path.to_string(),
        secret,
    })
}

/// The template context for a plan: real params, placeholders for the rest.
pub fn context(params: &IndexMap<String, Value>) -> minijinja::Value {
    minijinja::context! {
        params => minijinja::Value::from(minijinja::value::Serde(params)),
        secrets => placeholder("secrets", true),
        env => placeholder("env", false),
        steps => placeholder("steps", false),
        run => placeholder("run", false),
        outputs => placeholder("outputs", false),
    }
}

/// A whole-expression template that evaluated to a placeholder becomes its text.
pub fn shape(v: &minijinja::Value) -> Option<Value> {
    v.downcast_object_ref::<Placeholder>().map(|p| {
        Value::String(if p.secret {
            MASK.to_string()
        } else {
            format!("⟨{}⟩", p.path)
        })
    })
}
