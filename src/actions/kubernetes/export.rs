//! `kubernetes.export`: objects of chosen kinds, cleaned of what the server owns, streamed
//! encrypted to S3 with a manifest of counts.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Kube, Resource};
use crate::actions::backup::BackupLocation;
use crate::actions::postgres::backup::Encryption;
use crate::actions::s3::S3;
use crate::actions::support::kube_objects::{self as objects, CLUSTER, Counts};
use crate::actions::support::pipeline;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Export Kubernetes objects to S3: the kinds named (built-in or custom, found by discovery),
/// in the namespaces named, optionally by label selector; each cleaned of what the server owns
/// (status, uid, resourceVersion, managedFields, allocated cluster IPs ...), with the
/// CustomResourceDefinitions of the custom kinds and the Namespace objects, as one stream
/// compressed with zstd and always encrypted with age, checksummed, with a manifest of counts
/// per kind and namespace. Objects a controller owns and the tokens the cluster issues are
/// left out (the cluster makes them again). Only counts reach the run log, never an object.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesExport {
    /// A `kubernetes` connection.
    pub connection: String,
    /// Kinds to export: a kind or its plural (`ConfigMap`, `secrets`), with its group when
    /// several groups serve the name (`Widget.example.com`).
    pub kinds: Vec<String>,
    /// Namespaces to export from (default: the connection's). Their Namespace objects are
    /// exported too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// A label selector (`app=shop,tier!=cache`): only matching objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Fail when a kind has no object in a namespace (default: say so and go on).
    #[serde(default)]
    pub require_match: bool,
    pub to: BackupLocation,
    /// Required: an export holds Secrets.
    pub encrypt: Encryption,
    /// zstd level, 1-19 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 19))]
    pub compression_level: Option<u8>,
    /// The S3 storage class of the object written; the bucket's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

impl ActionSpec for KubernetesExport {
    const NAME: &'static str = "kubernetes.export";
    const SUMMARY: &'static str = "Export Kubernetes objects (any kind, CRDs included) to S3, cleaned, always encrypted, with counts in a manifest";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the object key"),
        out("size", "bytes stored"),
        out("plain_size", "bytes before compression and encryption"),
        out("sha256", "SHA-256 of the stored object"),
        out("manifest", "the manifest's key"),
        out("objects", "objects exported"),
        out(
            "counts",
            "objects per kind, then per namespace (`(cluster)` for cluster-scoped ones)",
        ),
        out(
            "crds",
            "the CustomResourceDefinitions exported with their resources",
        ),
        out(
            "unmatched",
            "kinds with no object in a namespace (`Secret in shop`)",
        ),
        out(
            "skipped",
            "objects left out because the cluster makes them again, by why",
        ),
        out("server_version", "the API server's version"),
        out("exported_at", "when the export began (RFC 3339)"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;
    const STORED_BYTES: Option<&'static str> = Some("size");

    fn unsupported(&self) -> Option<String> {
        self.to.s3_only(Self::NAME, "to", "writes to")
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(export(self, cx))
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        let mut c = the_connection(&self.connection, &[ConnectionKind::Kubernetes]);
        c.extend(self.to.connections("/to/connection"));
        c
    }

    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.to.check("/to");
        p.extend(Encryption::problem(Some(&self.encrypt)));
        if self.kinds.is_empty() {
            p.push(WithProblem::new(
                "/kinds",
                "name at least one kind (`ConfigMap`, `Secret`, `Widget.example.com`)",
            ));
        }
        for (i, k) in self.kinds.iter().enumerate() {
            if k.is_empty() || (!crate::actions::unknown_yet(k) && k.contains(char::is_whitespace))
            {
                p.push(WithProblem::new(
                    format!("/kinds/{i}"),
                    "a kind is one word: `ConfigMap`, `secrets`, `Widget.example.com`",
                ));
            }
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            p.extend(super::namespace_problem(
                &format!("/namespaces/{i}"),
                Some(ns),
            ));
        }
        p
    }

    /// A kind or selector that renders empty (an optional param left empty) is not there.
    fn check_rendered(&self) -> Vec<WithProblem> {
        let mut w = self.clone();
        w.kinds.retain(|k| !k.is_empty());
        w.check()
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let ns = if self.namespaces.is_empty() {
            "the connection's namespace".to_string()
        } else {
            format!("namespace(s) {}", self.namespaces.join(", "))
        };
        let selector = self
            .selector()
            .map(|s| format!(" matching `{s}`"))
            .unwrap_or_default();
        let kinds: Vec<&str> = self
            .kinds
            .iter()
            .map(String::as_str)
            .filter(|k| !k.is_empty())
            .collect();
        format!(
            "export {}{selector} from {ns} of {} (with the CRDs of custom kinds and the Namespace objects; cleaned of server-owned fields; controller-owned objects and service account tokens left out) to {} (zstd{}); the run log gets counts only",
            kinds.join(", "),
            cx.connection(&self.connection),
            self.to.describe(cx),
            Encryption::words(Some(&self.encrypt)),
        )
    }
}

impl KubernetesExport {
    fn selector(&self) -> Option<&str> {
        self.selector.as_deref().filter(|s| !s.is_empty())
    }
}

/// JSON lines are handed to the compressing side in batches of about this many bytes.
const BATCH: usize = 256 * 1024;

/// What the export found on the way.
#[derive(Default)]
struct Found {
    counts: Counts,
    objects: u64,
    crds: Vec<String>,
    unmatched: Vec<String>,
    skipped: BTreeMap<&'static str, u64>,
}

async fn export(w: &KubernetesExport, cx: &Exec<'_>) -> Result<Value, ActionError> {
    let (Some(conn), Some(key)) = (&w.to.connection, &w.to.key) else {
        return Err(ActionError::permanent("`to` needs `connection` and `key`"));
    };
    let k = Kube::from_exec(cx, &w.connection, None).await?;
    let served = super::discover(&k).await?;
    let mut kinds: Vec<Resource> = Vec::new();
    let mut unknown = Vec::new();
    for name in w.kinds.iter().filter(|k| !k.is_empty()) {
        match super::find_kind(&served, name) {
            Ok(r) if !kinds.iter().any(|k| k.label() == r.label()) => kinds.push(r.clone()),
            Ok(_) => {}
            Err(e) => unknown.push(e),
        }
    }
    if !unknown.is_empty() {
        return Err(ActionError::permanent(format!(
            "{}; nothing was exported",
            unknown.join("; ")
        )));
    }
    let namespaces = if w.namespaces.is_empty() {
        vec![k.namespace.clone()]
    } else {
        w.namespaces.clone()
    };
    // The CRDs of custom kinds go first in the stream, so an import makes them before their
    // resources; read before the upload starts, so a denial stores nothing.
    let mut crds = Vec::new();
    for r in &kinds {
        if let Some(crd) = super::crd_of(&k, r).await? {
            crds.push(crd);
        }
    }
    let mut namespace_objects = Vec::new();
    let ns_resource = super::find_kind(&served, "Namespace").map_err(ActionError::permanent)?;
    let ns_api = ns_resource.api(&k, None);
    for ns in &namespaces {
        match ns_api.get_opt(ns).await {
            Ok(Some(o)) => {
                let mut v = serde_json::to_value(o).expect("an object serializes");
                v["apiVersion"] = json!("v1");
                v["kind"] = json!("Namespace");
                namespace_objects.push(v);
            }
            Ok(None) => {
                return Err(ActionError::permanent(format!(
                    "namespace {ns} does not exist on {}; nothing was exported",
                    k.server
                )));
            }
            // Access to a namespace's contents often comes without access to the Namespace
            // object itself: its labels are lost, not the backup.
            Err(::kube::Error::Api(s)) if s.code == 403 => (cx.progress)(&format!(
                "cannot read the Namespace object {ns} (RBAC): its labels and annotations are not in the backup; an import makes the namespace bare"
            )),
            Err(e) => {
                return Err(super::classify(
                    &e,
                    &format!("reading namespace {ns}"),
                    &k.server,
                ));
            }
        }
    }
    let server_version = k
        .client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .map_err(|e| super::classify(&e, "reading the API server's version", &k.server))?;
    let s3c = S3::from_exec(cx, conn).await?;
    let began = jiff::Timestamp::now();
    let seal = w.encrypt.seal()?;
    let level = i32::from(w.compression_level.unwrap_or(3));

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(4);
    let rows = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let produce = async {
        let r = stream(w, &k, &kinds, &namespaces, crds, namespace_objects, &tx, cx).await;
        if let Err(e) = &r {
            let _ = tx.send(Err(e.message.clone())).await;
        }
        drop(tx);
        r
    };
    let upload = pipeline::rows_to_s3(
        rows,
        objects::head(),
        "",
        &s3c,
        key,
        level,
        seal.clone(),
        w.storage_class.as_deref(),
    );
    let (found, uploaded) = tokio::join!(produce, upload);
    let nothing = |e: ActionError| ActionError {
        message: format!("{}; nothing was stored", e.message),
        ..e
    };
    let (found, sealed) = match (found, uploaded) {
        (Ok(f), Ok(s)) => (f, s),
        // The listing stopped because the upload did: the upload's error is the cause.
        (Err(e), Err(u)) if e.message == "the upload stopped" => return Err(nothing(u)),
        (Err(e), uploaded) => {
            if uploaded.is_ok() {
                // The stream ended early but whole-looking to S3: it must not pass for a backup.
                let _ = crate::actions::s3::delete_keys(
                    &s3c,
                    std::slice::from_ref(key),
                    "removing a failed export",
                )
                .await;
            }
            return Err(nothing(e));
        }
        // The upload was aborted: no object was made.
        (Ok(_), Err(e)) => return Err(nothing(e)),
    };
    let kinds_json: Vec<Value> = kinds
        .iter()
        .map(|r| {
            json!({"kind": r.ar.kind, "group": r.ar.group, "version": r.ar.version,
                   "plural": r.ar.plural, "namespaced": r.namespaced})
        })
        .collect();
    let manifest = json!({
        "format": objects::FORMAT,
        "server": k.server,
        "server_version": server_version,
        "exported_at": began.to_string(),
        "consistent_at": began.to_string(),
        "consistency": "each list read at its own moment",
        "kinds": kinds_json,
        "namespaces": namespaces,
        "selector": w.selector(),
        "objects": found.objects,
        "counts": found.counts,
        "crds": found.crds,
        "skipped": found.skipped,
    });
    let outputs = json!({
        "objects": found.objects,
        "counts": found.counts,
        "crds": found.crds,
        "unmatched": found.unmatched,
        "skipped": found.skipped,
        "server_version": server_version,
        "exported_at": began.to_string(),
    });
    let written = crate::actions::backup::Written {
        s3: &s3c,
        key,
        level,
        seal: &seal,
        sealed: &sealed,
        storage_class: w.storage_class.as_deref(),
    };
    crate::actions::backup::record(written, manifest, outputs).await
}

/// Lists and writes every object into `tx`: the CRDs, the Namespaces, then each kind in each
/// namespace; and the end line with the count.
#[allow(clippy::too_many_arguments)]
async fn stream(
    w: &KubernetesExport,
    k: &Kube,
    kinds: &[Resource],
    namespaces: &[String],
    crds: Vec<Value>,
    namespace_objects: Vec<Value>,
    tx: &tokio::sync::mpsc::Sender<Result<bytes::Bytes, String>>,
    cx: &Exec<'_>,
) -> Result<Found, ActionError> {
    let mut found = Found::default();
    let mut buf = Vec::with_capacity(BATCH + 64 * 1024);
    let stopped = || ActionError::transient("the upload stopped");
    let keep = |mut obj: Value, found: &mut Found, buf: &mut Vec<u8>| match objects::clean(&mut obj)
    {
        Ok(()) => {
            objects::count(&mut found.counts, &obj);
            found.objects += 1;
            objects::line(&obj, buf);
        }
        Err(skip) => *found.skipped.entry(skip.key()).or_default() += 1,
    };
    for crd in crds {
        found.crds.push(objects::name_of(&crd).to_string());
        keep(crd, &mut found, &mut buf);
    }
    for ns in namespace_objects {
        keep(ns, &mut found, &mut buf);
    }
    for r in kinds {
        let scopes: Vec<Option<&str>> = if r.namespaced {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        } else {
            vec![None]
        };
        for ns in scopes {
            let mut listed = 0u64;
            let mut pages = super::Pages::new(k, r, ns, w.selector());
            while let Some(page) = pages.next().await? {
                listed += page.len() as u64;
                for obj in page {
                    keep(obj, &mut found, &mut buf);
                }
                if buf.len() >= BATCH {
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(BATCH + 64 * 1024));
                    tx.send(Ok(bytes::Bytes::from(full)))
                        .await
                        .map_err(|_| stopped())?;
                }
            }
            if listed == 0 {
                let what = format!("{} in {}", r.label(), ns.unwrap_or(CLUSTER));
                let why = match w.selector() {
                    Some(s) => format!("selector `{s}` matched no {what}"),
                    None => format!("there is no {what}"),
                };
                if w.require_match {
                    return Err(ActionError::permanent(format!(
                        "{why} (`require_match: true`)"
                    )));
                }
                (cx.progress)(&why);
                found.unmatched.push(what);
            }
        }
    }
    buf.extend_from_slice(objects::end(found.objects).as_bytes());
    tx.send(Ok(bytes::Bytes::from(buf)))
        .await
        .map_err(|_| stopped())?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;

    #[test]
    fn the_plan_says_what_is_exported_and_that_it_is_encrypted() {
        let d = describe::<KubernetesExport>(json!({
            "connection": "k", "kinds": ["ConfigMap", "Secret"], "namespaces": ["shop"],
            "selector": "app=shop", "to": {"connection": "b", "key": "k8s/1"},
            "encrypt": {"recipients": ["age1x"]}
        }));
        assert!(
            d.starts_with(
                "export ConfigMap, Secret matching `app=shop` from namespace(s) shop of <k>"
            ),
            "{d}"
        );
        assert!(d.contains("encrypted to 1 age recipient(s)"), "{d}");
    }

    #[test]
    fn encryption_is_required_and_kinds_are_words() {
        let e = reject::<KubernetesExport>(json!({
            "connection": "k", "kinds": ["ConfigMap"], "to": {"connection": "b", "key": "k"}
        }));
        assert!(e.contains("encrypt"), "{e}");
        let x = parse::<KubernetesExport>(json!({
            "connection": "k", "kinds": [], "namespaces": ["Bad_NS"],
            "to": {"connection": "b", "key": "k"}, "encrypt": {"recipients": [], "passphrase": null}
        }));
        let fields: Vec<_> = x.check().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["/encrypt", "/kinds", "/namespaces/0"]);
    }
}
