//! `kubernetes.import`: a `kubernetes.export` applied back, into the same namespaces or others.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use kube::api::{Patch, PatchParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Kube, Resource};
use crate::actions::backup::BackupLocation;
use crate::actions::s3::S3;
use crate::actions::support::kube_objects::{self as objects, Change, Counts};
use crate::actions::support::pipeline::{Sink, open_from_s3};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output,
    PreviewFuture, When, WithProblem, out, support::the_connection,
};
use crate::runbook::{ConnectionKind, DurationText};

/// What to do when the cluster does not serve a kind the backup holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CrdPolicy {
    /// Apply the backup's CustomResourceDefinitions first and wait until they are established.
    #[default]
    Create,
    /// Refuse, before anything is changed, when a kind is not served already.
    Require,
}

/// Import a `kubernetes.export` backup. Verify before touch: the whole backup is downloaded,
/// checked against its SHA-256, decrypted, and its counts checked against the manifest; every
/// kind is looked up on the target; every object is sent once as a server-side dry run (the
/// API server's validation and admission, RBAC included) before the first real write. Then
/// CRDs first, established before their resources, Namespaces next, then the rest, by
/// server-side apply with lifeboat's field manager, skipping objects that would not change; at
/// the end every object is looked for on the server. `dry_run` stops after the dry run and
/// lists, per object, create, change (with the fields) or unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesImport {
    /// A `kubernetes` connection.
    pub connection: String,
    pub from: BackupLocation,
    /// age identity (private key) or passphrase, usually `{{ secrets.NAME }}`.
    pub decrypt_with: String,
    /// The backup's expected SHA-256; when absent, its manifest gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Put every namespaced object into this namespace (a test restore into a scratch
    /// namespace); its Namespace object is made from the backup's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Per namespace of the backup, the namespace to import into (`{shop: shop-restore}`);
    /// namespaces not named keep theirs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_map: BTreeMap<String, String>,
    /// Import only these kinds (`ConfigMap`, `Widget.example.com`); default all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_kinds: Vec<String>,
    /// Leave these kinds out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_kinds: Vec<String>,
    /// A kind the cluster does not serve: `create` its CRD from the backup (default), or
    /// `require` it served already.
    #[serde(default)]
    pub crds: CrdPolicy,
    /// Only the dry run: list what would be created, changed or left unchanged.
    #[serde(default)]
    pub dry_run: bool,
    /// Take over fields another field manager owns instead of failing with a conflict.
    #[serde(default)]
    pub force: bool,
    /// The field manager recorded as owner of the applied fields (default `lifeboat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
    /// Requests in flight at once (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub parallel: Option<u16>,
    /// How long a created CRD may take to be established (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crd_timeout: Option<DurationText>,
}

impl ActionSpec for KubernetesImport {
    const NAME: &'static str = "kubernetes.import";
    const SUMMARY: &'static str = "Import a kubernetes.export backup: verified whole, dry-run on the server first, CRDs before their resources, server-side apply, counts checked";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the backup's object key"),
        out("sha256", "the backup's SHA-256, as verified"),
        out("objects", "objects in the import (after include/exclude)"),
        out("created", "objects created (with `dry_run`: that would be)"),
        out("changed", "objects changed (with `dry_run`: that would be)"),
        out("unchanged", "objects already as in the backup"),
        out(
            "changes",
            "per object created or changed: `object`, `change` and the `fields` changed (names only); the first 1,000",
        ),
        out(
            "counts",
            "objects per kind, then per target namespace, all found on the server after the import",
        ),
        out("crds_created", "CustomResourceDefinitions the import made"),
        out(
            "consistent_at",
            "when the export began, from its manifest (for RPO)",
        ),
    ];
    const READ_ONLY: When<Self> = When::If {
        what: "with `dry_run`",
        test: |a| a.dry_run,
    };
    const DESTRUCTIVE: When<Self> = When::If {
        what: "without `dry_run` (it overwrites the fields it applies)",
        test: |a| !a.dry_run,
    };
    const RUNNABLE: bool = true;
    const PREVIEWS: bool = true;
    const RESTORED_AS_OF: Option<&'static str> = Some("consistent_at");

    /// Server-side apply of the same objects leaves the same objects.
    fn idempotent(&self) -> bool {
        true
    }

    fn unsupported(&self) -> Option<String> {
        self.from.s3_only(Self::NAME, "from", "reads from")
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let plan = prepare(self, cx).await?;
            if self.dry_run {
                return Ok(plan.outputs(None));
            }
            apply(self, cx, plan).await
        })
    }

    fn preview<'a>(&'a self, cx: &'a Exec<'a>) -> Option<PreviewFuture<'a>> {
        Some(Box::pin(async move {
            let plan = prepare(self, cx).await?;
            Ok(plan.words())
        }))
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        let mut c = the_connection(&self.connection, &[ConnectionKind::Kubernetes]);
        c.extend(self.from.connections("/from/connection"));
        c
    }

    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.from.check("/from");
        p.extend(super::namespace_problem("/namespace", self.into()));
        for (from, to) in &self.namespace_map {
            let field = format!(
                "/namespace_map/{}",
                crate::diagnostics::escape_segment(from)
            );
            p.extend(super::namespace_problem(&field, Some(from)));
            p.extend(super::namespace_problem(&field, Some(to)));
        }
        if self.into().is_some() && !self.namespace_map.is_empty() {
            p.push(WithProblem::new(
                "/namespace",
                "give `namespace` (everything into one) or `namespace_map`, not both",
            ));
        }
        for (field, list) in [
            ("/include_kinds", &self.include_kinds),
            ("/exclude_kinds", &self.exclude_kinds),
        ] {
            for (i, k) in list.iter().enumerate() {
                if k.is_empty()
                    || (!crate::actions::unknown_yet(k) && k.contains(char::is_whitespace))
                {
                    p.push(WithProblem::new(
                        format!("{field}/{i}"),
                        "a kind is one word: `ConfigMap`, `Widget.example.com`",
                    ));
                }
            }
        }
        p.extend(WithProblem::duration(
            "/crd_timeout",
            self.crd_timeout.as_ref(),
        ));
        p
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let into = match (self.into(), self.namespace_map.is_empty()) {
            (Some(ns), _) => format!(" into namespace {ns}"),
            (None, false) => format!(
                " with namespaces mapped ({})",
                self.namespace_map
                    .iter()
                    .map(|(a, b)| format!("{a} → {b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, true) => " into the namespaces it came from".into(),
        };
        let mut kinds = String::new();
        if !self.include_kinds.is_empty() {
            kinds.push_str(&format!(" (only {})", self.include_kinds.join(", ")));
        }
        if !self.exclude_kinds.is_empty() {
            kinds.push_str(&format!(" (not {})", self.exclude_kinds.join(", ")));
        }
        let head = format!(
            "verify {} (SHA-256, decryption, counts in its manifest), server-side dry run of every object{kinds} on {}{into}",
            self.from.describe(cx),
            cx.connection(&self.connection)
        );
        if self.dry_run {
            return format!(
                "{head}; list what would be created, changed or unchanged; change nothing"
            );
        }
        let crds = match self.crds {
            CrdPolicy::Create => "apply its CRDs first and wait until established",
            CrdPolicy::Require => "refuse if a kind is not served already",
        };
        let force = if self.force {
            ", taking over fields other managers own"
        } else {
            ""
        };
        format!(
            "{head}; then {crds}; server-side apply (field manager {}{force}) of what differs, Namespaces first; check every object is on the server",
            self.field_manager.as_deref().unwrap_or("lifeboat")
        )
    }
}

impl KubernetesImport {
    /// `namespace`, where an empty one (a param left empty) means none.
    fn into(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|n| !n.is_empty())
    }
}

/// The backup read and checked, the target looked at, every object dry-run: what an import
/// would do, before it does any of it.
struct Prepared {
    key: String,
    sha256: String,
    consistent_at: Option<String>,
    k: Kube,
    /// In the order they are applied: CRDs, Namespaces, the rest.
    objects: Vec<Planned>,
    /// Kinds the cluster serves only once the backup's CRDs are made.
    pending_kinds: BTreeSet<(String, String)>,
}

struct Planned {
    obj: Value,
    /// `None` while its kind waits for its CRD.
    resource: Option<Resource>,
    change: Change,
    fields: Vec<String>,
    /// Dry-run on the server. Objects in a namespace the import makes, or of a kind its CRD
    /// makes, can be only once those exist: after the CRDs and Namespaces, before the rest.
    checked: bool,
}

impl Planned {
    fn is_crd(&self) -> bool {
        objects::kind_of(&self.obj) == "CustomResourceDefinition"
    }
    fn cluster_scoped(&self) -> bool {
        self.resource.as_ref().is_some_and(|r| !r.namespaced)
    }
}

/// How many changed objects the outputs and the plan list by name.
const LISTED: usize = 1000;
const PREVIEW_LISTED: usize = 200;

impl Prepared {
    fn tally(&self) -> (usize, usize, usize) {
        let n = |c: Change| self.objects.iter().filter(|p| p.change == c).count();
        (n(Change::Create), n(Change::Change), n(Change::Unchanged))
    }

    fn outputs(&self, applied: Option<(Counts, Vec<String>)>) -> Value {
        let (create, change, unchanged) = self.tally();
        let changes: Vec<Value> = self
            .objects
            .iter()
            .filter(|p| p.change != Change::Unchanged)
            .take(LISTED)
            .map(|p| {
                json!({"object": objects::label(&p.obj), "change": p.change.word(), "fields": p.fields})
            })
            .collect();
        let mut o = json!({
            "key": self.key,
            "sha256": self.sha256,
            "objects": self.objects.len(),
            "created": create,
            "changed": change,
            "unchanged": unchanged,
            "changes": changes,
            "consistent_at": self.consistent_at,
        });
        if let Some((counts, crds)) = applied {
            o["counts"] = json!(counts);
            o["crds_created"] = json!(crds);
        }
        o
    }

    fn words(&self) -> String {
        let (create, change, unchanged) = self.tally();
        let mut s = format!(
            "{} objects in the backup: {create} to create, {change} to change, {unchanged} unchanged",
            self.objects.len()
        );
        for p in self
            .objects
            .iter()
            .filter(|p| p.change != Change::Unchanged)
            .take(PREVIEW_LISTED)
        {
            s.push_str(&format!(
                "\n  {} {}",
                p.change.word(),
                objects::label(&p.obj)
            ));
            if !p.checked {
                s.push_str(" (checked once its namespace or CRD is made)");
            }
            if !p.fields.is_empty() {
                s.push_str(&format!(" ({})", p.fields.join(", ")));
            }
        }
        if create + change > PREVIEW_LISTED {
            s.push_str(&format!(
                "\n  … and {} more",
                create + change - PREVIEW_LISTED
            ));
        }
        s
    }
}

fn kind_matches(obj: &Value, names: &[String]) -> bool {
    let kind = objects::kind_of(obj);
    let group = objects::group_of(obj);
    names.iter().any(|n| {
        n.eq_ignore_ascii_case(kind)
            || n.split_once('.')
                .is_some_and(|(k, g)| k.eq_ignore_ascii_case(kind) && g.eq_ignore_ascii_case(group))
    })
}

/// Downloads, verifies and reads the whole backup.
async fn load(
    w: &KubernetesImport,
    cx: &Exec<'_>,
) -> Result<(String, String, Value, Vec<Value>), ActionError> {
    let (Some(conn), Some(key)) = (&w.from.connection, &w.from.key) else {
        return Err(ActionError::permanent(
            "`from` needs `connection` and `key`",
        ));
    };
    let s3c = S3::from_exec(cx, conn).await?;
    let stored = crate::actions::backup::stored(&s3c, key).await?;
    let (Some(manifest), [object]) = (stored.manifest, &stored.objects[..]) else {
        return Err(ActionError::permanent(format!(
            "s3://{}/{key} is not a kubernetes.export backup (no manifest, or in parts); nothing was changed",
            s3c.bucket
        )));
    };
    if manifest.get("format").and_then(Value::as_str) != Some(objects::FORMAT) {
        return Err(ActionError::permanent(format!(
            "s3://{}/{key} is a `{}` backup, not a kubernetes.export; nothing was changed",
            s3c.bucket,
            manifest
                .get("format")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
        )));
    }
    crate::actions::backup::expect_sha256(w.sha256.as_ref(), &object.sha256)?;
    let opener = Arc::new(crate::actions::postgres::restore::opener(
        Some(&w.decrypt_with),
        Some(&manifest),
    )?);
    let read = Arc::new(Mutex::new(Vec::new()));
    let into = read.clone();
    open_from_s3(
        &s3c,
        key,
        &object.sha256,
        opener,
        Sink::Reader(Box::new(move |r| {
            *into.lock().expect("not poisoned") = objects::read(std::io::BufReader::new(r))?;
            Ok(())
        })),
    )
    .await
    .map_err(|e| ActionError::permanent(format!("{}; nothing was changed", e.message)))?;
    let all = std::mem::take(&mut *read.lock().expect("not poisoned"));
    let mut counts = Counts::new();
    for o in &all {
        objects::count(&mut counts, o);
    }
    if manifest.get("counts") != Some(&json!(counts)) {
        return Err(ActionError::permanent(format!(
            "s3://{}/{key} holds {} objects whose counts differ from its manifest's; nothing was changed",
            s3c.bucket,
            all.len()
        )));
    }
    Ok((key.clone(), object.sha256.clone(), manifest, all))
}

/// Include/exclude, then the namespace mapping; refuses two objects that would become one.
fn select(w: &KubernetesImport, all: Vec<Value>) -> Result<Vec<Value>, ActionError> {
    let target = |ns: &str| -> String {
        match (w.into(), w.namespace_map.get(ns)) {
            (Some(one), _) => one.to_string(),
            (None, Some(to)) => to.clone(),
            (None, None) => ns.to_string(),
        }
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for mut o in all {
        if (!w.include_kinds.is_empty() && !kind_matches(&o, &w.include_kinds))
            || kind_matches(&o, &w.exclude_kinds)
        {
            continue;
        }
        if objects::kind_of(&o) == "Namespace" {
            let to = target(objects::name_of(&o));
            o["metadata"]["name"] = json!(to);
        } else if let Some(ns) = objects::namespace_of(&o) {
            let to = target(ns);
            o["metadata"]["namespace"] = json!(to);
        }
        let id = (
            o["apiVersion"].as_str().unwrap_or_default().to_string(),
            objects::label(&o),
        );
        if !seen.insert(id) {
            // Two Namespace objects mapped onto one are the same namespace: keep the first.
            if objects::kind_of(&o) == "Namespace" {
                continue;
            }
            return Err(ActionError::permanent(format!(
                "two objects of the backup would both become {}; map their namespaces apart; nothing was changed",
                objects::label(&o)
            )));
        }
        out.push(o);
    }
    order(&mut out);
    Ok(out)
}

/// CRDs, then Namespaces, then the rest, each in the backup's order.
fn order(objects: &mut [Value]) {
    objects.sort_by_key(|o| match objects::kind_of(o) {
        "CustomResourceDefinition" => 0,
        "Namespace" => 1,
        _ => 2,
    });
}

/// A Namespace object for each namespace the import puts objects in that neither exists nor
/// comes with the backup (mapped to a new name, or exported without read access to it): made
/// bare, as `kubectl create namespace` would.
async fn add_missing_namespaces(k: &Kube, selected: &mut Vec<Value>) -> Result<(), ActionError> {
    let have: BTreeSet<String> = selected
        .iter()
        .filter(|o| objects::kind_of(o) == "Namespace")
        .map(|o| objects::name_of(o).to_string())
        .collect();
    let wanted: BTreeSet<String> = selected
        .iter()
        .filter_map(|o| objects::namespace_of(o))
        .filter(|ns| !have.contains(*ns))
        .map(String::from)
        .collect();
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(k.client.clone());
    for ns in wanted {
        match api.get_opt(&ns).await {
            Ok(Some(_)) => {}
            Ok(None) => selected
                .push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
            // Not allowed to look: the dry run says whether the objects can go in it.
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            Err(e) => {
                return Err(super::classify(
                    &e,
                    &format!("reading namespace {ns}"),
                    &k.server,
                ));
            }
        }
    }
    order(selected);
    Ok(())
}

fn params(w: &KubernetesImport) -> PatchParams {
    let mut pp = PatchParams::apply(w.field_manager.as_deref().unwrap_or("lifeboat"));
    if w.force {
        pp = pp.force();
    }
    pp
}

/// What an error on one object says, a Secret's values masked.
fn failure(k: &Kube, obj: &Value, doing: &str, e: &kube::Error) -> ActionError {
    let mut c = super::classify(e, &format!("{doing} {}", objects::label(obj)), &k.server);
    if c.message.contains("conflict") && matches!(e, kube::Error::Api(s) if s.code == 409) {
        c.message
            .push_str(" (another field manager owns these fields; `force: true` takes them over)");
    }
    c.message = objects::scrub(&c.message, obj);
    c
}

/// Many objects' failures as one error: the first ten, and how many. Transient only when every
/// one is (an API server that was briefly away), so the step's `retry` decides; one object the
/// server refuses for good makes it permanent.
fn failures(mut each: Vec<ActionError>, head: impl Fn(usize) -> String, tail: &str) -> ActionError {
    let transient = each.iter().all(|e| e.transient);
    each.sort_by(|a, b| a.message.cmp(&b.message));
    let shown: Vec<&str> = each.iter().take(10).map(|e| e.message.as_str()).collect();
    ActionError {
        message: format!("{}: {}{tail}", head(each.len()), shown.join("; ")),
        transient,
        exit_code: None,
    }
}

async fn prepare(w: &KubernetesImport, cx: &Exec<'_>) -> Result<Prepared, ActionError> {
    let (key, sha256, manifest, all) = load(w, cx).await?;
    let mut selected = select(w, all)?;
    let k = Kube::from_exec(cx, &w.connection, None).await?;
    add_missing_namespaces(&k, &mut selected).await?;
    // Each group version the backup uses, looked up once.
    let mut kinds: HashMap<(String, String), Option<Resource>> = HashMap::new();
    for o in &selected {
        let id = (
            o["apiVersion"].as_str().unwrap_or_default().to_string(),
            objects::kind_of(o).to_string(),
        );
        if kinds.contains_key(&id) {
            continue;
        }
        let found = super::served(&k, &id.0, &id.1).await?;
        kinds.insert(id, found);
    }
    // Kinds not served: made by a CRD of the backup, or the import stops here.
    let crd_makes = |api_version: &str, kind: &str| {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        selected.iter().any(|c| {
            objects::kind_of(c) == "CustomResourceDefinition"
                && c["spec"]["group"] == group
                && c["spec"]["names"]["kind"] == kind
                && c["spec"]["versions"]
                    .as_array()
                    .is_some_and(|vs| vs.iter().any(|v| v["name"] == version))
        })
    };
    let mut pending_kinds = BTreeSet::new();
    let mut missing = Vec::new();
    for ((api_version, kind), found) in &kinds {
        if found.is_some() {
            continue;
        }
        if w.crds == CrdPolicy::Create && crd_makes(api_version, kind) {
            pending_kinds.insert((api_version.clone(), kind.clone()));
        } else {
            missing.push(format!("{kind} ({api_version})"));
        }
    }
    if !missing.is_empty() {
        missing.sort();
        let why = match w.crds {
            CrdPolicy::Require => "and `crds: require` asks for every kind to be served already",
            CrdPolicy::Create => {
                "and the backup holds no CustomResourceDefinition for them (it was exported without them, or they are excluded)"
            }
        };
        return Err(ActionError::permanent(format!(
            "the API server at {} does not serve {} {why}; nothing was changed",
            k.server,
            missing.join(", ")
        )));
    }
    let mut planned: Vec<Planned> = selected
        .into_iter()
        .map(|obj| {
            let id = (
                obj["apiVersion"].as_str().unwrap_or_default().to_string(),
                objects::kind_of(&obj).to_string(),
            );
            Planned {
                resource: kinds.get(&id).cloned().flatten(),
                obj,
                change: Change::Create,
                fields: Vec::new(),
                checked: false,
            }
        })
        .collect();
    dry_run(w, &k, &mut planned, |p| p.cluster_scoped()).await?;
    let new_namespaces: BTreeSet<String> = planned
        .iter()
        .filter(|p| objects::kind_of(&p.obj) == "Namespace" && p.change == Change::Create)
        .map(|p| objects::name_of(&p.obj).to_string())
        .collect();
    dry_run(w, &k, &mut planned, |p| {
        p.resource.as_ref().is_some_and(|r| r.namespaced)
            && !objects::namespace_of(&p.obj).is_some_and(|ns| new_namespaces.contains(ns))
    })
    .await?;
    Ok(Prepared {
        key,
        sha256,
        consistent_at: manifest
            .get("consistent_at")
            .and_then(Value::as_str)
            .map(String::from),
        k,
        objects: planned,
        pending_kinds,
    })
}

/// What the server's dry run says of the object at `index`.
struct Verdict {
    index: usize,
    change: Change,
    fields: Vec<String>,
}

/// Reads what is on the server now (one list per kind and namespace), sends each object `only`
/// picks as a server-side dry run, and classifies it. Any object the server would refuse fails
/// the whole import before anything is written.
async fn dry_run(
    w: &KubernetesImport,
    k: &Kube,
    planned: &mut [Planned],
    only: impl Fn(&Planned) -> bool,
) -> Result<(), ActionError> {
    use futures_util::StreamExt;
    for p in planned.iter_mut() {
        p.checked = p.checked || (p.resource.is_some() && only(p));
    }
    let picked = |p: &Planned| p.resource.is_some() && only(p);
    let mut current: HashMap<(String, Option<String>), HashMap<String, Value>> = HashMap::new();
    for p in planned.iter().filter(|p| picked(p)) {
        let Some(r) = &p.resource else { continue };
        let ns = objects::namespace_of(&p.obj)
            .filter(|_| r.namespaced)
            .map(String::from);
        let id = (r.label(), ns.clone());
        if current.contains_key(&id) {
            continue;
        }
        // A namespace the import makes has nothing in it yet.
        let mut by_name = HashMap::new();
        let listed = super::Pages::new(k, r, ns.as_deref(), None).all().await;
        match listed {
            Ok(items) => {
                for o in items {
                    by_name.insert(objects::name_of(&o).to_string(), o);
                }
            }
            Err(e) if e.message.contains("not found") => {}
            Err(e) => return Err(e),
        }
        current.insert(id, by_name);
    }
    let pp = params(w).dry_run();
    let n = usize::from(w.parallel.unwrap_or(16));
    // Each answer is compared with what is there as it arrives and dropped: only the verdict is
    // kept, so memory holds the backup and the namespace's objects, not a third copy.
    let mut calls = Vec::new();
    for (i, p) in planned.iter().enumerate().filter(|(_, p)| picked(p)) {
        let r = p.resource.as_ref().expect("picked only when served");
        let api = r.api(k, objects::namespace_of(&p.obj));
        let (pp, current) = (&pp, &current);
        calls.push(async move {
            let name = objects::name_of(&p.obj);
            let after = api
                .patch(name, pp, &Patch::Apply(&p.obj))
                .await
                .map_err(|e| failure(k, &p.obj, "dry-running the apply of", &e))?;
            let ns = objects::namespace_of(&p.obj)
                .filter(|_| r.namespaced)
                .map(String::from);
            let verdict = match current.get(&(r.label(), ns)).and_then(|m| m.get(name)) {
                None => (Change::Create, Vec::new()),
                Some(now) => {
                    let after = serde_json::to_value(after).expect("an object serializes");
                    let fields = objects::differences(now, &after);
                    let change = if fields.is_empty() {
                        Change::Unchanged
                    } else {
                        Change::Change
                    };
                    (change, fields)
                }
            };
            Ok::<_, ActionError>(Verdict {
                index: i,
                change: verdict.0,
                fields: verdict.1,
            })
        });
    }
    let results: Vec<Result<Verdict, ActionError>> = futures_util::stream::iter(calls)
        .buffer_unordered(n)
        .collect()
        .await;
    let mut refused = Vec::new();
    for res in results {
        match res {
            Err(e) => refused.push(e),
            Ok(v) => {
                planned[v.index].change = v.change;
                planned[v.index].fields = v.fields;
            }
        }
    }
    if !refused.is_empty() {
        return Err(failures(
            refused,
            |n| format!("the API server's dry run refused {n} object(s)"),
            "; nothing was changed",
        ));
    }
    Ok(())
}

async fn apply(
    w: &KubernetesImport,
    cx: &Exec<'_>,
    mut plan: Prepared,
) -> Result<Value, ActionError> {
    use futures_util::StreamExt;
    let k = &plan.k;
    let pp = params(w);
    let mut crds_created = Vec::new();
    // CRDs first (their kinds are served only once they are established), then Namespaces:
    // both only add to the cluster until the objects that go in them are checked.
    for p in plan
        .objects
        .iter()
        .filter(|p| p.cluster_scoped() && p.change != Change::Unchanged)
        .filter(|p| p.is_crd() || objects::kind_of(&p.obj) == "Namespace")
    {
        let r = p
            .resource
            .as_ref()
            .expect("cluster-scoped kinds are served");
        let name = objects::name_of(&p.obj);
        r.api(k, None)
            .patch(name, &pp, &Patch::Apply(&p.obj))
            .await
            .map_err(|e| failure(k, &p.obj, "applying", &e))?;
        if p.is_crd() && p.change == Change::Create {
            crds_created.push(name.to_string());
        }
    }
    let within = crate::actions::support::duration_or(
        w.crd_timeout.as_ref(),
        std::time::Duration::from_secs(60),
    )?;
    for p in plan.objects.iter().filter(|p| p.is_crd()) {
        wait_established(k, p, within).await?;
    }
    for (api_version, kind) in &plan.pending_kinds {
        let r = super::served(k, api_version, kind).await?.ok_or_else(|| {
            ActionError::permanent(format!(
                "the API server at {} serves no kind {kind} in {api_version} even once its CRD is established; only the backup's CRDs and Namespaces were applied",
                k.server
            ))
        })?;
        for p in plan.objects.iter_mut().filter(|p| {
            p.resource.is_none()
                && p.obj["apiVersion"] == api_version.as_str()
                && objects::kind_of(&p.obj) == kind
        }) {
            p.resource = Some(r.clone());
        }
    }
    if plan.objects.iter().any(|p| !p.checked) {
        dry_run(w, k, &mut plan.objects, |p| !p.checked)
            .await
            .map_err(|e| ActionError {
                message: e.message.replace(
                    "nothing was changed",
                    "only the backup's CRDs and Namespaces were applied",
                ),
                ..e
            })?;
    }
    let todo: Vec<&Planned> = plan
        .objects
        .iter()
        .filter(|p| !p.is_crd() && objects::kind_of(&p.obj) != "Namespace")
        .filter(|p| p.change != Change::Unchanged)
        .collect();
    let total = todo.len();
    let n = usize::from(w.parallel.unwrap_or(16));
    let mut failed = Vec::new();
    let mut done = 0usize;
    let mut calls = Vec::new();
    for p in todo {
        let r = p.resource.as_ref().expect("served by now");
        let api = r.api(k, objects::namespace_of(&p.obj));
        let pp = &pp;
        calls.push(async move {
            api.patch(objects::name_of(&p.obj), pp, &Patch::Apply(&p.obj))
                .await
                .map(|_| ())
                .map_err(|e| failure(k, &p.obj, "applying", &e))
        });
    }
    let mut results = futures_util::stream::iter(calls).buffer_unordered(n);
    while let Some(r) = results.next().await {
        done += 1;
        if let Err(e) = r {
            failed.push(e);
        }
        if done.is_multiple_of(1000) {
            (cx.progress)(&format!("applied {done} of {total} objects"));
        }
    }
    drop(results);
    if !failed.is_empty() {
        return Err(failures(
            failed,
            |n| format!("{n} of {total} object(s) were not applied"),
            "; the others were. Applying is idempotent: a retry or `resume` finishes the import",
        ));
    }
    let counts = check_present(k, &plan.objects).await?;
    Ok(plan.outputs(Some((counts, crds_created))))
}

/// Polls a CRD until the server says its kinds are served.
async fn wait_established(
    k: &Kube,
    p: &Planned,
    within: std::time::Duration,
) -> Result<(), ActionError> {
    let name = objects::name_of(&p.obj);
    let api = p.resource.as_ref().expect("served").api(k, None);
    let mut poll = super::Poll::new(within);
    loop {
        match api.get(name).await {
            Ok(o) => {
                poll.ok();
                if super::established(&serde_json::to_value(o).expect("serializes")) {
                    return Ok(());
                }
            }
            Err(e) => poll.failed(
                super::classify(&e, &format!("reading CRD {name}"), &k.server),
                true,
            )?,
        }
        poll.next(|t| {
            format!(
                "the CustomResourceDefinition {name} was not established after {t}; only the backup's CRDs and Namespaces were applied"
            )
        })
        .await?;
    }
}

/// Every object of the import is on the server: one list per kind and namespace.
async fn check_present(k: &Kube, planned: &[Planned]) -> Result<Counts, ActionError> {
    let mut wanted: BTreeMap<(String, Option<String>), (Resource, BTreeSet<String>)> =
        BTreeMap::new();
    for p in planned {
        let r = p.resource.as_ref().expect("served by now");
        let ns = objects::namespace_of(&p.obj)
            .filter(|_| r.namespaced)
            .map(String::from);
        wanted
            .entry((r.label(), ns))
            .or_insert_with(|| (r.clone(), BTreeSet::new()))
            .1
            .insert(objects::name_of(&p.obj).to_string());
    }
    let mut counts = Counts::new();
    let mut absent = Vec::new();
    for ((_, ns), (r, names)) in wanted {
        let on_server: BTreeSet<String> = super::Pages::new(k, &r, ns.as_deref(), None)
            .all()
            .await?
            .iter()
            .map(|o| objects::name_of(o).to_string())
            .collect();
        for name in &names {
            if on_server.contains(name) {
                *counts
                    .entry(r.ar.kind.clone())
                    .or_default()
                    .entry(ns.clone().unwrap_or_else(|| objects::CLUSTER.into()))
                    .or_default() += 1;
            } else {
                absent.push(super::object_label(&r.ar.kind, ns.as_deref(), name));
            }
        }
    }
    if !absent.is_empty() {
        let n = absent.len();
        absent.truncate(10);
        return Err(ActionError::permanent(format!(
            "{n} imported object(s) are not on the server after the import (deleted meanwhile?): {}",
            absent.join(", ")
        )));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;

    fn import(extra: Value) -> KubernetesImport {
        let mut with = json!({"connection": "k", "from": {"connection": "b", "key": "k8s/1"}, "decrypt_with": "{{ secrets.AGE }}"});
        for (k, v) in extra.as_object().unwrap() {
            with[k] = v.clone();
        }
        parse::<KubernetesImport>(with)
    }

    fn backup() -> Vec<Value> {
        vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "shop"}}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "shop"}}),
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "shop"}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.com"}}),
        ]
    }

    #[test]
    fn objects_are_mapped_filtered_and_ordered_crds_first() {
        let w = import(json!({"namespace": "scratch", "exclude_kinds": ["secret"]}));
        let got: Vec<String> = select(&w, backup())
            .unwrap()
            .iter()
            .map(objects::label)
            .collect();
        assert_eq!(
            got,
            [
                "CustomResourceDefinition widgets.example.com",
                "Namespace scratch",
                "ConfigMap scratch/a",
                "Widget scratch/w"
            ]
        );
        let w = import(json!({"include_kinds": ["Widget.example.com"]}));
        assert_eq!(select(&w, backup()).unwrap().len(), 1);
    }

    #[test]
    fn many_failures_are_retried_only_when_every_one_may_pass_next_time() {
        let away = || ActionError::transient("applying ConfigMap a/x: cannot reach the API server");
        let e = failures(vec![away(), away()], |n| format!("{n} failed"), "; done");
        assert!(e.transient);
        assert!(
            e.message.starts_with("2 failed: applying ConfigMap"),
            "{}",
            e.message
        );
        let invalid =
            ActionError::permanent("applying Secret a/s: the API server refused (422 Invalid)");
        let e = failures(
            (0..12).map(|_| away()).chain([invalid]).collect(),
            |n| format!("{n} failed"),
            "",
        );
        assert!(!e.transient);
        assert!(e.message.starts_with("13 failed: "), "{}", e.message);
        // Ten are named, so the message stays readable.
        assert_eq!(e.message.matches("applying").count(), 10);
    }

    #[test]
    fn two_objects_mapped_onto_one_are_refused() {
        let mut b = backup();
        b.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "other"}}));
        let e = select(&import(json!({"namespace": "scratch"})), b).unwrap_err();
        assert!(e.message.contains("ConfigMap scratch/a"), "{}", e.message);
        assert!(e.message.ends_with("nothing was changed"), "{}", e.message);
    }

    #[test]
    fn the_dry_run_only_reads_and_the_plan_says_so() {
        let w = import(json!({"dry_run": true}));
        assert_eq!(w.effect(), crate::actions::Effect::ReadOnly);
        assert!(!w.destructive());
        assert!(
            w.describe(&Cx).ends_with("change nothing"),
            "{}",
            w.describe(&Cx)
        );
        let w = import(json!({"namespace_map": {"shop": "shop-restore"}, "force": true}));
        assert!(w.destructive());
        let d = w.describe(&Cx);
        assert!(
            d.contains("shop → shop-restore") && d.contains("taking over"),
            "{d}"
        );
        let both = import(json!({"namespace": "x", "namespace_map": {"a": "b"}}));
        assert_eq!(both.check()[0].field, "/namespace");
    }
}
