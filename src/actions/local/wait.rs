//! `wait`: sleep for a while, or poll a read-only action until an expression holds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::actions::{
    ActionError, ActionFuture, ActionSpec, DescribeContext, Effect, Exec, Output, When,
    WithProblem, out,
};
use crate::runbook::DurationText;

/// Pause the run: for a fixed time (`for`), or until `until` holds over the outputs of the
/// read-only action in `check`, run every `every` (the step's `timeout` bounds the wait).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// How long to wait.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<DurationText>,
    /// Expression over `outputs` of `check`; the wait ends when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The read-only action polled, e.g. `{action: http.request, with: {url: ...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Probe>,
    /// Time between polls; 5s by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<DurationText>,
}

/// An action run by `wait` to poll.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub action: String,
    #[serde(rename = "with", default = "crate::runbook::empty_object")]
    pub with: serde_json::Value,
}

impl Probe {
    fn typed(&self) -> Result<crate::actions::Action, WithProblem> {
        match crate::actions::Action::parse(&self.action, &self.with) {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err(WithProblem::new(
                "/check/action",
                format!("unknown action `{}`", self.action),
            )),
            Err(e) => Err(WithProblem::new(
                format!("/check/with{}", e.field),
                e.message,
            )),
        }
    }
}

const DEFAULT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl ActionSpec for Wait {
    const NAME: &'static str = "wait";
    const SUMMARY: &'static str =
        "Pause for a fixed time, or poll a read-only action until a condition holds";
    const OUTPUTS: &'static [Output] = &[
        out("waited_ms", "milliseconds actually waited"),
        out("polls", "how many times `check` ran"),
        out("outputs", "the outputs of the last `check`"),
    ];
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn check(&self) -> Vec<WithProblem> {
        let mut out: Vec<WithProblem> = WithProblem::duration("/for", self.duration.as_ref())
            .into_iter()
            .collect();
        out.extend(WithProblem::duration("/every", self.every.as_ref()));
        match (&self.duration, &self.until, &self.check) {
            (Some(_), None, None) => {}
            (None, Some(until), Some(probe)) => {
                if let Err(e) = crate::runbook::templates::environment().compile_expression(until) {
                    out.push(WithProblem::new(
                        "/until",
                        format!(
                            "not an expression: {}",
                            e.detail().unwrap_or("syntax error")
                        ),
                    ));
                }
                match probe.typed() {
                    Ok(a) if a.effect() != Effect::ReadOnly => out.push(WithProblem::new(
                        "/check/action",
                        format!(
                            "`{}` changes things; `wait` may only poll read-only actions",
                            probe.action
                        ),
                    )),
                    Ok(crate::actions::Action::Wait(_) | crate::actions::Action::Approval(_)) => {
                        out.push(WithProblem::new(
                            "/check/action",
                            format!("`{}` cannot be polled", probe.action),
                        ))
                    }
                    Ok(a) => out.extend(a.check().into_iter().map(|p| WithProblem {
                        field: format!("/check/with{}", p.field),
                        ..p
                    })),
                    Err(p) => out.push(p),
                }
            }
            _ => out.push(WithProblem::new(
                "",
                "give `for` (a fixed wait), or `until` and `check` (a poll)",
            )),
        }
        out
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        match (&self.duration, &self.until, &self.check) {
            (Some(d), _, _) => format!("wait {}", d.0.as_str().unwrap_or("?")),
            (None, Some(until), Some(probe)) => {
                let every = self
                    .every
                    .as_ref()
                    .and_then(|e| e.0.as_str())
                    .unwrap_or("5s");
                let what = probe
                    .typed()
                    .map_or_else(|_| probe.action.clone(), |a| a.describe(cx));
                format!("every {every}: {what}, until {until}")
            }
            _ => "wait".into(),
        }
    }
    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let waited = |polls: u32, outputs: serde_json::Value| {
                serde_json::json!({
                    "waited_ms": started.elapsed().as_millis() as u64,
                    "polls": polls,
                    "outputs": outputs,
                })
            };
            if let Some(d) = &self.duration {
                let d = crate::actions::support::duration(d)?;
                // tokio's timer ticks in milliseconds: even a zero sleep would wait for a tick.
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                }
                return Ok(waited(0, serde_json::Value::Null));
            }
            let (Some(until), Some(probe)) = (&self.until, &self.check) else {
                return Err(ActionError::permanent("give `for`, or `until` and `check`"));
            };
            let every = crate::actions::support::duration_or(self.every.as_ref(), DEFAULT_EVERY)?;
            let action = probe
                .typed()
                .map_err(|p| ActionError::permanent(p.message))?;
            let mut polls = 0;
            loop {
                polls += 1;
                match action.execute(cx).await {
                    Ok(outputs) => {
                        if (cx.eval)(until, &outputs).map_err(ActionError::permanent)? {
                            return Ok(waited(polls, outputs));
                        }
                    }
                    // A poll that fails for a passing reason is just another "not yet".
                    Err(e) if e.transient => {}
                    Err(e) => return Err(e),
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn checks_the_duration() {
        assert_eq!(describe::<Wait>(json!({"for": "30s"})), "wait 30s");
        let bad = parse::<Wait>(json!({"for": "30 seconds"})).check();
        assert_eq!(bad[0].field, "/for");
    }

    #[test]
    fn a_poll_needs_a_read_only_check() {
        let ok = parse::<Wait>(
            json!({"until": "outputs.status == 200", "check": {"action": "http.request", "with": {"url": "http://127.0.0.1/h"}}}),
        );
        assert!(ok.check().is_empty(), "{:?}", ok.check());
        assert_eq!(
            ok.describe(&Cx),
            "every 5s: GET http://127.0.0.1/h and expect 2xx, until outputs.status == 200"
        );
        let writes = parse::<Wait>(
            json!({"until": "true", "check": {"action": "shell", "with": {"script": "rm -rf /tmp/x"}}}),
        );
        assert_eq!(writes.check()[0].field, "/check/action");
        let typo = parse::<Wait>(
            json!({"until": "true", "check": {"action": "http.request", "with": {"ulr": "x"}}}),
        );
        assert!(
            typo.check()[0].field.starts_with("/check/with"),
            "{:?}",
            typo.check()
        );
        assert_eq!(parse::<Wait>(json!({})).check().len(), 1);
    }
}
