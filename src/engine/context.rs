//! What templates see at run time: `params`, `secrets`, `env`, `steps.<id>.outputs`, `run`.
//! Built once per run; `steps` grows as steps finish, without copying earlier outputs, so making
//! a context for a step costs the same in the 1,000th step as in the first.

use std::collections::HashMap;
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
    pub fn set(&self, step: &str, outputs: &serde_json::Value) {
        let entry = J::from(minijinja::value::Serde(
            serde_json::json!({ "outputs": outputs }),
        ));
        self.map
            .write()
            .expect("outputs lock")
            .insert(step.to_string(), entry);
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

/// `secrets`, which notes that it was read: the dynamic half of taint tracking.
#[derive(Debug)]
struct SecretsView {
    values: Arc<indexmap::IndexMap<String, String>>,
    touched: Option<Arc<AtomicBool>>,
}

impl SecretsView {
    fn touch(&self) {
        if let Some(t) = &self.touched {
            t.store(true, Ordering::SeqCst);
        }
    }
}

impl Object for SecretsView {
    fn get_value(self: &Arc<Self>, key: &J) -> Option<J> {
        self.touch();
        self.values.get(key.as_str()?).map(|v| J::from(v.as_str()))
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.touch();
        Enumerator::Values(self.values.keys().map(|k| J::from(k.as_str())).collect())
    }
}

/// The process environment, read when a template asks (a resumed run sees the new process's).
#[derive(Debug)]
struct EnvView;

impl Object for EnvView {
    fn get_value(self: &Arc<Self>, key: &J) -> Option<J> {
        std::env::var(key.as_str()?).ok().map(J::from)
    }
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(std::env::vars().map(|(k, _)| J::from(k)).collect())
    }
}

/// The parts of a context that do not change during a run.
#[derive(Debug, Clone)]
pub struct RunScope {
    pub params: J,
    secrets: Arc<indexmap::IndexMap<String, String>>,
    pub steps: Arc<StepOutputs>,
    pub run: serde_json::Map<String, serde_json::Value>,
}

impl RunScope {
    pub fn new(
        params: &indexmap::IndexMap<String, serde_json::Value>,
        secrets: &super::secrets::Secrets,
        run: serde_json::Map<String, serde_json::Value>,
    ) -> RunScope {
        RunScope {
            params: J::from(minijinja::value::Serde(params)),
            secrets: Arc::new(secrets.values.clone()),
            steps: Arc::default(),
            run,
        }
    }

    /// A context; `attempt_key` fills `run.attempt_key`, `outputs` the bare `outputs` of
    /// `assert` expressions, and reading `secrets` raises `touched`.
    pub fn context(
        &self,
        attempt_key: Option<&str>,
        outputs: Option<&serde_json::Value>,
        touched: Option<&Arc<AtomicBool>>,
    ) -> J {
        let mut run = self.run.clone();
        if let Some(k) = attempt_key {
            run.insert("attempt_key".into(), k.into());
        }
        let mut ctx = vec![
            ("params", self.params.clone()),
            (
                "secrets",
                J::from_object(SecretsView {
                    values: self.secrets.clone(),
                    touched: touched.cloned(),
                }),
            ),
            ("env", J::from_object(EnvView)),
            ("steps", J::from_object(StepsView(self.steps.clone()))),
            ("run", J::from(minijinja::value::Serde(&run))),
        ];
        if let Some(o) = outputs {
            ctx.push(("outputs", J::from(minijinja::value::Serde(o))));
        }
        ctx.into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
            .into()
    }
}
