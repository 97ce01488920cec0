//! `kubernetes.apply`: server-side apply of inline manifests.

use ::kube::api::{Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{self as kube, Kube};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Apply manifests in order with server-side apply, as `kubectl apply --server-side` does. Drills
/// use it to create a test namespace and its workloads, and `kubernetes.delete` to tear it down.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesApply {
    pub connection: String,
    /// Namespace for namespaced objects that name none; overrides the connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Objects, each with `apiVersion`, `kind` and `metadata.name`. Applied in this order.
    pub manifests: Vec<serde_json::Map<String, Value>>,
    /// The field manager recorded as owner of the applied fields (default `lifeboat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
    /// Take over fields another manager owns instead of failing with a conflict (default false).
    #[serde(default)]
    pub force: bool,
}

/// One of the identity fields of a manifest.
fn field<'m>(m: &'m serde_json::Map<String, Value>, pointer: &str) -> Option<&'m str> {
    match pointer {
        "/apiVersion" => m.get("apiVersion").and_then(Value::as_str),
        "/kind" => m.get("kind").and_then(Value::as_str),
        "/metadata/name" => m
            .get("metadata")
            .and_then(|x| x.get("name"))
            .and_then(Value::as_str),
        "/metadata/namespace" => m
            .get("metadata")
            .and_then(|x| x.get("namespace"))
            .and_then(Value::as_str),
        _ => None,
    }
}

impl ActionSpec for KubernetesApply {
    const NAME: &'static str = "kubernetes.apply";
    const SUMMARY: &'static str = "Server-side apply inline Kubernetes manifests";
    const OUTPUTS: &'static [Output] = &[out(
        "applied",
        "each object applied: kind, name, namespace, resource_version",
    )];
    // Changes: a `compensate` with `kubernetes.delete` removes what was created.
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::If {
        what: "with `force`",
        test: |a| a.force,
    };
    const RUNNABLE: bool = true;

    /// Applying the same manifests twice leaves the same objects.
    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let k = Kube::from_exec(cx, &self.connection, self.namespace.as_deref()).await?;
            let mut pp = PatchParams::apply(self.field_manager.as_deref().unwrap_or("lifeboat"));
            if self.force {
                pp = pp.force();
            }
            let mut applied = Vec::new();
            for m in &self.manifests {
                let (Some(api_version), Some(kind), Some(name)) = (
                    field(m, "/apiVersion"),
                    field(m, "/kind"),
                    field(m, "/metadata/name"),
                ) else {
                    return Err(ActionError::permanent(
                        "every manifest needs `apiVersion`, `kind` and `metadata.name`",
                    ));
                };
                let own_ns = field(m, "/metadata/namespace");
                let (api, ns) = kube::dynamic_api(&k, api_version, kind, own_ns).await?;
                let mut obj = Value::Object(m.clone());
                if let Some(ns) = &ns {
                    obj["metadata"]["namespace"] = json!(ns);
                }
                let what = kube::object_label(kind, ns.as_deref(), name);
                let done = api.patch(name, &pp, &Patch::Apply(&obj)).await.map_err(|e| {
                    let mut e = kube::classify(&e, &format!("applying {what}"), &k.server);
                    if e.message.contains("conflict") && !e.transient {
                        e.message.push_str(" (another field manager owns these fields; `force: true` takes them over)");
                    }
                    e
                })?;
                applied.push(json!({
                    "kind": kind,
                    "name": name,
                    "namespace": ns,
                    "resource_version": done.metadata.resource_version,
                }));
            }
            Ok(json!({"applied": applied}))
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Kubernetes])
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p: Vec<WithProblem> =
            super::namespace_problem("/namespace", self.namespace.as_deref())
                .into_iter()
                .collect();
        if self.manifests.is_empty() {
            p.push(WithProblem::new("/manifests", "give at least one manifest"));
        }
        for (i, m) in self.manifests.iter().enumerate() {
            for (ptr, what) in [
                ("/apiVersion", "`apiVersion`"),
                ("/kind", "`kind`"),
                ("/metadata/name", "`metadata.name`"),
            ] {
                if field(m, ptr).is_none_or(str::is_empty) {
                    p.push(WithProblem::new(
                        format!("/manifests/{i}"),
                        format!("a manifest needs {what}"),
                    ));
                }
            }
            if let Some(name) = field(m, "/metadata/name").filter(|n| !n.is_empty()) {
                p.extend(super::name_problem(
                    &format!("/manifests/{i}/metadata/name"),
                    name,
                ));
            }
            p.extend(super::namespace_problem(
                &format!("/manifests/{i}/metadata/namespace"),
                field(m, "/metadata/namespace"),
            ));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let objects: Vec<String> = self
            .manifests
            .iter()
            .map(|m| {
                let ns = field(m, "/metadata/namespace").or(self.namespace.as_deref());
                let kind = field(m, "/kind").unwrap_or("?");
                let namespaced = kind != "Namespace" && !kind.starts_with("Cluster");
                kube::object_label(
                    kind,
                    ns.filter(|_| namespaced),
                    field(m, "/metadata/name").unwrap_or("?"),
                )
            })
            .collect();
        let force = if self.force {
            " (force: take over conflicting fields)"
        } else {
            ""
        };
        format!(
            "server-side apply {} on {}{force}",
            objects.join(", "),
            cx.connection(&self.connection)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;

    #[test]
    fn describes_every_object_and_checks_identity() {
        let a = parse::<KubernetesApply>(
            json!({"connection": "k", "namespace": "drill", "manifests": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "drill"}},
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {}},
            ]}),
        );
        assert!(a.check().is_empty());
        assert_eq!(
            a.describe(&Cx),
            "server-side apply Namespace drill, Deployment drill/api on <k>"
        );
        let a = parse::<KubernetesApply>(
            json!({"connection": "k", "manifests": [{"kind": "ConfigMap", "metadata": {}}]}),
        );
        let fields: Vec<_> = a.check().into_iter().map(|p| p.message).collect();
        assert_eq!(
            fields,
            [
                "a manifest needs `apiVersion`",
                "a manifest needs `metadata.name`"
            ]
        );
    }
}
