//! `kubernetes.rollout_restart`: restart a workload's pods by rolling update.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Workload;
use super::{self as kube, Kube};
use crate::actions::{
    ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Effect, Exec, Output, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::{ConnectionKind, DurationText};

/// Restart a workload as `kubectl rollout restart` does, optionally waiting for the rollout.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesRolloutRestart {
    pub connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Wait until the rollout completes (default true).
    #[serde(default = "yes")]
    pub wait: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout: Option<DurationText>,
}

fn yes() -> bool {
    true
}

impl KubernetesRolloutRestart {
    fn workload(&self) -> Workload<'_> {
        Workload {
            deployment: self.deployment.as_deref(),
            statefulset: self.statefulset.as_deref(),
        }
    }
}

impl ActionSpec for KubernetesRolloutRestart {
    const NAME: &'static str = "kubernetes.rollout_restart";
    const SUMMARY: &'static str = "Restart a workload by rolling update and wait for it";
    const OUTPUTS: &'static [Output] = &[
        out("restarted_at", "the restart annotation's timestamp"),
        out(
            "ready_replicas",
            "replicas ready when the step ended (with `wait`)",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    // A restart cannot be taken back; there is nothing a compensation could restore.
    const CHANGES: Effect = Effect::Irreversible;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let (kind, name) =
                kube::kind_and_name(self.deployment.as_deref(), self.statefulset.as_deref())?;
            let k = Kube::from_exec(cx, &self.connection, self.namespace.as_deref()).await?;
            // What `kubectl rollout restart` does: a new pod-template annotation, so the
            // controller rolls every pod with the workload's own update strategy.
            let at = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}}});
            kube::patch_workload(&k, kind, name, &patch, true).await?;
            let mut out = serde_json::json!({"restarted_at": at});
            if self.wait {
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
        let wait = if self.wait {
            "; wait for the rollout"
        } else {
            ""
        };
        format!(
            "rollout-restart {} on {}{wait}",
            self.workload(),
            cx.connection(&self.connection)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes() {
        let d =
            describe::<KubernetesRolloutRestart>(json!({"connection": "k", "statefulset": "db"}));
        assert_eq!(
            d,
            "rollout-restart statefulset db on <k>; wait for the rollout"
        );
    }
}
