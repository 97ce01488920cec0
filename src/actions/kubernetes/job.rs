//! `kubernetes.job`: run a Job from an inline spec and wait for it to finish.

use std::collections::BTreeMap;

use ::kube::api::{Api, ListParams, PostParams};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{self as kube, Kube};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Effect, Exec, Output,
    When, WithProblem, out, support::the_connection,
};
use crate::runbook::{ConnectionKind, DurationText};

/// Create a Job and wait until it completes or fails. This is also how a runbook hands a heavy
/// step (a restore of a large database, a reindex) to the cluster instead of running it where
/// lifeboat runs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesJob {
    pub connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Start of the Job's name (default: the step id); lifeboat adds a suffix unique to the
    /// attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extra labels on the Job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The Job's `spec` (batch/v1 JobSpec), as in a manifest.
    pub spec: serde_json::Map<String, Value>,
    /// Wait until the Job finishes (default true); otherwise the step ends once it is created.
    #[serde(default = "yes")]
    pub wait: bool,
    /// How long to wait (default: the step's timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<DurationText>,
}

fn yes() -> bool {
    true
}

/// Labels that tie a Job to the run and step that made it, so an attempt run again after a crash
/// finds the Job already running instead of starting a second one.
const RUN_LABEL: &str = "lifeboat.dev/run";
const STEP_LABEL: &str = "lifeboat.dev/step";

impl ActionSpec for KubernetesJob {
    const NAME: &'static str = "kubernetes.job";
    const SUMMARY: &'static str = "Run a Kubernetes Job from an inline spec and wait for it";
    const OUTPUTS: &'static [Output] = &[
        out("name", "the Job's name"),
        out("namespace", "its namespace"),
        out("succeeded", "pods that succeeded"),
        out("failed", "pods that failed"),
        out("start_time", "when the Job started (RFC 3339)"),
        out("completion_time", "when it completed (RFC 3339)"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    // The Job runs whatever its containers run; lifeboat cannot take that back.
    const CHANGES: Effect = Effect::Irreversible;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;

    /// An attempt adopts the Job an interrupted attempt of the same run and step left running or
    /// finished, so running it again does not run the work twice.
    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let k = Kube::from_exec(cx, &self.connection, self.namespace.as_deref()).await?;
            let jobs: Api<Job> = Api::namespaced(k.client.clone(), &k.namespace);
            let selector = format!(
                "{RUN_LABEL}={},{STEP_LABEL}={}",
                label_value(cx.run_id),
                label_value(cx.step)
            );
            let doing = format!("listing jobs in {}", k.namespace);
            let existing = jobs
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| kube::classify(&e, &doing, &k.server))?;
            // The newest Job of this run and step that has not failed is the one to wait for.
            let adopt = existing
                .items
                .into_iter()
                .filter(|j| !has_condition(j, "Failed"))
                .max_by_key(|j| {
                    j.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second())
                });
            let name = match adopt {
                Some(j) => j.metadata.name.unwrap_or_default(),
                None => {
                    let name = job_name(self.name.as_deref().unwrap_or(cx.step), cx.attempt_key);
                    let mut labels: BTreeMap<String, String> = self.labels.clone();
                    labels.insert(RUN_LABEL.into(), label_value(cx.run_id));
                    labels.insert(STEP_LABEL.into(), label_value(cx.step));
                    let job = json!({
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "metadata": {"name": name, "labels": labels, "annotations": {"lifeboat.dev/attempt": cx.attempt_key}},
                        "spec": self.spec,
                    });
                    let job: Job = serde_json::from_value(job).map_err(|e| {
                        ActionError::permanent(format!("`spec` is not a Job spec: {e}"))
                    })?;
                    let doing = format!("creating job {}/{name}", k.namespace);
                    jobs.create(&PostParams::default(), &job)
                        .await
                        .map_err(|e| kube::classify(&e, &doing, &k.server))?;
                    name
                }
            };
            if !self.wait {
                return Ok(json!({"name": name, "namespace": k.namespace}));
            }
            let within = crate::actions::support::duration_or(
                self.within.as_ref(),
                std::time::Duration::from_secs(86_400),
            )?;
            let mut last = String::new();
            let mut poll = kube::Poll::new(within);
            loop {
                let doing = format!("reading job {}/{name}", k.namespace);
                match jobs.get(&name).await {
                    Ok(j) => {
                        poll.ok();
                        let s = j.status.clone().unwrap_or_default();
                        let now = format!(
                            "job {}/{name}: {} active, {} succeeded, {} failed",
                            k.namespace,
                            s.active.unwrap_or(0),
                            s.succeeded.unwrap_or(0),
                            s.failed.unwrap_or(0)
                        );
                        if now != last {
                            (cx.progress)(&now);
                            last = now;
                        }
                        if has_condition(&j, "Complete") {
                            return Ok(outputs(&j, &k.namespace));
                        }
                        if has_condition(&j, "Failed") {
                            let c = condition(&j, "Failed");
                            let why = c
                                .map(|c| {
                                    format!(
                                        "{}: {}",
                                        c.reason.clone().unwrap_or_default(),
                                        c.message.clone().unwrap_or_default()
                                    )
                                })
                                .unwrap_or_default();
                            let failed = j.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
                            return Err(ActionError::permanent(format!(
                                "job {}/{name} failed ({failed} pod(s) failed): {why}; `kubectl logs -n {} job/{name}` shows its output",
                                k.namespace, k.namespace
                            )));
                        }
                    }
                    // The Job was created or found by this attempt: the server was reached before.
                    Err(e) => poll.failed(kube::classify(&e, &doing, &k.server), true)?,
                }
                poll.next(|within| format!("job {}/{name} did not finish within {within}; it is still there and may still run", k.namespace)).await?;
            }
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Kubernetes])
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p: Vec<WithProblem> = WithProblem::duration("/within", self.within.as_ref())
            .into_iter()
            .collect();
        p.extend(super::namespace_problem(
            "/namespace",
            self.namespace.as_deref(),
        ));
        if let Err(e) = serde_json::from_value::<JobSpec>(Value::Object(self.spec.clone())) {
            p.push(WithProblem::new("/spec", format!("not a Job spec: {e}")));
            return p;
        }
        // The API server would refuse this, but a reviewer should hear it from the dry run.
        match self
            .spec
            .get("template")
            .and_then(|t| t.pointer("/spec/restartPolicy"))
            .and_then(Value::as_str)
        {
            Some("Never" | "OnFailure") => {}
            Some(s) if crate::actions::is_template(s) => {}
            _ => p.push(WithProblem::new(
                "/spec/template/spec/restartPolicy",
                "a Job's pods need `restartPolicy: Never` or `OnFailure`",
            )),
        }
        if let Some(n) = &self.name
            && !crate::actions::is_template(n)
            && !is_dns_label_prefix(n)
        {
            p.push(WithProblem::new(
                "/name",
                "a Job name is lowercase letters, digits and `-`, at most 50 characters",
            ));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let image = self
            .spec
            .get("template")
            .and_then(|t| t.pointer("/spec/containers/0/image"))
            .and_then(Value::as_str)
            .map(|i| format!(" (image {i})"))
            .unwrap_or_default();
        let ns = self
            .namespace
            .as_deref()
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default();
        let name = self.name.as_deref().unwrap_or("<step id>");
        let wait = if self.wait {
            "; wait until it completes"
        } else {
            ""
        };
        format!(
            "run job {name}-…{image}{ns} on {}{wait}",
            cx.connection(&self.connection)
        )
    }
}

fn condition<'j>(j: &'j Job, kind: &str) -> Option<&'j k8s_openapi::api::batch::v1::JobCondition> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

fn has_condition(j: &Job, kind: &str) -> bool {
    condition(j, kind).is_some()
}

fn outputs(j: &Job, namespace: &str) -> Value {
    let s = j.status.clone().unwrap_or_default();
    let time = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.to_string())
    };
    json!({
        "name": j.metadata.name,
        "namespace": namespace,
        "succeeded": s.succeeded.unwrap_or(0),
        "failed": s.failed.unwrap_or(0),
        "start_time": time(s.start_time),
        "completion_time": time(s.completion_time),
    })
}

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`.
fn label_value(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

fn is_dns_label_prefix(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 50
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// `<prefix>-<8 hex of the attempt key>`, a valid DNS label: step ids may hold `_`.
fn job_name(prefix: &str, attempt_key: &str) -> String {
    use sha2::Digest;
    let mut p: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    p = p.trim_matches('-').to_string();
    if p.is_empty() {
        p = "lifeboat".into();
    }
    let h = sha2::Sha256::digest(attempt_key.as_bytes());
    format!("{p}-{}", crate::runlog::hex(&h[..4]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;

    fn spec() -> Value {
        json!({"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "r", "image": "postgres:15", "command": ["pg_restore"]}]}}})
    }

    #[test]
    fn describes_and_checks_the_spec() {
        let j =
            parse::<KubernetesJob>(json!({"connection": "k", "name": "restore", "spec": spec()}));
        assert!(j.check().is_empty(), "{:?}", j.check());
        assert_eq!(
            j.describe(&Cx),
            "run job restore-… (image postgres:15) on <k>; wait until it completes"
        );
        let mut s = spec();
        s["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("restartPolicy");
        let j = parse::<KubernetesJob>(json!({"connection": "k", "spec": s}));
        assert_eq!(j.check()[0].field, "/spec/template/spec/restartPolicy");
        let j = parse::<KubernetesJob>(
            json!({"connection": "k", "spec": {"backoffLimit": "many", "template": {}}}),
        );
        assert_eq!(j.check()[0].field, "/spec");
        let j = parse::<KubernetesJob>(
            json!({"connection": "k", "name": "Restore_DB", "spec": spec()}),
        );
        assert_eq!(j.check()[0].field, "/name");
    }

    #[test]
    fn names_are_dns_labels_unique_per_attempt() {
        let a = job_name("restore_db", "R/restore_db/1");
        assert!(
            a.starts_with("restore-db-") && a.len() == "restore-db-".len() + 8,
            "{a}"
        );
        assert_ne!(a, job_name("restore_db", "R/restore_db/2"));
        assert_eq!(
            label_value("20261121T223800Z-abc123"),
            "20261121T223800Z-abc123"
        );
    }
}
