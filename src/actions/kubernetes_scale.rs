//! `kubernetes.scale`: set a Deployment's or StatefulSet's replica count.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, ConnectionUse, DescribeContext, Effect, Output, Tpl, WithProblem, Workload, out, shared::connection};
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

impl KubernetesScale {
    fn workload(&self) -> Workload<'_> {
        Workload { deployment: self.deployment.as_deref(), statefulset: self.statefulset.as_deref() }
    }
}

impl ActionSpec for KubernetesScale {
    const NAME: &'static str = "kubernetes.scale";
    const SUMMARY: &'static str = "Scale a Deployment or StatefulSet, recording the previous count";
    const OUTPUTS: &'static [Output] = &[
        out("previous_replicas", "the replica count before scaling"),
        out("replicas", "the replica count set"),
    ];

    fn effect(&self) -> Effect {
        Effect::Changes
    }
    /// Scaling to zero takes the service down; any other count is a capacity change.
    fn destructive(&self) -> bool {
        !matches!(self.replicas, Tpl::Value(n) if n > 0)
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        vec![connection("/connection", &self.connection, &[ConnectionKind::Kubernetes])]
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.workload().check();
        p.extend(WithProblem::duration("/wait_timeout", self.wait_timeout.as_ref()));
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let ns = self.namespace.as_deref().map(|n| format!(" in namespace {n}")).unwrap_or_default();
        let wait = match self.wait {
            Some(WaitFor::Ready) => {
                let t = self.wait_timeout.as_ref().and_then(|d| d.0.as_str()).unwrap_or("5m");
                format!("; wait up to {t} until ready")
            }
            None => String::new(),
        };
        format!("scale {}{ns} on {} to {} replicas{wait}", self.workload(), cx.connection(&self.connection), self.replicas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn scale_to_zero_is_destructive() {
        let s = parse::<KubernetesScale>(json!({"connection": "prod", "deployment": "orders-api", "replicas": 0}));
        assert!(s.destructive());
        assert_eq!(s.describe(&Cx), "scale deployment orders-api on <prod> to 0 replicas");
        let s = parse::<KubernetesScale>(json!({"connection": "prod", "deployment": "orders-api", "replicas": 3, "wait": "ready"}));
        assert!(!s.destructive());
        assert_eq!(s.describe(&Cx), "scale deployment orders-api on <prod> to 3 replicas; wait up to 5m until ready");
    }

    #[test]
    fn one_workload() {
        let s = parse::<KubernetesScale>(json!({"connection": "p", "replicas": 1}));
        assert_eq!(s.check().len(), 1);
        assert!(reject::<KubernetesScale>(json!({"connection": "p", "deployment": "d", "replicas": -1})).starts_with("/replicas"));
    }
}
