//! `kubernetes.delete`: delete one object (or those a selector matches) and wait until gone.

use ::kube::api::{DeleteParams, PropagationPolicy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{self as kube, Kube};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Effect, Exec, Output,
    When, WithProblem, out, support::the_connection,
};
use crate::runbook::{ConnectionKind, DurationText};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    /// Dependents (a Deployment's ReplicaSets and pods) are deleted after the object.
    Background,
    /// The object goes only once its dependents are gone.
    Foreground,
    /// Dependents are left running.
    Orphan,
}

/// Delete an object of any kind the cluster serves, or every object of the kind a label
/// selector matches (`all: true`: every one in the namespace). Deleting what is already gone
/// succeeds, with `deleted: false`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesDelete {
    pub connection: String,
    /// `Namespace`, `Deployment`, `Job`, `ConfigMap`, a custom resource's kind...
    pub kind: String,
    /// The kind's API version; known kinds default (`Deployment`: `apps/v1`, `Job`: `batch/v1`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The object; or `selector`, or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A label selector: every object of the kind it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Every object of the kind in the namespace (a drill's fault: all the ConfigMaps gone).
    #[serde(default)]
    pub all: bool,
    /// For namespaced kinds; overrides the connection's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
    /// Wait until the object is gone (default true): a namespace takes a while to empty.
    #[serde(default = "yes")]
    pub wait: bool,
    /// How long `wait` may take (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<DurationText>,
}

fn yes() -> bool {
    true
}

/// API versions of the kinds runbooks delete most, so they need not spell them out.
pub fn default_api_version(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Namespace"
        | "ConfigMap"
        | "Secret"
        | "Service"
        | "Pod"
        | "ServiceAccount"
        | "PersistentVolumeClaim" => "v1",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        "Ingress" | "NetworkPolicy" => "networking.k8s.io/v1",
        "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => {
            "rbac.authorization.k8s.io/v1"
        }
        _ => return None,
    })
}

impl KubernetesDelete {
    fn api_version(&self) -> Option<&str> {
        self.api_version
            .as_deref()
            .or_else(|| default_api_version(&self.kind))
    }
}

impl ActionSpec for KubernetesDelete {
    const NAME: &'static str = "kubernetes.delete";
    const SUMMARY: &'static str = "Delete a Kubernetes object and wait until it is gone";
    const OUTPUTS: &'static [Output] = &[
        out(
            "deleted",
            "whether the object existed and was deleted (with `selector` or `all`: whether any did)",
        ),
        out("names", "the objects deleted (with `selector` or `all`)"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const CHANGES: Effect = Effect::Irreversible;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;

    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let api_version = self.api_version().ok_or_else(|| {
                ActionError::permanent(format!("give the `api_version` of kind {}", self.kind))
            })?;
            let k = Kube::from_exec(cx, &self.connection, self.namespace.as_deref()).await?;
            let (api, ns) =
                kube::dynamic_api(&k, api_version, &self.kind, self.namespace.as_deref()).await?;
            let dp = DeleteParams {
                propagation_policy: self.propagation.map(|p| match p {
                    Propagation::Background => PropagationPolicy::Background,
                    Propagation::Foreground => PropagationPolicy::Foreground,
                    Propagation::Orphan => PropagationPolicy::Orphan,
                }),
                ..Default::default()
            };
            let names: Vec<String> = match &self.name {
                Some(n) => vec![n.clone()],
                None => {
                    let mut lp = ::kube::api::ListParams::default();
                    if let Some(s) = &self.selector {
                        lp = lp.labels(s);
                    }
                    let what = format!(
                        "listing {} in {}",
                        self.kind,
                        ns.as_deref().unwrap_or("the cluster")
                    );
                    api.list(&lp)
                        .await
                        .map_err(|e| kube::classify(&e, &what, &k.server))?
                        .into_iter()
                        .filter_map(|o| o.metadata.name)
                        .collect()
                }
            };
            let mut deleted = Vec::new();
            for name in &names {
                let what = kube::object_label(&self.kind, ns.as_deref(), name);
                match api.delete(name, &dp).await {
                    Ok(_) => deleted.push(name.clone()),
                    Err(::kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        return Err(kube::classify(&e, &format!("deleting {what}"), &k.server));
                    }
                }
            }
            if self.wait {
                let within = crate::actions::support::duration_or(
                    self.within.as_ref(),
                    std::time::Duration::from_secs(300),
                )?;
                let mut poll = kube::Poll::new(within);
                for name in &names {
                    let what = kube::object_label(&self.kind, ns.as_deref(), name);
                    loop {
                        match api.get_opt(name).await {
                            Ok(None) => break,
                            Ok(Some(_)) => poll.ok(),
                            Err(e) => poll.failed(
                                kube::classify(&e, &format!("reading {what}"), &k.server),
                                true,
                            )?,
                        }
                        poll.next(|within| format!("{what} was still there {within} after it was deleted (finalizers still running?)")).await?;
                    }
                }
            }
            if self.name.is_some() {
                return Ok(json!({"deleted": !deleted.is_empty()}));
            }
            Ok(json!({"deleted": !deleted.is_empty(), "names": deleted}))
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Kubernetes])
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p: Vec<WithProblem> = WithProblem::duration("/within", self.within.as_ref())
            .into_iter()
            .collect();
        match (&self.name, &self.selector, self.all) {
            (Some(n), None, false) => p.extend(super::name_problem("/name", n)),
            (None, Some(s), false) if s.trim().is_empty() => p.push(WithProblem::new(
                "/selector",
                "the selector is empty; `all: true` deletes every object of the kind",
            )),
            (None, Some(_), false) | (None, None, true) => {}
            (None, None, false) => p.push(WithProblem::new(
                "",
                "give the object's `name`, a `selector`, or `all: true`",
            )),
            _ => p.push(WithProblem::new(
                "",
                "give one of `name`, `selector` and `all: true`",
            )),
        }
        p.extend(super::namespace_problem(
            "/namespace",
            self.namespace.as_deref(),
        ));
        if self.api_version().is_none() {
            p.push(WithProblem::new(
                "/kind",
                format!(
                    "lifeboat does not know the API version of kind `{}`: give `api_version`",
                    self.kind
                ),
            ));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let ns = self.namespace.as_deref();
        let what = match (&self.name, &self.selector) {
            (Some(n), _) => kube::object_label(&self.kind, ns, n),
            (None, Some(s)) => format!(
                "every {} matching `{s}`{}",
                self.kind,
                ns.map(|n| format!(" in namespace {n}")).unwrap_or_default()
            ),
            (None, None) => format!(
                "every {} in {}",
                self.kind,
                ns.map(|n| format!("namespace {n}"))
                    .unwrap_or_else(|| "the connection's namespace".into())
            ),
        };
        let wait = if self.wait {
            "; wait until it is gone"
        } else {
            ""
        };
        format!("delete {what} on {}{wait}", cx.connection(&self.connection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;

    #[test]
    fn describes_and_knows_common_kinds() {
        let d = parse::<KubernetesDelete>(
            json!({"connection": "k", "kind": "Namespace", "name": "drill-7"}),
        );
        assert!(d.check().is_empty());
        assert_eq!(
            d.describe(&Cx),
            "delete Namespace drill-7 on <k>; wait until it is gone"
        );
        let d =
            parse::<KubernetesDelete>(json!({"connection": "k", "kind": "Widget", "name": "w"}));
        assert_eq!(d.check()[0].field, "/kind");
        let d = parse::<KubernetesDelete>(
            json!({"connection": "k", "kind": "Widget", "api_version": "example.com/v1", "name": "w", "namespace": "a", "wait": false}),
        );
        assert!(d.check().is_empty());
        assert_eq!(d.describe(&Cx), "delete Widget a/w on <k>");
        let d = parse::<KubernetesDelete>(
            json!({"connection": "k", "kind": "Secret", "all": true, "namespace": "shop"}),
        );
        assert!(d.check().is_empty());
        assert_eq!(
            d.describe(&Cx),
            "delete every Secret in namespace shop on <k>; wait until it is gone"
        );
        let d = parse::<KubernetesDelete>(
            json!({"connection": "k", "kind": "Secret", "selector": "", "name": "x"}),
        );
        assert_eq!(
            d.check()[0].message,
            "give one of `name`, `selector` and `all: true`"
        );
        let d = parse::<KubernetesDelete>(json!({"connection": "k", "kind": "Secret"}));
        assert_eq!(d.check()[0].field, "");
    }
}
