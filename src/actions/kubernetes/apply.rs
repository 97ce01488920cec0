//! `kubernetes.apply`: server-side apply of manifests, inline or from files and folders.

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

/// Apply manifests in order with server-side apply, as `kubectl apply --server-side` does: the
/// inline `manifests`, then those in `files`. Drills use it to create a test namespace and its
/// workloads, and `kubernetes.delete` to tear it down.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesApply {
    pub connection: String,
    /// Namespace for namespaced objects that name none; overrides the connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Objects, each with `apiVersion`, `kind` and `metadata.name`. Applied in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<serde_json::Map<String, Value>>,
    /// Files of manifests (YAML, several documents each, or JSON; a `List` is its items) and
    /// folders of them (their `.yaml`, `.yml` and `.json` files in name order, not recursing),
    /// read when the step runs. Relative paths are from where lifeboat runs. Applied after
    /// `manifests`, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
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
            let mut all = self.manifests.clone();
            for f in &self.files {
                all.extend(
                    read_manifests(std::path::Path::new(f)).map_err(ActionError::permanent)?,
                );
            }
            let k = Kube::from_exec(cx, &self.connection, self.namespace.as_deref()).await?;
            let mut pp = PatchParams::apply(self.field_manager.as_deref().unwrap_or("lifeboat"));
            if self.force {
                pp = pp.force();
            }
            let mut applied = Vec::new();
            for m in &all {
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
                    e.message = crate::actions::support::kube_objects::scrub(&e.message, &obj);
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
        if self.manifests.is_empty() && self.files.is_empty() {
            p.push(WithProblem::new(
                "",
                "give `manifests` (inline) or `files` (files and folders of manifests)",
            ));
        }
        for (i, f) in self.files.iter().enumerate() {
            if f.is_empty() {
                p.push(WithProblem::new(
                    format!("/files/{i}"),
                    "a path is not empty",
                ));
            }
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
        let mut what = objects.join(", ");
        if !self.files.is_empty() {
            if !what.is_empty() {
                what.push_str(", then ");
            }
            what.push_str(&format!("the manifests in {}", self.files.join(", ")));
        }
        format!(
            "server-side apply {what} on {}{force}",
            cx.connection(&self.connection)
        )
    }
}

/// The manifests of a file or of a folder's files, in order.
fn read_manifests(path: &std::path::Path) -> Result<Vec<serde_json::Map<String, Value>>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let files = if meta.is_dir() {
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!(
                "{} holds no .yaml, .yml or .json file",
                path.display()
            ));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        out.extend(parse_manifests(&text).map_err(|e| format!("{}: {e}", f.display()))?);
    }
    Ok(out)
}

/// The objects of a multi-document YAML (or JSON) text; a `List` stands for its items.
fn parse_manifests(text: &str) -> Result<Vec<serde_json::Map<String, Value>>, String> {
    // A manifests file may hold thousands of documents (a whole namespace as kubectl writes it):
    // the parser's limits are raised for size, while its guards against alias bombs stay.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_documents: 1_000_000,
            max_nodes: 100_000_000,
            max_events: 200_000_000,
            max_total_scalar_bytes: 1 << 30,
        },
    };
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (n, doc) in docs.into_iter().enumerate() {
        let items = match doc {
            Value::Object(m)
                if m.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && m.contains_key("items") =>
            {
                match m.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    _ => Vec::new(),
                }
            }
            other => vec![other],
        };
        for item in items {
            match item {
                Value::Object(m)
                    if field(&m, "/apiVersion").is_some()
                        && field(&m, "/kind").is_some()
                        && field(&m, "/metadata/name").is_some() =>
                {
                    out.push(m)
                }
                _ => {
                    return Err(format!(
                        "document {}: not an object with `apiVersion`, `kind` and `metadata.name`",
                        n + 1
                    ));
                }
            }
        }
    }
    Ok(out)
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
        let a = parse::<KubernetesApply>(json!({"connection": "k", "files": ["k8s/"]}));
        assert!(a.check().is_empty());
        assert_eq!(
            a.describe(&Cx),
            "server-side apply the manifests in k8s/ on <k>"
        );
        assert_eq!(
            parse::<KubernetesApply>(json!({"connection": "k"})).check()[0].field,
            ""
        );
    }

    #[test]
    fn a_file_may_hold_thousands_of_documents() {
        let text: String = (0..3000)
            .map(|i| format!("---\n{{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {{\"name\": \"c{i}\"}}, \"data\": {{\"on\": \"yes\"}}}}\n"))
            .collect();
        let all = parse_manifests(&text).unwrap();
        assert_eq!(all.len(), 3000);
        // YAML 1.2: `yes` is a string, as a ConfigMap needs.
        assert_eq!(all[0]["data"]["on"], "yes");
    }

    #[test]
    fn files_hold_several_documents_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: second}\n---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: third}}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "first"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let names: Vec<String> = read_manifests(dir.path())
            .unwrap()
            .iter()
            .map(|m| field(m, "/metadata/name").unwrap().to_string())
            .collect();
        assert_eq!(names, ["first", "second", "third"]);
        std::fs::write(dir.path().join("c.yml"), "kind: ConfigMap\n").unwrap();
        let e = read_manifests(dir.path()).unwrap_err();
        assert!(e.contains("c.yml: document 1"), "{e}");
    }
}
