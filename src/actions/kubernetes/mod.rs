//! What the `kubernetes.*` actions share: a client for a named connection, the classification of
//! API errors into retry-or-fail with plain words, workload access and the rollout-complete test.

pub mod apply;
pub mod delete;
pub mod export;
pub mod import;
pub mod job;
pub mod rollout_restart;
pub mod scale;
pub mod wait;
pub mod wait_ready;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use crate::actions::{ActionError, Exec};

/// A client for one connection, and the namespace its actions use unless told otherwise.
pub struct Kube {
    pub client: kube::Client,
    pub namespace: String,
    /// The API server's URL, for messages.
    pub server: String,
}

impl Kube {
    /// `namespace` (from the step) wins over the connection's, which wins over the kubeconfig
    /// context's.
    pub async fn from_exec(
        cx: &Exec<'_>,
        name: &str,
        namespace: Option<&str>,
    ) -> Result<Kube, ActionError> {
        let fields = (cx.connection)(name).map_err(ActionError::permanent)?;
        let get = |k: &str| crate::runbook::connection_field(&fields, k);
        let options = KubeConfigOptions {
            context: get("context"),
            ..Default::default()
        };
        let bad =
            |e: &dyn std::fmt::Display| ActionError::permanent(format!("connection `{name}`: {e}"));
        let config = match (get("kubeconfig"), &options.context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(&path)
                    .map_err(|e| bad(&format!("cannot read kubeconfig {path}: {e}")))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| bad(&e))?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| bad(&e))?,
            // $KUBECONFIG, ~/.kube/config, or the pod's service account when running in a cluster.
            (None, None) => kube::Config::infer().await.map_err(|e| bad(&e))?,
        };
        let server = config.cluster_url.to_string();
        let default_ns = config.default_namespace.clone();
        let client = kube::Client::try_from(config).map_err(|e| bad(&e))?;
        let namespace = namespace
            .filter(|s| !s.is_empty())
            .map(String::from)
            .or_else(|| get("namespace"))
            .unwrap_or(default_ns);
        Ok(Kube {
            client,
            namespace,
            server,
        })
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
    pub fn statefulsets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// Retry or fail, in words an on-call engineer can act on. Retried: conflicts with a concurrent
/// writer (the next attempt reads afresh), throttling, server errors and an unreachable server.
/// Not retried: RBAC denials, bad credentials, missing objects, invalid objects.
pub fn classify(e: &kube::Error, doing: &str, server: &str) -> ActionError {
    match e {
        kube::Error::Api(s) => {
            let msg = s.message.trim();
            match s.code {
                409 if s.reason == "Conflict" && msg.contains("latest version") => {
                    ActionError::transient(format!(
                        "{doing}: conflict: the object changed while lifeboat was writing it (stale resourceVersion); the next attempt reads it afresh"
                    ))
                }
                401 => ActionError::permanent(format!(
                    "{doing}: the API server at {server} rejected lifeboat's credentials (401 Unauthorized); check the kubeconfig's user"
                )),
                403 => ActionError::permanent(format!(
                    "{doing}: denied by RBAC (403 Forbidden): {msg}"
                )),
                404 => ActionError::permanent(format!("{doing}: not found: {msg}")),
                410 | 429 | 500 | 502 | 503 | 504 => ActionError::transient(format!(
                    "{doing}: the API server answered {} {}: {msg}",
                    s.code, s.reason
                )),
                code => ActionError::permanent(format!(
                    "{doing}: the API server refused ({code} {}): {msg}",
                    s.reason
                )),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => ActionError::transient(format!(
            "{doing}: cannot reach the API server at {server}: {}",
            chain(e)
        )),
        other => ActionError::permanent(format!("{doing}: {}", chain(other))),
    }
}

/// An error and its sources, because hyper's outermost message ("client error (Connect)") alone
/// says nothing.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Which workload a step names.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Deployment,
    StatefulSet,
}

pub fn kind_and_name<'a>(
    deployment: Option<&'a str>,
    statefulset: Option<&'a str>,
) -> Result<(Kind, &'a str), ActionError> {
    match (deployment, statefulset) {
        (Some(d), None) => Ok((Kind::Deployment, d)),
        (None, Some(s)) => Ok((Kind::StatefulSet, s)),
        _ => Err(ActionError::permanent("give `deployment` or `statefulset`")),
    }
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
        }
    }
}

/// The workload as JSON, so one code path reads both kinds.
pub async fn get_workload(k: &Kube, kind: Kind, name: &str) -> Result<Value, ActionError> {
    let doing = format!("reading {} {}/{name}", kind.label(), k.namespace);
    let v = match kind {
        Kind::Deployment => k.deployments().get(name).await.map(serde_json::to_value),
        Kind::StatefulSet => k.statefulsets().get(name).await.map(serde_json::to_value),
    };
    v.map_err(|e| classify(&e, &doing, &k.server))?
        .map_err(|e| ActionError::permanent(e.to_string()))
}

/// A merge patch of the workload object itself (not a subresource), so metadata and spec change
/// in one write. A `metadata.resourceVersion` in the patch makes the write conditional.
pub async fn patch_workload(
    k: &Kube,
    kind: Kind,
    name: &str,
    patch: &Value,
    strategic: bool,
) -> Result<Value, ActionError> {
    let doing = format!("updating {} {}/{name}", kind.label(), k.namespace);
    let pp = PatchParams::default();
    let p = if strategic {
        Patch::Strategic(patch)
    } else {
        Patch::Merge(patch)
    };
    let v = match kind {
        Kind::Deployment => k
            .deployments()
            .patch(name, &pp, &p)
            .await
            .map(serde_json::to_value),
        Kind::StatefulSet => k
            .statefulsets()
            .patch(name, &pp, &p)
            .await
            .map(serde_json::to_value),
    };
    v.map_err(|e| classify(&e, &doing, &k.server))?
        .map_err(|e| ActionError::permanent(e.to_string()))
}

/// Where a rollout stands, from the workload's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub done: bool,
    /// "2 of 3 updated, 1 available", for progress and for the timeout message.
    pub summary: String,
    /// Set when the controller has given up (a Deployment past its progress deadline).
    pub failed: Option<String>,
    pub ready: i64,
    pub observed_generation: i64,
}

pub fn rollout(kind: Kind, w: &Value) -> Rollout {
    let n = |p: &str| w.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let want = w
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = n("/metadata/generation");
    let observed = n("/status/observedGeneration");
    let total = n("/status/replicas");
    let updated = n("/status/updatedReplicas");
    let ready = n("/status/readyReplicas");
    let seen = observed >= generation;
    let (done, summary) = match kind {
        Kind::Deployment => {
            let available = n("/status/availableReplicas");
            let done = seen && updated == want && total == want && available == want;
            (
                done,
                format!("{updated} of {want} updated, {available} available, {total} in total"),
            )
        }
        Kind::StatefulSet => {
            let current = w.pointer("/status/currentRevision").and_then(Value::as_str);
            let update = w.pointer("/status/updateRevision").and_then(Value::as_str);
            // A StatefulSet reports updatedReplicas against updateRevision; when every pod is
            // on it, the controller moves currentRevision up to it.
            let revised = want == 0 || current == update;
            let done = seen
                && ready == want
                && total == want
                && revised
                && (want == 0 || updated == want || current == update);
            (
                done,
                format!("{ready} of {want} ready, {updated} updated, {total} in total"),
            )
        }
    };
    let failed = w
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| {
            c["type"] == "Progressing"
                && c["status"] == "False"
                && c["reason"] == "ProgressDeadlineExceeded"
        })
        .map(|c| {
            c["message"]
                .as_str()
                .unwrap_or("progress deadline exceeded")
                .to_string()
        });
    let summary = if seen {
        summary
    } else {
        format!("{summary}; the controller has not seen generation {generation} yet")
    };
    Rollout {
        done,
        summary,
        failed,
        ready,
        observed_generation: observed,
    }
}

/// Polls until the rollout is complete, the controller gives up, or `within` passes. Polling (not
/// a watch) because a watch that drops mid-incident is one more thing to get wrong, and a second
/// of latency does not matter here.
pub async fn wait_rollout(
    k: &Kube,
    kind: Kind,
    name: &str,
    within: Duration,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Rollout, ActionError> {
    let mut last: Option<Rollout> = None;
    let mut poll = Poll::new(within);
    loop {
        match get_workload(k, kind, name).await {
            Ok(w) => {
                poll.ok();
                let r = rollout(kind, &w);
                if r.done {
                    return Ok(r);
                }
                if last.as_ref().is_none_or(|l| l.summary != r.summary) {
                    progress(&format!(
                        "{} {}/{name}: {}",
                        kind.label(),
                        k.namespace,
                        r.summary
                    ));
                }
                if let Some(why) = &r.failed {
                    return Err(ActionError::permanent(format!(
                        "{} {}/{name} failed to roll out: {why} ({})",
                        kind.label(),
                        k.namespace,
                        r.summary
                    )));
                }
                last = Some(r);
            }
            Err(e) => poll.failed(e, last.is_some())?,
        }
        poll.next(|within| {
            let state = last.as_ref().map_or("never read", |r| r.summary.as_str());
            format!(
                "{} {}/{name} was not rolled out after {within}: {state}",
                kind.label(),
                k.namespace
            )
        })
        .await?;
    }
}

/// An API for any kind, found by asking the server about its group version (one request), so
/// `apply` and `delete` work on whatever the cluster serves, custom resources included.
pub async fn dynamic_api(
    k: &Kube,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Result<(Api<kube::api::DynamicObject>, Option<String>), ActionError> {
    let r = served(k, api_version, kind).await?.ok_or_else(|| {
        ActionError::permanent(format!(
            "the API server at {} serves no kind {kind} in {api_version}",
            k.server
        ))
    })?;
    if r.namespaced {
        let ns = namespace
            .filter(|n| !n.is_empty())
            .unwrap_or(&k.namespace)
            .to_string();
        Ok((r.api(k, Some(&ns)), Some(ns)))
    } else {
        Ok((r.api(k, None), None))
    }
}

/// The kind of `api_version` the server serves, by asking about that group version (one
/// request); `None` when it serves no such kind.
pub async fn served(
    k: &Kube,
    api_version: &str,
    kind: &str,
) -> Result<Option<Resource>, ActionError> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    match kube::discovery::pinned_kind(&k.client, &gvk).await {
        Ok((ar, caps)) => Ok(Some(Resource {
            ar,
            namespaced: caps.scope == kube::discovery::Scope::Namespaced,
        })),
        // An unknown group answers 404; a known group without the kind, a discovery error.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(e) => Err(classify(
            &e,
            &format!("looking up {kind} in {api_version}"),
            &k.server,
        )),
    }
}

/// A kind the cluster serves, as discovery found it.
#[derive(Debug, Clone)]
pub struct Resource {
    pub ar: kube::discovery::ApiResource,
    pub namespaced: bool,
}

impl Resource {
    /// `ConfigMap`, or `Widget.example.com` outside the core group: what a runbook may write
    /// and what the export's counts are keyed by.
    pub fn label(&self) -> String {
        if self.ar.group.is_empty() {
            self.ar.kind.clone()
        } else {
            format!("{}.{}", self.ar.kind, self.ar.group)
        }
    }

    /// An API for this kind in `namespace` (ignored for cluster-scoped kinds).
    pub fn api(&self, k: &Kube, namespace: Option<&str>) -> Api<kube::api::DynamicObject> {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => Api::namespaced_with(k.client.clone(), ns, &self.ar),
            None => Api::all_with(k.client.clone(), &self.ar),
        }
    }
}

/// Every kind the cluster serves, in each group's preferred version: one discovery pass.
pub async fn discover(k: &Kube) -> Result<Vec<Resource>, ActionError> {
    let d = kube::discovery::Discovery::new(k.client.clone())
        .run()
        .await
        .map_err(|e| classify(&e, "discovering the kinds the API server serves", &k.server))?;
    let mut out = Vec::new();
    for g in d.groups() {
        for (ar, caps) in g.recommended_resources() {
            out.push(Resource {
                ar,
                namespaced: caps.scope == kube::discovery::Scope::Namespaced,
            });
        }
    }
    Ok(out)
}

/// The kind a runbook names: `ConfigMap`, `configmaps`, `Widget.example.com` or
/// `widgets.example.com` (kind or plural, any case, the group to tell kinds of the same name
/// apart). A bare name the core group serves is the core group's, as kubectl has it.
pub fn find_kind<'r>(served: &'r [Resource], name: &str) -> Result<&'r Resource, String> {
    let matches = |r: &Resource, base: &str| {
        r.ar.kind.eq_ignore_ascii_case(base) || r.ar.plural.eq_ignore_ascii_case(base)
    };
    let mut found: Vec<&Resource> = served.iter().filter(|r| matches(r, name)).collect();
    if found.is_empty()
        && let Some((base, group)) = name.split_once('.')
    {
        found = served
            .iter()
            .filter(|r| r.ar.group.eq_ignore_ascii_case(group) && matches(r, base))
            .collect();
    }
    if found.len() > 1 {
        if let Some(core) = found.iter().find(|r| r.ar.group.is_empty()) {
            return Ok(core);
        }
        let names: Vec<String> = found.iter().map(|r| format!("`{}`", r.label())).collect();
        return Err(format!(
            "`{name}` is served by several groups: write one of {}",
            names.join(", ")
        ));
    }
    found.first().copied().ok_or_else(|| {
        let hint =
            crate::diagnostics::did_you_mean(name, served.iter().map(|r| r.ar.kind.as_str()))
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
        format!("the API server serves no kind `{name}`{hint}")
    })
}

/// A list read a page at a time (500 objects, as kubectl asks), so memory holds one page
/// whatever the namespace holds.
pub struct Pages<'k> {
    k: &'k Kube,
    r: Resource,
    url: String,
    lp: kube::api::ListParams,
    doing: String,
    done: bool,
}

impl<'k> Pages<'k> {
    pub fn new(k: &'k Kube, r: &Resource, namespace: Option<&str>, selector: Option<&str>) -> Self {
        use kube::Resource as _;
        let ns = namespace.filter(|_| r.namespaced);
        let doing = match ns {
            Some(ns) => format!("listing {} in namespace {ns}", r.ar.plural),
            None => format!("listing {}", r.ar.plural),
        };
        let mut lp = kube::api::ListParams::default().limit(500);
        if let Some(s) = selector {
            lp = lp.labels(s);
        }
        Pages {
            k,
            url: kube::api::DynamicObject::url_path(&r.ar, ns),
            r: r.clone(),
            lp,
            doing,
            done: false,
        }
    }

    /// The next page's objects, each with its `apiVersion` and `kind` set (a list's items
    /// carry neither); `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<Value>>, ActionError> {
        if self.done {
            return Ok(None);
        }
        let req = kube::core::Request::new(&self.url)
            .list(&self.lp)
            .map_err(|e| ActionError::permanent(format!("{}: {e}", self.doing)))?;
        let mut page: Value = self
            .k
            .client
            .request(req)
            .await
            .map_err(|e| classify(&e, &self.doing, &self.k.server))?;
        let mut items = match page.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        for item in &mut items {
            item["apiVersion"] = json!(self.r.ar.api_version);
            item["kind"] = json!(self.r.ar.kind);
        }
        match page
            .pointer("/metadata/continue")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
        {
            Some(c) => self.lp.continue_token = Some(c.to_string()),
            None => self.done = true,
        }
        Ok(Some(items))
    }

    /// Every object of every page.
    pub async fn all(mut self) -> Result<Vec<Value>, ActionError> {
        let mut out = Vec::new();
        while let Some(page) = self.next().await? {
            out.extend(page);
        }
        Ok(out)
    }
}

/// The CustomResourceDefinition that makes a kind, when one does (CRDs are named
/// `<plural>.<group>`); `None` for the kinds the API server itself serves.
pub async fn crd_of(k: &Kube, r: &Resource) -> Result<Option<Value>, ActionError> {
    // Only groups with a dot can be a CRD's; `*.k8s.io` are the project's own.
    if !r.ar.group.contains('.') || r.ar.group.ends_with(".k8s.io") {
        return Ok(None);
    }
    let name = format!("{}.{}", r.ar.plural, r.ar.group);
    let api: Api<kube::api::DynamicObject> = Api::all_with(k.client.clone(), &crd_resource());
    match api.get_opt(&name).await {
        Ok(o) => Ok(o.map(|o| {
            let mut v = serde_json::to_value(o).expect("an object serializes");
            v["apiVersion"] = json!("apiextensions.k8s.io/v1");
            v["kind"] = json!("CustomResourceDefinition");
            v
        })),
        Err(e) => Err(classify(
            &e,
            &format!("reading the CustomResourceDefinition {name} (exported with its resources)"),
            &k.server,
        )),
    }
}

pub fn crd_resource() -> kube::discovery::ApiResource {
    kube::discovery::ApiResource {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiextensions.k8s.io/v1".into(),
        kind: "CustomResourceDefinition".into(),
        plural: "customresourcedefinitions".into(),
    }
}

/// Whether a CRD's `Established` condition is true: its kinds are served.
pub fn established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
}

/// `kind name` or `kind namespace/name`, for messages and outputs.
pub fn object_label(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// A wait loop's clock: its deadline, the pause between reads, and how it treats failed reads.
/// A blip once the object has been read is only "not yet", for up to `BLIP_LIMIT` in a row; the
/// first read failing, a lasting outage, or a permanent error ends the wait with the error, so
/// the step's retry policy decides what happens next.
pub struct Poll {
    within: Duration,
    deadline: tokio::time::Instant,
    since: Option<tokio::time::Instant>,
}

const BLIP_LIMIT: Duration = Duration::from_secs(10);

impl Poll {
    pub fn new(within: Duration) -> Poll {
        Poll {
            within,
            deadline: tokio::time::Instant::now() + within,
            since: None,
        }
    }
    /// Waits until the next read; past the deadline, fails with `timed_out(within)` instead.
    pub async fn next(&self, timed_out: impl FnOnce(&str) -> String) -> Result<(), ActionError> {
        if tokio::time::Instant::now() >= self.deadline {
            return Err(ActionError::permanent(timed_out(
                &crate::runbook::duration::format(self.within),
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }
    pub fn ok(&mut self) {
        self.since = None;
    }
    pub fn failed(&mut self, e: ActionError, read_before: bool) -> Result<(), ActionError> {
        if !e.transient || !read_before {
            return Err(e);
        }
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= BLIP_LIMIT {
            Err(e)
        } else {
            Ok(())
        }
    }
}

/// `{"metadata": {"annotations": {...}}}`, the shape most of our patches start from.
pub fn annotations(pairs: &[(&str, &str)]) -> Value {
    let mut a = serde_json::Map::new();
    for (k, v) in pairs {
        a.insert((*k).into(), json!(v));
    }
    json!({"metadata": {"annotations": a}})
}

/// An object's name as RFC 1123 wants it (a DNS subdomain: at most 253 characters, lowercase
/// letters, digits, `-` and `.`, beginning and ending with a letter or digit). A templated one is
/// checked once rendered, before the attempt touches anything.
pub fn name_problem(field: &str, name: &str) -> Option<crate::actions::WithProblem> {
    if crate::actions::unknown_yet(name) || is_dns_subdomain(name) {
        return None;
    }
    Some(crate::actions::WithProblem::new(
        field,
        format!(
            "`{}` is not a Kubernetes name: lowercase letters, digits, `-` and `.`, beginning and ending with a letter or digit, at most 253 characters",
            crate::text::printable(name, false)
        ),
    ))
}

/// A namespace as RFC 1123 wants it (a DNS label: at most 63 characters, no `.`).
pub fn namespace_problem(field: &str, ns: Option<&str>) -> Option<crate::actions::WithProblem> {
    let ns = ns?;
    if crate::actions::unknown_yet(ns)
        || (ns.len() <= 63 && is_dns_subdomain(ns) && !ns.contains('.'))
    {
        return None;
    }
    Some(crate::actions::WithProblem::new(
        field,
        format!(
            "`{}` is not a namespace: lowercase letters, digits and `-`, beginning and ending with a letter or digit, at most 63 characters",
            crate::text::printable(ns, false)
        ),
    ))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A Kubernetes workload, named by exactly one of the `deployment` and `statefulset` fields that
/// the Kubernetes actions carry (kept as plain fields: serde's `flatten` would lose error locations).
pub struct Workload<'a> {
    pub deployment: Option<&'a str>,
    pub statefulset: Option<&'a str>,
}

impl Workload<'_> {
    pub fn check(&self) -> Vec<crate::actions::WithProblem> {
        let names = [
            ("/deployment", self.deployment),
            ("/statefulset", self.statefulset),
        ]
        .into_iter()
        .filter_map(|(f, n)| name_problem(f, n?));
        let mut p: Vec<_> = names.collect();
        p.extend(self.one_of());
        p
    }

    fn one_of(&self) -> Vec<crate::actions::WithProblem> {
        match (self.deployment, self.statefulset) {
            (Some(_), None) | (None, Some(_)) => vec![],
            (Some(_), Some(_)) => {
                vec![crate::actions::WithProblem::new(
                    "",
                    "give `deployment` or `statefulset`, not both",
                )]
            }
            (None, None) => vec![crate::actions::WithProblem::new(
                "",
                "give the `deployment` or `statefulset` to act on",
            )],
        }
    }
}

impl std::fmt::Display for Workload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.deployment, self.statefulset) {
            (Some(d), _) => write!(f, "deployment {d}"),
            (None, Some(s)) => write!(f, "statefulset {s}"),
            (None, None) => f.write_str("(no workload)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(
        generation: i64,
        observed: i64,
        want: i64,
        updated: i64,
        available: i64,
        total: i64,
    ) -> Value {
        json!({
            "metadata": {"generation": generation},
            "spec": {"replicas": want},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": available, "replicas": total, "readyReplicas": available}
        })
    }

    #[test]
    fn a_deployment_is_rolled_out_only_when_every_count_matches() {
        assert!(rollout(Kind::Deployment, &deployment(2, 2, 3, 3, 3, 3)).done);
        // Old pods still running after the new ones are up.
        assert!(!rollout(Kind::Deployment, &deployment(2, 2, 3, 3, 3, 4)).done);
        // The controller has not looked at the new spec yet: its counts are about the old one.
        let r = rollout(Kind::Deployment, &deployment(3, 2, 3, 3, 3, 3));
        assert!(!r.done);
        assert!(r.summary.contains("not seen generation 3"), "{}", r.summary);
        assert!(!rollout(Kind::Deployment, &deployment(2, 2, 3, 3, 2, 3)).done);
        // Scaled to zero: done once the pods are gone.
        let zero = json!({"metadata": {"generation": 4}, "spec": {"replicas": 0}, "status": {"observedGeneration": 4}});
        assert!(rollout(Kind::Deployment, &zero).done);
    }

    #[test]
    fn a_deployment_past_its_deadline_has_failed() {
        let mut d = deployment(2, 2, 3, 1, 0, 3);
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"api-5d\" has timed out progressing."}]);
        assert_eq!(
            rollout(Kind::Deployment, &d).failed.as_deref(),
            Some("ReplicaSet \"api-5d\" has timed out progressing.")
        );
    }

    #[test]
    fn a_statefulset_is_rolled_out_when_all_pods_are_on_the_update_revision() {
        let s = |current: &str, ready: i64| {
            json!({"metadata": {"generation": 1}, "spec": {"replicas": 2},
                   "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": ready, "updatedReplicas": 2,
                              "currentRevision": current, "updateRevision": "db-2"}})
        };
        assert!(rollout(Kind::StatefulSet, &s("db-2", 2)).done);
        assert!(!rollout(Kind::StatefulSet, &s("db-1", 2)).done);
        assert!(!rollout(Kind::StatefulSet, &s("db-2", 1)).done);
    }

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn errors_are_retried_only_when_another_attempt_can_help() {
        let stale = api_error(
            409,
            "Conflict",
            "Operation cannot be fulfilled on deployments.apps \"api\": the object has been modified; please apply your changes to the latest version and try again",
        );
        let e = classify(&stale, "scaling deployment shop/api", "https://k:6443/");
        assert!(e.transient);
        assert!(e.message.contains("stale resourceVersion"), "{}", e.message);
        let exists = api_error(409, "AlreadyExists", "jobs.batch \"x\" already exists");
        assert!(!classify(&exists, "creating", "s").transient);
        let rbac = api_error(
            403,
            "Forbidden",
            "deployments.apps \"api\" is forbidden: User \"viewer\" cannot patch resource \"deployments\"",
        );
        let e = classify(&rbac, "scaling deployment shop/api", "s");
        assert!(!e.transient);
        assert!(
            e.message.contains("denied by RBAC") && e.message.contains("cannot patch"),
            "{}",
            e.message
        );
        assert!(!classify(&api_error(401, "Unauthorized", "Unauthorized"), "x", "s").transient);
        assert!(
            classify(
                &api_error(503, "ServiceUnavailable", "etcd leader changed"),
                "x",
                "s"
            )
            .transient
        );
        assert!(
            !classify(
                &api_error(422, "Invalid", "spec.replicas: Invalid value"),
                "x",
                "s"
            )
            .transient
        );
    }
}
