//! `plan --live`: each step that can, reads the system it would change, before any run (the
//! records a DNS failover would replace). The only part of `plan` that touches the network or
//! reads secrets, and only when asked; `plan/` itself stays pure.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use super::context::RunScope;
use super::inputs;
use super::secrets::{self, Masker};
use crate::actions::{Action, ActionError, Exec, NoteFuture};
use crate::runbook::ValidRunbook;

/// One step's live look.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Look {
    pub step: String,
    /// What it read, in words; or why it could not read.
    #[serde(flatten)]
    pub result: LookResult,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LookResult {
    Now(String),
    Error(String),
}

/// How long one step's look may take: a plan must not hang on a dead server.
const LOOK_TIMEOUT: Duration = Duration::from_secs(15);

/// Looks at every step in `steps` (indices into `rb.steps`) whose action can. `Err`: the
/// secrets could not be read, so nothing could be.
pub async fn look(
    rb: &ValidRunbook,
    params: &IndexMap<String, Value>,
    steps: &[usize],
    http: &reqwest::Client,
) -> Result<Vec<Look>, String> {
    let secrets = secrets::resolve(rb)?;
    let masker = Masker::new(&secrets);
    let mut run = serde_json::Map::new();
    run.insert("id".into(), "plan".into());
    run.insert("runbook".into(), rb.name.clone().into());
    run.insert("version".into(), rb.version.to_string().into());
    let scope = RunScope::new(params, &secrets, run);
    let env = crate::runbook::templates::environment();
    let connection = |name: &str| inputs::connection(rb, &scope, &env, &masker, name);
    let eval = |_: &str, _: &Value| -> Result<bool, String> { Ok(false) };
    let progress = |_: &str| {};
    let note = |_: &str, _: Value| -> NoteFuture {
        Box::pin(async { Err(ActionError::permanent("a live look records nothing")) })
    };
    let recall = |_: &str| None;
    let mut looks = Vec::new();
    for &i in steps {
        let s = &rb.steps[i];
        if !s.action.previews() {
            continue;
        }
        let touched = Arc::new(AtomicBool::new(false));
        let ctx = scope.context(None, None, Some(&touched));
        let result = match inputs::render(&env, &s.with, &ctx, &touched, &masker) {
            Err(e) => Some(LookResult::Error(format!(
                "its inputs are known only during the run ({e})"
            ))),
            Ok(rendered) => match Action::parse(s.action.name(), &rendered.real) {
                Ok(Some(typed)) => {
                    let exec = Exec {
                        run_id: "plan",
                        step: &s.id,
                        attempt_key: "plan",
                        http,
                        eval: &eval,
                        connection: &connection,
                        progress: &progress,
                        note: &note,
                        recall: &recall,
                        calls: &crate::actions::Calls::default(),
                    };
                    match typed.preview(&exec) {
                        None => None,
                        Some(f) => Some(match tokio::time::timeout(LOOK_TIMEOUT, f).await {
                            Ok(Ok(now)) => LookResult::Now(now),
                            Ok(Err(e)) => LookResult::Error(e.message),
                            Err(_) => LookResult::Error(format!(
                                "no answer within {}s",
                                LOOK_TIMEOUT.as_secs()
                            )),
                        }),
                    }
                }
                Ok(None) => None,
                Err(e) => Some(LookResult::Error(format!(
                    "after rendering, `with{}` does not fit: {}",
                    e.field, e.message
                ))),
            },
        };
        // A secret that made it into a message (an echoing server) is masked like anywhere else.
        if let Some(result) = result {
            let result = match result {
                LookResult::Now(t) => LookResult::Now(masker.scrub(&t)),
                LookResult::Error(t) => LookResult::Error(masker.scrub(&t)),
            };
            looks.push(Look {
                step: s.id.clone(),
                result,
            });
        }
    }
    Ok(looks)
}
