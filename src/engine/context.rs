//! What templates see at run time: `params`, `secrets`, `env`, `steps.<id>.outputs` (and
//! `.status`, `.error`), `run`.
//! Built once per run; `steps` grows as steps finish, without copying earlier outputs, so making
//! a context for a step costs the same in the 1,000th step as in the first.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use minijinja::Value as J;
use minijinja::value::{Enumerator, Object, ObjectRepr};

/// Outputs of finished steps, shared by every context of the run.
#[derive(Debug, Default)]
pub struct StepOutputs {
    map: RwLock<HashMap<String, J>>,
}

impl StepOutputs {
    /// A step that succeeded: `steps.<id>.outputs`, and `status` `succeeded`.
    pub fn set(&self, step: &str, outputs: &serde_json::Value) {
        self.insert(
            step,
            serde_json::json!({ "outputs": outputs, "status": "succeeded" }),
        );
    }
    /// A step that settled otherwise: `failed` (with `on_failure: continue`, so the steps after
    /// it run and may take another path) with its `error`, or `skipped`. Its `outputs` are
    /// empty.
    pub fn set_settled(&self, step: &str, status: &str, error: Option<&str>) {
        self.insert(
            step,
            serde_json::json!({ "outputs": {}, "status": status, "error": error }),
        );
    }
    /// A `for_each` group: the outputs of its steps, a list in item order, and how it settled.
    pub fn set_group(&self, group: &str, outputs: Vec<serde_json::Value>, status: &str) {
        self.insert(
            group,
            serde_json::json!({ "outputs": outputs, "status": status }),
        );
    }
    fn insert(&self, step: &str, entry: serde_json::Value) {
        let entry = J::from(minijinja::value::Serde(entry));
        self.map
            .write()
            .expect("outputs lock")
            .insert(step.to_string(), entry);
    }
    /// What `steps.<step>` is, once the step settled.
    pub fn get(&self, step: &str) -> Option<J> {
        self.map.read().expect("outputs lock").get(step).cloned()
    }
    pub fn remove(&self, step: &str) {
        self.map.write().expect("outputs lock").remove(step);
    }
}

#[derive(Debug)]
struct StepsView(Arc<StepOutputs>);

impl Object for StepsView {
    fn get_value(self: &Arc<Self>, key: &J) -> Option<J> {
        self.0
            .map
            .read()
            .expect("outputs lock")
            .get(key.as_str()?)
            .cloned()
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys: Vec<J> = self
            .0
            .map
            .read()
            .expect("outputs lock")
            .keys()
            .map(|k| J::from(k.as_str()))
            .collect();
        Enumerator::Values(keys)
    }
}

/// Raises a template's taint: the value it produces came from a secret.
#[derive(Debug, Clone, Default)]
struct Taint(Option<Arc<AtomicBool>>);

impl Taint {
    fn raise(&self) {
        if let Some(t) = &self.0 {
            t.store(true, Ordering::SeqCst);
        }
    }
}

/// `secrets`, which notes that it was read: the dynamic half of taint tracking.
#[derive(Debug)]
struct SecretsView {
    values: Arc<indexmap::IndexMap<String, String>>,
    taint: Taint,
}

impl Object for SecretsView {
    fn get_value(self: &Arc<Self>, key: &J) -> Option<J> {
        self.taint.raise();
        self.values.get(key.as_str()?).map(|v| J::from(v.as_str()))
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.taint.raise();
        Enumerator::Values(self.values.keys().map(|k| J::from(k.as_str())).collect())
    }
}

/// What the run knows of its secrets, to taint every other way to their values.
#[derive(Debug, Default)]
struct Known {
    /// The variables `env:` secrets are read from.
    env_vars: HashSet<String>,
    values: Vec<String>,
}

/// The process environment, read when a template asks (a resumed run sees the new process's).
/// A secret's own variable, or any variable holding a secret's value, taints what reads it.
#[derive(Debug)]
struct EnvView {
    known: Arc<Known>,
    taint: Taint,
}

impl Object for EnvView {
    fn get_value(self: &Arc<Self>, key: &J) -> Option<J> {
        let name = key.as_str()?;
        let value = std::env::var(name).ok()?;
        if self.known.env_vars.contains(name)
            || self.known.values.iter().any(|s| value.contains(s.as_str()))
        {
            self.taint.raise();
        }
        Some(J::from(value))
    }
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(std::env::vars().map(|(k, _)| J::from(k)).collect())
    }
}

/// `params`: a param whose value holds a secret (given on the command line by mistake, say)
/// taints what reads it.
#[derive(Debug)]
struct ParamsView {
    params: J,
    holding: Arc<HashSet<String>>,
    taint: Taint,
}

impl Object for ParamsView {
    fn get_value(self: &Arc<Self>, key: &J) -> Option<J> {
        let name = key.as_str()?;
        if self.holding.contains(name) {
            self.taint.raise();
        }
        self.params
            .get_attr(name)
            .ok()
            .filter(|v| !v.is_undefined())
    }
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.params.try_iter() {
            Ok(keys) => Enumerator::Values(keys.collect()),
            Err(_) => Enumerator::Empty,
        }
    }
}

/// The parts of a context that do not change during a run.
#[derive(Debug, Clone)]
pub struct RunScope {
    params: J,
    /// Params whose values hold a secret.
    holding: Arc<HashSet<String>>,
    secrets: Arc<indexmap::IndexMap<String, String>>,
    known: Arc<Known>,
    pub steps: Arc<StepOutputs>,
    pub run: serde_json::Map<String, serde_json::Value>,
    /// How the run ended (`status`, `failed_step`, `error`), once it did: for `on_failure` and
    /// `finally` steps, which validation alone lets read it.
    ending: Arc<RwLock<serde_json::Map<String, serde_json::Value>>>,
}

impl RunScope {
    pub fn new(
        params: &indexmap::IndexMap<String, serde_json::Value>,
        secrets: &super::secrets::Secrets,
        run: serde_json::Map<String, serde_json::Value>,
    ) -> RunScope {
        let values: Vec<String> = secrets.values.values().cloned().collect();
        let holding = params
            .iter()
            .filter(|(_, v)| super::secrets::holds_secret(v, &values))
            .map(|(k, _)| k.clone())
            .collect();
        RunScope {
            params: J::from(minijinja::value::Serde(params)),
            holding: Arc::new(holding),
            secrets: Arc::new(secrets.values.clone()),
            known: Arc::new(Known {
                env_vars: secrets.env_vars.iter().cloned().collect(),
                values,
            }),
            steps: Arc::default(),
            run,
            ending: Arc::default(),
        }
    }

    /// Records how the run ended, for the templates of the steps that run after.
    pub fn set_ending(&self, status: &str, failed_step: Option<&str>, error: Option<&str>) {
        *self.ending.write().expect("ending lock") = serde_json::json!({
            "status": status,
            "failed_step": failed_step,
            "error": error,
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
    }

    /// A context; `attempt_key` fills `run.attempt_key`, `outputs` the bare `outputs` of
    /// `assert` expressions, and reading `secrets` raises `touched`.
    pub fn context(
        &self,
        attempt_key: Option<&str>,
        outputs: Option<&serde_json::Value>,
        touched: Option<&Arc<AtomicBool>>,
    ) -> J {
        self.context_with(attempt_key, outputs, touched, None, None)
    }

    /// A context for a step a `for_each` made: `item` too.
    pub fn step_context(
        &self,
        attempt_key: Option<&str>,
        outputs: Option<&serde_json::Value>,
        touched: Option<&Arc<AtomicBool>>,
        item: Option<&serde_json::Value>,
    ) -> J {
        self.context_with(attempt_key, outputs, touched, None, item)
    }

    /// The context of a drill's steady-state check's `assert`: `before` too, what the same
    /// check returned before the fault.
    pub fn assert_context(
        &self,
        outputs: &serde_json::Value,
        before: Option<J>,
        item: Option<&serde_json::Value>,
    ) -> J {
        self.context_with(None, Some(outputs), None, before, item)
    }

    fn context_with(
        &self,
        attempt_key: Option<&str>,
        outputs: Option<&serde_json::Value>,
        touched: Option<&Arc<AtomicBool>>,
        before: Option<J>,
        item: Option<&serde_json::Value>,
    ) -> J {
        let mut run = self.run.clone();
        run.extend(self.ending.read().expect("ending lock").clone());
        if let Some(k) = attempt_key {
            run.insert("attempt_key".into(), k.into());
        }
        let taint = Taint(touched.cloned());
        let mut ctx = vec![
            (
                "params",
                J::from_object(ParamsView {
                    params: self.params.clone(),
                    holding: self.holding.clone(),
                    taint: taint.clone(),
                }),
            ),
            (
                "secrets",
                J::from_object(SecretsView {
                    values: self.secrets.clone(),
                    taint: taint.clone(),
                }),
            ),
            (
                "env",
                J::from_object(EnvView {
                    known: self.known.clone(),
                    taint,
                }),
            ),
            ("steps", J::from_object(StepsView(self.steps.clone()))),
            ("run", J::from(minijinja::value::Serde(&run))),
        ];
        if let Some(o) = outputs {
            ctx.push(("outputs", J::from(minijinja::value::Serde(o))));
        }
        if let Some(b) = before {
            ctx.push(("before", b));
        }
        if let Some(i) = item {
            ctx.push(("item", J::from(minijinja::value::Serde(i))));
        }
        ctx.into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
            .into()
    }
}
