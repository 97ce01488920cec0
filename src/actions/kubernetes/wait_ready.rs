//! `kubernetes.wait_ready`: wait until a workload's rollout is complete.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Workload;
use super::{self as kube, Kube};
use crate::actions::{
    ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When, WithProblem, out,
    support::the_connection,
};
use crate::runbook::{ConnectionKind, DurationText};

/// Wait until the workload's observed generation is current and all replicas are updated and
/// available.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesWaitReady {
    pub connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// How long to wait (default: the step's timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<DurationText>,
}

impl KubernetesWaitReady {
    fn workload(&self) -> Workload<'_> {
        Workload {
            deployment: self.deployment.as_deref(),
            statefulset: self.statefulset.as_deref(),
        }
    }
}

impl ActionSpec for KubernetesWaitReady {
    const NAME: &'static str = "kubernetes.wait_ready";
    const SUMMARY: &'static str =
        "Wait until a Deployment or StatefulSet has rolled out and is ready";
    const OUTPUTS: &'static [Output] = &[
        out("ready_replicas", "replicas ready at the end"),
        out(
            "observed_generation",
            "the generation the controller has seen",
        ),
    ];
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let (kind, name) =
                kube::kind_and_name(self.deployment.as_deref(), self.statefulset.as_deref())?;
            let k = Kube::from_exec(cx, &self.connection, self.namespace.as_deref()).await?;
            // Without `within` the step's own timeout is the limit; a day stands for "no limit
            // of its own" and is never reached before that.
            let within = crate::actions::support::duration_or(
                self.within.as_ref(),
                std::time::Duration::from_secs(86_400),
            )?;
            let r = kube::wait_rollout(&k, kind, name, within, cx.progress).await?;
            Ok(
                serde_json::json!({"ready_replicas": r.ready, "observed_generation": r.observed_generation}),
            )
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
        p.extend(WithProblem::duration("/within", self.within.as_ref()));
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let within = self
            .within
            .as_ref()
            .and_then(|d| d.0.as_str())
            .map(|d| format!(" (up to {d})"))
            .unwrap_or_default();
        format!(
            "wait until {} on {} is rolled out and ready{within}",
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
        let d = describe::<KubernetesWaitReady>(
            json!({"connection": "k", "deployment": "api", "within": "2m"}),
        );
        assert_eq!(
            d,
            "wait until deployment api on <k> is rolled out and ready (up to 2m)"
        );
        assert_eq!(
            parse::<KubernetesWaitReady>(
                json!({"connection": "k", "deployment": "a", "within": "2 min"})
            )
            .check()[0]
                .field,
            "/within"
        );
    }
}
