//! `kubernetes.scale`: set a Deployment's or StatefulSet's replica count.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as kube, Kind, Kube, Workload};
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

/// Scale a workload, or every Deployment and StatefulSet a label selector matches. The count
/// before is kept on each object (an annotation) and in the outputs, so a `compensate` with
/// `restore_previous: true` puts each one back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesScale {
    /// A `kubernetes` connection.
    pub connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statefulset: Option<String>,
    /// A label selector (`role=writer`): every Deployment and StatefulSet it matches in the
    /// namespace, instead of one named workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// With `selector`: fail when it matches nothing (default: say so and go on).
    #[serde(default)]
    pub require_match: bool,
    /// Overrides the connection's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The count to set; or `restore_previous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Tpl<u32>>,
    /// Set each workload back to the count it had before this step scaled it (recorded on the
    /// workload), for a `compensate`; workloads this step did not scale are left alone.
    #[serde(default)]
    pub restore_previous: bool,
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

    fn target(&self) -> String {
        match &self.selector {
            Some(s) => format!("every deployment and statefulset matching `{s}`"),
            None => self.workload().to_string(),
        }
    }
}

/// What scaling one workload did.
struct Scaled {
    kind: Kind,
    name: String,
    previous: i64,
    replicas: i64,
}

/// What a step sets a workload to.
#[derive(Clone, Copy)]
enum Target {
    Count(u32),
    Previous,
}

impl ActionSpec for KubernetesScale {
    const NAME: &'static str = "kubernetes.scale";
    const SUMMARY: &'static str = "Scale Deployments and StatefulSets (one, or by label selector), recording each previous count";
    const OUTPUTS: &'static [Output] = &[
        out(
            "previous_replicas",
            "the replica count before scaling (one named workload)",
        ),
        out("replicas", "the replica count set (one named workload)"),
        out(
            "ready_replicas",
            "replicas ready when the step ended (with `wait: ready`; one named workload)",
        ),
        out(
            "scaled",
            "each workload scaled: kind, name, previous_replicas, replicas",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    // Scaling to zero takes the service down; any other count is a capacity change.
    const DESTRUCTIVE: When<Self> = When::If {
        what: "to 0 replicas, or to a count known only at run time",
        test: |a| !a.restore_previous && !matches!(a.replicas, Some(Tpl::Value(n)) if n > 0),
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
            let target = match (&self.replicas, self.restore_previous) {
                (Some(r), false) => Target::Count(*r.value().ok_or_else(|| {
                    ActionError::permanent("`replicas` did not render to a number")
                })?),
                (None, true) => Target::Previous,
                _ => {
                    return Err(ActionError::permanent(
                        "give `replicas` or `restore_previous: true`",
                    ));
                }
            };
            let k = Kube::from_exec(cx, &self.connection, self.namespace.as_deref()).await?;
            let by = format!("{}/{}", cx.run_id, cx.step);
            let workloads = match &self.selector {
                None => {
                    let (kind, name) = kube::kind_and_name(
                        self.deployment.as_deref(),
                        self.statefulset.as_deref(),
                    )?;
                    vec![(kind, name.to_string())]
                }
                Some(sel) => {
                    let found = selected(&k, sel).await?;
                    if found.is_empty() {
                        let why = format!(
                            "selector `{sel}` matched no deployment or statefulset in namespace {}",
                            k.namespace
                        );
                        if self.require_match {
                            return Err(ActionError::permanent(format!(
                                "{why} (`require_match: true`)"
                            )));
                        }
                        (cx.progress)(&why);
                    }
                    found
                }
            };
            let mut scaled = Vec::new();
            for (kind, name) in &workloads {
                if let Some(s) = scale_one(&k, *kind, name, target, &by).await? {
                    scaled.push(s);
                } else {
                    (cx.progress)(&format!(
                        "{} {}/{name}: not scaled by this step (or already restored); left alone",
                        kind.label(),
                        k.namespace
                    ));
                }
            }
            let mut ready = Vec::new();
            if self.wait == Some(WaitFor::Ready) {
                let within = crate::actions::support::duration_or(
                    self.wait_timeout.as_ref(),
                    std::time::Duration::from_secs(300),
                )?;
                for s in &scaled {
                    let r = kube::wait_rollout(&k, s.kind, &s.name, within, cx.progress).await?;
                    ready.push(r.ready);
                }
            }
            let list: Vec<serde_json::Value> = scaled
                .iter()
                .map(|s| {
                    serde_json::json!({"kind": s.kind.label(), "name": s.name,
                        "previous_replicas": s.previous, "replicas": s.replicas})
                })
                .collect();
            let mut out = serde_json::json!({"scaled": list});
            if self.selector.is_none()
                && let Some(s) = scaled.first()
            {
                out["previous_replicas"] = serde_json::json!(s.previous);
                out["replicas"] = serde_json::json!(s.replicas);
                if let Some(r) = ready.first() {
                    out["ready_replicas"] = serde_json::json!(r);
                }
            }
            Ok(out)
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Kubernetes])
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = match &self.selector {
            None => self.workload().check(),
            Some(_) if self.deployment.is_some() || self.statefulset.is_some() => {
                vec![WithProblem::new(
                    "/selector",
                    "give a `selector` or one named workload, not both",
                )]
            }
            Some(s) if s.trim().is_empty() => {
                vec![WithProblem::new("/selector", "the selector is empty")]
            }
            Some(_) => vec![],
        };
        if self.require_match && self.selector.is_none() {
            p.push(WithProblem::new(
                "/require_match",
                "`require_match` is for a `selector`; a named workload must exist anyway",
            ));
        }
        match (&self.replicas, self.restore_previous) {
            (Some(_), false) | (None, true) => {}
            (Some(_), true) => p.push(WithProblem::new(
                "/restore_previous",
                "give `replicas` or `restore_previous: true`, not both",
            )),
            (None, false) => p.push(WithProblem::new(
                "",
                "give the `replicas` to set, or `restore_previous: true` (in a compensate)",
            )),
        }
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
        let to = match &self.replicas {
            Some(r) if !self.restore_previous => format!("to {r} replicas"),
            _ => "back to the count each had before this step scaled it".into(),
        };
        format!(
            "scale {}{ns} on {} {to}{wait}",
            self.target(),
            cx.connection(&self.connection),
        )
    }
}

/// The Deployments, then the StatefulSets, a selector matches.
async fn selected(k: &Kube, selector: &str) -> Result<Vec<(Kind, String)>, ActionError> {
    let lp = ::kube::api::ListParams::default().labels(selector);
    let doing = |what: &str| {
        format!(
            "listing {what} matching `{selector}` in namespace {}",
            k.namespace
        )
    };
    let mut out = Vec::new();
    for d in k
        .deployments()
        .list(&lp)
        .await
        .map_err(|e| kube::classify(&e, &doing("deployments"), &k.server))?
    {
        out.push((Kind::Deployment, d.metadata.name.unwrap_or_default()));
    }
    for s in k
        .statefulsets()
        .list(&lp)
        .await
        .map_err(|e| kube::classify(&e, &doing("statefulsets"), &k.server))?
    {
        out.push((Kind::StatefulSet, s.metadata.name.unwrap_or_default()));
    }
    Ok(out)
}

/// Scales one workload in one conditional write that also records (or, restoring, clears) the
/// count before. `None`: restoring, and this step's record is not on the workload.
async fn scale_one(
    k: &Kube,
    kind: Kind,
    name: &str,
    target: Target,
    by: &str,
) -> Result<Option<Scaled>, ActionError> {
    // Controllers write a workload's status all the time, and each write moves its
    // resourceVersion: a conflict here is usually one of those, so read again and retry at
    // once (as client-go's RetryOnConflict does) before giving up.
    let mut tries = 0;
    loop {
        tries += 1;
        let w = kube::get_workload(k, kind, name).await?;
        let current = w
            .pointer("/spec/replicas")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(1);
        let ann = |key: &str| {
            w.pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))
                .and_then(serde_json::Value::as_str)
                .map(String::from)
        };
        let recorded = match (ann(SCALED_BY), ann(PREVIOUS)) {
            (Some(b), Some(p)) if b == by => p.parse::<i64>().ok(),
            _ => None,
        };
        let rv = w
            .pointer("/metadata/resourceVersion")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let (mut patch, previous, replicas) = match target {
            Target::Count(n) => {
                let previous = recorded.unwrap_or(current);
                (
                    kube::annotations(&[(SCALED_BY, by), (PREVIOUS, &previous.to_string())]),
                    previous,
                    i64::from(n),
                )
            }
            Target::Previous => {
                let Some(previous) = recorded else {
                    return Ok(None);
                };
                let mut patch = serde_json::json!({"metadata": {"annotations": {}}});
                patch["metadata"]["annotations"][SCALED_BY] = serde_json::Value::Null;
                patch["metadata"]["annotations"][PREVIOUS] = serde_json::Value::Null;
                (patch, current, previous)
            }
        };
        // One conditional write: a concurrent change to the workload makes it fail with a
        // conflict instead of being overwritten blindly.
        patch["metadata"]["resourceVersion"] = serde_json::json!(rv);
        patch["spec"] = serde_json::json!({"replicas": replicas});
        match kube::patch_workload(k, kind, name, &patch, false).await {
            Ok(_) => {
                return Ok(Some(Scaled {
                    kind,
                    name: name.to_string(),
                    previous,
                    replicas,
                }));
            }
            Err(e) if e.transient && e.message.contains("stale resourceVersion") && tries < 5 => {
                continue;
            }
            Err(e) => return Err(e),
        }
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
    fn by_selector_and_back_to_what_each_had() {
        let s = parse::<KubernetesScale>(
            json!({"connection": "prod", "selector": "role=writer", "replicas": 0, "wait": "ready"}),
        );
        assert!(s.check().is_empty());
        assert!(s.destructive());
        assert_eq!(
            s.describe(&Cx),
            "scale every deployment and statefulset matching `role=writer` on <prod> to 0 replicas; wait up to 5m until ready"
        );
        let back = parse::<KubernetesScale>(
            json!({"connection": "prod", "selector": "role=writer", "restore_previous": true}),
        );
        assert!(back.check().is_empty());
        assert!(!back.destructive());
        assert!(
            back.describe(&Cx)
                .ends_with("back to the count each had before this step scaled it")
        );
        let both = parse::<KubernetesScale>(
            json!({"connection": "p", "selector": "a=b", "deployment": "d", "replicas": 1, "restore_previous": true}),
        );
        let fields: Vec<_> = both.check().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["/selector", "/restore_previous"]);
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
