//! `kubernetes.scale`: set a Deployment's or StatefulSet's replica count.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Workload;
use super::{self as kube, Kube};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, Tpl, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::{ConnectionKind, DurationText};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WaitFor {
    /// Until the rollout is complete and all replicas are ready.
    Ready,
}

/// Scale a workload. The previous replica count is an output, so a `compensate` can restore it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesScale {
    /// A `kubernetes` connection.
    pub connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<String>,
    /// Overrides the connection's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub replicas: Tpl<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitFor>,
    /// How long `wait` may take (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout: Option<DurationText>,
}

/// Annotations on the workload: which run and step scaled it, and the count before.
const SCALED_BY: &str = "lifeboat.dev/scaled-by";
const PREVIOUS: &str = "lifeboat.dev/previous-replicas";

impl KubernetesScale {
    fn workload(&self) -> Workload<'_> {
        Workload {
            deployment: self.deployment.as_deref(),
            statefulset: self.statefulset.as_deref(),
        }
    }
}

impl ActionSpec for KubernetesScale {
    const NAME: &'static str = "kubernetes.scale";
    const SUMMARY: &'static str = "Scale a Deployment or StatefulSet, recording the previous count";
    const OUTPUTS: &'static [Output] = &[
        out("previous_replicas", "the replica count before scaling"),
        out("replicas", "the replica count set"),
        out(
            "ready_replicas",
            "replicas ready when the step ended (with `wait: ready`)",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    // Scaling to zero takes the service down; any other count is a capacity change.
    const DESTRUCTIVE: When<Self> = When::If {
        what: "to 0 replicas, or to a count known only at run time",
        test: |a| !matches!(a.replicas, Tpl::Value(n) if n > 0),
    };
    const RUNNABLE: bool = true;

    /// The count before the first attempt is kept on the workload itself (an annotation naming
    /// the run and step), so an attempt run again after a crash reports the original count,
    /// not the 0 it set, and `compensate` restores the right number.
    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let (kind, name) =
                kube::kind_and_name(self.deployment.as_deref(), self.statefulset.as_deref())?;
            let replicas = *self
                .replicas
                .value()
                .ok_or_else(|| ActionError::permanent("`replicas` did not render to a number"))?;
            let k = Kube::from_exec(cx, &self.connection, self.namespace.as_deref()).await?;
            let by = format!("{}/{}", cx.run_id, cx.step);
            // Controllers write a workload's status all the time, and each write moves its
            // resourceVersion: a conflict here is usually one of those, so read again and
            // retry at once (as client-go's RetryOnConflict does) before giving up.
            let mut tries = 0;
            let previous = loop {
                tries += 1;
                let w = kube::get_workload(&k, kind, name).await?;
                let current = w
                    .pointer("/spec/replicas")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(1);
                let ann = |key: &str| {
                    w.pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))
                        .and_then(serde_json::Value::as_str)
                        .map(String::from)
                };
                let previous = match (ann(SCALED_BY), ann(PREVIOUS)) {
                    (Some(b), Some(p)) if b == by => p.parse::<i64>().unwrap_or(current),
                    _ => current,
                };
                let rv = w
                    .pointer("/metadata/resourceVersion")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                // One conditional write: a concurrent change to the workload makes it fail with
                // a conflict instead of being overwritten blindly.
                let mut patch =
                    kube::annotations(&[(SCALED_BY, &by), (PREVIOUS, &previous.to_string())]);
                patch["metadata"]["resourceVersion"] = serde_json::json!(rv);
                patch["spec"] = serde_json::json!({"replicas": replicas});
                match kube::patch_workload(&k, kind, name, &patch, false).await {
                    Ok(_) => break previous,
                    Err(e)
                        if e.transient
                            && e.message.contains("stale resourceVersion")
                            && tries < 5 =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            let mut out = serde_json::json!({"previous_replicas": previous, "replicas": replicas});
            if self.wait == Some(WaitFor::Ready) {
                let within = crate::actions::support::duration_or(
                    self.wait_timeout.as_ref(),
                    std::time::Duration::from_secs(300),
                )?;
                let r = kube::wait_rollout(&k, kind, name, within, cx.progress).await?;
                out["ready_replicas"] = serde_json::json!(r.ready);
            }
            Ok(out)
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Kubernetes])
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.workload().check();
        p.extend(super::namespace_problem(
            "/namespace",
            self.namespace.as_deref(),
        ));
        p.extend(WithProblem::duration(
            "/wait_timeout",
            self.wait_timeout.as_ref(),
        ));
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let ns = self
            .namespace
            .as_deref()
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default();
        let wait = match self.wait {
            Some(WaitFor::Ready) => {
                let t = self
                    .wait_timeout
                    .as_ref()
                    .and_then(|d| d.0.as_str())
                    .unwrap_or("5m");
                format!("; wait up to {t} until ready")
            }
            None => String::new(),
        };
        format!(
            "scale {}{ns} on {} to {} replicas{wait}",
            self.workload(),
            cx.connection(&self.connection),
            self.replicas
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn scale_to_zero_is_destructive() {
        let s = parse::<KubernetesScale>(
            json!({"connection": "prod", "deployment": "orders-api", "replicas": 0}),
        );
        assert!(s.destructive());
        assert_eq!(
            s.describe(&Cx),
            "scale deployment orders-api on <prod> to 0 replicas"
        );
        let s = parse::<KubernetesScale>(
            json!({"connection": "prod", "deployment": "orders-api", "replicas": 3, "wait": "ready"}),
        );
        assert!(!s.destructive());
        assert_eq!(
            s.describe(&Cx),
            "scale deployment orders-api on <prod> to 3 replicas; wait up to 5m until ready"
        );
    }

    #[test]
    fn one_workload() {
        let s = parse::<KubernetesScale>(json!({"connection": "p", "replicas": 1}));
        assert_eq!(s.check().len(), 1);
        assert!(
            reject::<KubernetesScale>(
                json!({"connection": "p", "deployment": "d", "replicas": -1})
            )
            .starts_with("/replicas")
        );
    }
}
