//! Kubernetes objects as `kubernetes.export` writes them and `kubernetes.import` reads them: what
//! is cleaned off an object before it is kept, the stream's format, what counts as a change, and
//! keeping a Secret's data out of messages. Pure functions, so every rule has a unit test.
//!
//! The stream is YAML that is also JSON lines: a comment naming the format, then each object as
//! one line of JSON after a `---`, then a comment with the count. lifeboat reads it line by
//! line; `kubectl apply -f` reads it as the multi-document YAML it is, so an opened export can be
//! applied without lifeboat.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};

/// The stream's first line and the manifest's `format`.
pub const FORMAT: &str = "lifeboat kubernetes export 1";
const HEAD: &str = "# lifeboat kubernetes export 1";
const END: &str = "# end ";

/// The key under which counts keep cluster-scoped objects (no namespace can be named so).
pub const CLUSTER: &str = "(cluster)";

/// Objects per kind, then per namespace (or [`CLUSTER`]).
pub type Counts = BTreeMap<String, BTreeMap<String, u64>>;

pub fn count(counts: &mut Counts, obj: &Value) {
    *counts
        .entry(kind_of(obj).to_string())
        .or_default()
        .entry(namespace_of(obj).unwrap_or(CLUSTER).to_string())
        .or_default() += 1;
}

pub fn kind_of(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or_default()
}
pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}
pub fn namespace_of(obj: &Value) -> Option<&str> {
    obj["metadata"]["namespace"]
        .as_str()
        .filter(|s| !s.is_empty())
}
pub fn group_of(obj: &Value) -> &str {
    obj["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map_or("", |(g, _)| g)
}

/// `Kind ns/name` or `Kind name`, for messages and outputs.
pub fn label(obj: &Value) -> String {
    match namespace_of(obj) {
        Some(ns) => format!("{} {ns}/{}", kind_of(obj), name_of(obj)),
        None => format!("{} {}", kind_of(obj), name_of(obj)),
    }
}

/// Why an object listed is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A controller made it and makes it again (a Job's pods, an operator's ConfigMap); restored
    /// beside a new controller it would be a stray, and with its dangling owner the garbage
    /// collector deletes it anyway.
    Controlled,
    /// A token the cluster issued for a ServiceAccount: bound to that account's uid, useless
    /// in another cluster, and issued again by the token controller.
    ServiceAccountToken,
    /// The cluster's CA bundle the root-CA publisher puts in every namespace.
    RootCa,
}

impl Skip {
    pub fn words(self) -> &'static str {
        match self {
            Skip::Controlled => "owned by a controller, which makes them again",
            Skip::ServiceAccountToken => "service account tokens, issued again by the cluster",
            Skip::RootCa => "the cluster's CA bundle (kube-root-ca.crt), published by the cluster",
        }
    }
    pub fn key(self) -> &'static str {
        match self {
            Skip::Controlled => "controlled",
            Skip::ServiceAccountToken => "service_account_tokens",
            Skip::RootCa => "root_ca",
        }
    }
}

/// Removes what the server owns from an object as listed, leaving what a user wrote: what an
/// apply into any cluster makes again. `Err` when the object is not kept at all.
pub fn clean(obj: &mut Value) -> Result<(), Skip> {
    let kind = kind_of(obj).to_string();
    let controlled = obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["controller"] == json!(true)));
    if controlled {
        return Err(Skip::Controlled);
    }
    if kind == "Secret" && obj["type"] == "kubernetes.io/service-account-token" {
        return Err(Skip::ServiceAccountToken);
    }
    if kind == "ConfigMap" && name_of(obj) == "kube-root-ca.crt" {
        return Err(Skip::RootCa);
    }
    let name = name_of(obj).to_string();
    let Some(o) = obj.as_object_mut() else {
        return Ok(());
    };
    o.remove("status");
    if let Some(Value::Object(m)) = o.get_mut("metadata") {
        for k in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            // The name is kept; the prefix it was generated from would make a second one.
            "generateName",
            // Owners that are not controllers: their uids do not exist in another cluster.
            "ownerReferences",
            "finalizers",
        ] {
            m.remove(k);
        }
        if let Some(Value::Object(a)) = m.get_mut("annotations") {
            // Written by controllers about this cluster's state.
            a.retain(|k, _| {
                !k.starts_with("pv.kubernetes.io/")
                    && k != "deployment.kubernetes.io/revision"
                    && k != "kubernetes.io/service-account.uid"
                    && k != "control-plane.alpha.kubernetes.io/leader"
            });
            if a.is_empty() {
                m.remove("annotations");
            }
        }
    }
    match kind.as_str() {
        "Service" => {
            if let Some(Value::Object(spec)) = o.get_mut("spec") {
                // Allocated by the cluster; "None" (headless) is what the user wrote.
                if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
                    spec.remove("clusterIP");
                    spec.remove("clusterIPs");
                }
                spec.remove("healthCheckNodePort");
                if spec.get("type").and_then(Value::as_str) == Some("ClusterIP")
                    && let Some(Value::Array(ports)) = spec.get_mut("ports")
                {
                    for p in ports {
                        if let Some(p) = p.as_object_mut() {
                            p.remove("nodePort");
                        }
                    }
                }
            }
        }
        "Namespace" => {
            // `kubernetes` is the server's own finalizer.
            o.remove("spec");
        }
        "ServiceAccount" => {
            // References to the token Secrets the cluster issued, which are not kept.
            if let Some(Value::Array(secrets)) = o.get_mut("secrets") {
                let prefix = format!("{name}-token-");
                secrets.retain(|s| !s["name"].as_str().is_some_and(|n| n.starts_with(&prefix)));
                if secrets.is_empty() {
                    o.remove("secrets");
                }
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(Value::Object(spec)) = o.get_mut("spec") {
                // The volume this cluster bound it to.
                spec.remove("volumeName");
            }
        }
        _ => {}
    }
    Ok(())
}

/// The stream's first line.
pub fn head() -> String {
    format!("{HEAD}\n")
}

/// One object as the stream holds it.
pub fn line(obj: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"---\n");
    serde_json::to_writer(&mut *out, obj).expect("a JSON value serializes");
    out.push(b'\n');
}

/// The stream's last line: how many objects it holds, so a cut stream is told from a whole one.
pub fn end(objects: u64) -> String {
    format!("{END}{}\n", json!({"objects": objects}))
}

/// Reads a whole stream into its objects; refuses one that is not an export, is cut short, or
/// whose count does not match.
pub fn read(input: impl std::io::BufRead) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    let mut lines = input.lines();
    match lines.next() {
        Some(Ok(first)) if first == HEAD => {}
        Some(Ok(_)) | None => return Err(format!("not a `{FORMAT}` stream")),
        Some(Err(e)) => return Err(e.to_string()),
    }
    let mut ended = None;
    for (n, l) in lines.enumerate() {
        let l = l.map_err(|e| e.to_string())?;
        if ended.is_some() {
            return Err(format!("line {}: data after the end line", n + 2));
        }
        if l == "---" || l.is_empty() {
            continue;
        }
        if let Some(rest) = l.strip_prefix(END) {
            let v: Value = serde_json::from_str(rest)
                .map_err(|e| format!("line {}: the end line: {e}", n + 2))?;
            ended = Some(v["objects"].as_u64().ok_or("the end line has no count")?);
            continue;
        }
        let obj: Value =
            serde_json::from_str(&l).map_err(|e| format!("line {}: not an object: {e}", n + 2))?;
        if !obj.is_object() || kind_of(&obj).is_empty() || name_of(&obj).is_empty() {
            return Err(format!("line {}: an object without kind or name", n + 2));
        }
        objects.push(obj);
    }
    match ended {
        None => Err(format!(
            "the stream ends after {} objects without its end line: it was cut short",
            objects.len()
        )),
        Some(n) if n != objects.len() as u64 => Err(format!(
            "the stream holds {} objects, its end line says {n}",
            objects.len()
        )),
        Some(_) => Ok(objects),
    }
}

/// What an import would do to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Create,
    Change,
    Unchanged,
}

impl Change {
    pub fn word(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Change => "change",
            Change::Unchanged => "unchanged",
        }
    }
}

/// The fields that differ between what is in the cluster and what an apply would leave (the
/// server's own dry run, so defaults are filled the same on both sides), as paths such as
/// `data.password`: names only, never values. Empty: unchanged. Metadata the server rewrites on
/// every write (resourceVersion, managedFields, generation) is not a difference, nor are
/// `apiVersion` and `kind` (the same kind on both sides, and absent from a list's items).
pub fn differences(current: &Value, after: &Value) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if matches!(
                        p.as_str(),
                        // A list's items carry neither apiVersion nor kind.
                        "apiVersion"
                            | "kind"
                            | "metadata.resourceVersion"
                            | "metadata.managedFields"
                            | "metadata.generation"
                            | "metadata.creationTimestamp"
                            | "metadata.uid"
                            | "metadata.selfLink"
                            | "status"
                    ) {
                        continue;
                    }
                    match (x.get(k), y.get(k)) {
                        (Some(a), Some(b)) => walk(&p, a, b, out),
                        _ => out.push(p),
                    }
                }
            }
            (a, b) if a != b => out.push(path.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", current, after, &mut out);
    out
}

/// `message` with every value of a Secret's `data` and `stringData` replaced by `***`, as
/// stored (base64) and decoded: an API server that echoes a value it refused must not put a
/// Secret into the run log. Other objects pass unchanged.
pub fn scrub(message: &str, obj: &Value) -> String {
    if kind_of(obj) != "Secret" {
        return message.to_string();
    }
    let mut values: Vec<String> = Vec::new();
    for field in ["data", "stringData"] {
        if let Some(m) = obj[field].as_object() {
            for v in m.values().filter_map(Value::as_str) {
                values.push(v.to_string());
                if field == "data"
                    && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(v)
                {
                    values.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
    }
    // Longest first, so a value that contains another is masked whole. Very short values would
    // mask ordinary words; a server quoting one is no more likely than anyone guessing it.
    values.retain(|v| v.len() >= 4);
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = message.to_string();
    for v in values {
        out = out.replace(&v, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed_config_map() -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": "app", "namespace": "shop", "uid": "1f1", "resourceVersion": "77",
                "creationTimestamp": "2026-11-30T10:00:00Z", "generateName": "app-",
                "managedFields": [{"manager": "kubectl"}], "labels": {"app": "shop"},
                "annotations": {"note": "kept", "deployment.kubernetes.io/revision": "3"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Thing", "name": "t", "uid": "9"}]
            },
            "data": {"a": "1"}
        })
    }

    #[test]
    fn cleaning_keeps_what_a_user_wrote_and_nothing_the_server_owns() {
        let mut o = listed_config_map();
        clean(&mut o).unwrap();
        assert_eq!(
            o,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "app", "namespace": "shop", "labels": {"app": "shop"}, "annotations": {"note": "kept"}},
                "data": {"a": "1"}
            })
        );
    }

    #[test]
    fn what_the_cluster_makes_again_is_skipped() {
        let mut o = listed_config_map();
        o["metadata"]["ownerReferences"][0]["controller"] = json!(true);
        assert_eq!(clean(&mut o), Err(Skip::Controlled));
        let mut t = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token", "metadata": {"name": "default-token-x"}});
        assert_eq!(clean(&mut t), Err(Skip::ServiceAccountToken));
        let mut ca = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}});
        assert_eq!(clean(&mut ca), Err(Skip::RootCa));
    }

    #[test]
    fn a_service_loses_its_allocated_addresses_but_a_headless_one_stays_headless() {
        let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "ports": [{"port": 80, "nodePort": 30001}]}});
        clean(&mut s).unwrap();
        assert_eq!(
            s["spec"],
            json!({"type": "ClusterIP", "ports": [{"port": 80}]})
        );
        let mut h = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        clean(&mut h).unwrap();
        assert_eq!(h["spec"]["clusterIP"], "None");
        let mut sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"},
            "secrets": [{"name": "app-token-abcde"}, {"name": "registry"}]});
        clean(&mut sa).unwrap();
        assert_eq!(sa["secrets"], json!([{"name": "registry"}]));
    }

    #[test]
    fn a_stream_round_trips_and_a_cut_one_is_refused() {
        let objects = vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "x"}, "data": {"k": "line\nbreak"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
        ];
        let mut s = head().into_bytes();
        for o in &objects {
            line(o, &mut s);
        }
        let whole = [s.clone(), end(2).into_bytes()].concat();
        assert_eq!(read(&whole[..]).unwrap(), objects);
        let e = read(&s[..]).unwrap_err();
        assert!(e.contains("cut short"), "{e}");
        let wrong = [s.clone(), end(3).into_bytes()].concat();
        assert!(read(&wrong[..]).unwrap_err().contains("end line says 3"));
        assert!(
            read(&b"apiVersion: v1\n"[..])
                .unwrap_err()
                .contains("not a")
        );
    }

    #[test]
    fn differences_name_fields_and_ignore_what_every_write_changes() {
        let current = json!({"metadata": {"name": "a", "resourceVersion": "1", "managedFields": []}, "data": {"k": "1", "old": "x"}});
        let same = json!({"metadata": {"name": "a", "resourceVersion": "2", "managedFields": [{}]}, "data": {"k": "1", "old": "x"}});
        assert!(differences(&current, &same).is_empty());
        let changed = json!({"metadata": {"name": "a", "labels": {"l": "1"}}, "data": {"k": "2", "old": "x"}});
        assert_eq!(
            differences(&current, &changed),
            ["data.k", "metadata.labels"]
        );
    }

    #[test]
    fn a_secret_value_never_reaches_a_message_in_either_form() {
        let s = json!({"kind": "Secret", "metadata": {"name": "db"},
            "data": {"password": base64::engine::general_purpose::STANDARD.encode("hunter2-long")},
            "stringData": {"token": "tok-123456"}});
        let msg = format!(
            "Secret \"db\" is invalid: data[password]: Invalid value: \"{}\" (\"hunter2-long\"), token tok-123456",
            s["data"]["password"].as_str().unwrap()
        );
        let out = scrub(&msg, &s);
        assert!(
            !out.contains("hunter2-long") && !out.contains("tok-123456"),
            "{out}"
        );
        assert!(
            !out.contains(s["data"]["password"].as_str().unwrap()),
            "{out}"
        );
        assert!(out.contains("data[password]"), "{out}");
        let cm = json!({"kind": "ConfigMap", "data": {"a": "visible"}});
        assert_eq!(scrub("visible", &cm), "visible");
    }
}
