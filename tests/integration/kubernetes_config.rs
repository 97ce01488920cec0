//! Kubernetes configuration backed up and restored against a real API server (scripts/kube-server)
//! and a real S3 (scripts/s3-server): `kubernetes.export` and `kubernetes.import`, the shipped
//! runbooks and their drills, and what goes wrong (RBAC, unknown kinds, missing CRDs).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::common;
use common::kube::{FakeKubelet, KubeServer};
use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use common::sandbox::{Sandbox, runbook};

const PASSWORD: &str = "pg-Passw0rd-for-the-orders-db-4471";

/// A Secret value that is not text: every byte value, so a round trip that decodes, re-encodes
/// or trims anything shows.
fn blob() -> Vec<u8> {
    (0..=255u8).chain((0..=255u8).rev()).collect()
}

/// The namespace the tests back up: ConfigMaps, Secrets (one of them binary) and a Widget.
fn fixtures(k: &KubeServer, ns: &str) {
    k.namespace(ns);
    k.widget_crd();
    k.apply(&[
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": ns, "labels": {"app": "shop"}},
               "data": {"LOG_LEVEL": "info", "FEATURES": "a,b,c"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nginx", "namespace": ns, "labels": {"app": "edge"}},
               "data": {"nginx.conf": "server { listen 80; }\n"}, "binaryData": {"favicon.ico": STANDARD.encode([0u8, 1, 2, 254, 255])}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-credentials", "namespace": ns, "labels": {"app": "shop"}},
               "type": "Opaque", "data": {"password": STANDARD.encode(PASSWORD)}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls-bundle", "namespace": ns},
               "type": "Opaque", "data": {"blob": STANDARD.encode(blob())}}),
    ]);
    k.widget(ns, "w1", "True");
}

/// An API server holding the fixtures in `platform`, an S3 gateway with the `config-backups`
/// bucket, and an age key pair: its recipient, and the identity in the environment lifeboat is
/// run with (`LIFEBOAT_AGE_IDENTITY`, beside the S3 keys).
struct World {
    k: KubeServer,
    s3: S3Server,
    recipient: String,
    env: Vec<(&'static str, String)>,
}

impl World {
    fn start() -> World {
        use age::secrecy::ExposeSecret;
        let k = KubeServer::start();
        let s3 = S3Server::start(&["config-backups"]);
        fixtures(&k, "platform");
        let id = age::x25519::Identity::generate();
        let env = vec![
            ("LIFEBOAT_S3_ACCESS_KEY", ACCESS_KEY.into()),
            ("LIFEBOAT_S3_SECRET_KEY", SECRET_KEY.into()),
            (
                "LIFEBOAT_AGE_IDENTITY",
                id.to_string().expose_secret().to_string(),
            ),
        ];
        World {
            k,
            s3,
            recipient: id.to_public().to_string(),
            env,
        }
    }
}

fn run_env(sb: &Sandbox, args: &[String], env: &[(&'static str, String)]) -> common::sandbox::Ran {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sb.lifeboat_env(&args, &env)
}

/// Every file under the sandbox, and the outputs of the commands, must hold no Secret value in
/// any encoding a log could hold it in.
fn assert_no_secret(sb: &Sandbox, texts: &[&str]) {
    let forms = [
        PASSWORD.to_string(),
        STANDARD.encode(PASSWORD),
        PASSWORD
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        STANDARD.encode(blob()),
        STANDARD.encode(&blob()[..60]),
    ];
    let mut everything: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
    for entry in walk(&sb.path("")) {
        if let Ok(bytes) = std::fs::read(&entry) {
            if bytes.windows(blob().len()).any(|w| w == blob()) {
                panic!("{} holds the binary Secret", entry.display());
            }
            everything.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    for text in &everything {
        for f in &forms {
            assert!(!text.contains(f.as_str()), "a Secret value leaked: {f}");
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn params(k: &KubeServer, s3: &S3Server, extra: &[&str]) -> Vec<String> {
    [
        format!("kubeconfig={}", k.kubeconfig.display()),
        "kube_context=admin".into(),
        "namespace=platform".into(),
        "s3_bucket=config-backups".into(),
        format!("s3_endpoint={}", s3.endpoint),
        "s3_path_style=true".into(),
    ]
    .iter()
    .map(String::as_str)
    .chain(extra.iter().copied())
    .flat_map(|p| ["-p".to_string(), p.to_string()])
    .collect()
}

/// The shipped runbooks end to end: runbooks/kubernetes-config-backup.yaml exports the
/// namespace; the config-loss drill of runbooks/kubernetes-config-restore.yaml deletes every
/// ConfigMap and Secret and recovers them from that backup, byte for byte; the test-restore
/// drill imports into a scratch namespace and removes it. No Secret value reaches the run log,
/// the report, stdout or stderr.
#[test]
fn shipped_runbooks_back_up_a_namespace_and_restore_it_byte_for_byte() {
    let World {
        k,
        s3,
        recipient,
        env,
    } = World::start();
    let root = common::root();
    let sb = Sandbox::new();

    let mut args = vec![
        "run".to_string(),
        root.join("runbooks/kubernetes-config-backup.yaml")
            .display()
            .to_string(),
    ];
    args.extend(params(
        &k,
        &s3,
        &[
            &format!("age_recipient={recipient}"),
            "custom_kind=Widget.example.com",
        ],
    ));
    let b = run_env(&sb, &args, &env);
    assert_eq!(b.code, 0, "{}", b.stderr);
    let exported = sb.outputs(&b.run_id(), "export");
    assert_eq!(
        exported["counts"],
        json!({
            "ConfigMap": {"platform": 2},
            "Secret": {"platform": 2},
            "Widget": {"platform": 1},
            "CustomResourceDefinition": {"(cluster)": 1},
            "Namespace": {"(cluster)": 1},
        }),
        "{exported}"
    );
    assert_eq!(exported["objects"], 7);
    assert_eq!(exported["crds"], json!(["widgets.example.com"]));
    // The token the cluster issued for the default ServiceAccount.
    assert_eq!(
        exported["skipped"],
        json!({"service_account_tokens": 1}),
        "{exported}"
    );

    // The drill: every ConfigMap and Secret deleted, then imported back.
    let before = k.get("v1", "Secret", Some("platform"), "tls-bundle");
    let mut args = vec![
        "drill".to_string(),
        root.join("runbooks/kubernetes-config-restore.yaml")
            .display()
            .to_string(),
        "--scenario".into(),
        "config-loss".into(),
        "--yes".into(),
        "--report".into(),
        sb.path("drill").display().to_string(),
    ];
    args.extend(params(&k, &s3, &[]));
    let d = run_env(&sb, &args, &env);
    assert_eq!(d.code, 0, "{}\n{}", d.stdout, d.stderr);
    let run = d.run_id();
    let deleted = sb.outputs(&run, "delete_secrets");
    assert!(
        deleted["names"]
            .as_array()
            .unwrap()
            .contains(&json!("tls-bundle")),
        "{deleted}"
    );
    let preview = sb.outputs(&run, "preview");
    assert_eq!(preview["created"], 4, "{preview}");
    let imported = sb.outputs(&run, "import");
    assert_eq!(imported["created"], 4, "{imported}");
    assert_eq!(imported["counts"]["Secret"]["platform"], 2, "{imported}");
    let after = k.get("v1", "Secret", Some("platform"), "tls-bundle");
    assert_eq!(after["data"], before["data"]);
    assert_eq!(
        STANDARD
            .decode(after["data"]["blob"].as_str().unwrap())
            .unwrap(),
        blob()
    );
    let creds = k.get("v1", "Secret", Some("platform"), "app-credentials");
    assert_eq!(
        STANDARD
            .decode(creds["data"]["password"].as_str().unwrap())
            .unwrap(),
        PASSWORD.as_bytes()
    );
    let nginx = k.get("v1", "ConfigMap", Some("platform"), "nginx");
    assert_eq!(
        nginx["binaryData"]["favicon.ico"],
        STANDARD.encode([0u8, 1, 2, 254, 255])
    );
    // Applied by lifeboat's field manager.
    assert!(
        nginx["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "lifeboat"),
        "{nginx}"
    );
    let md = std::fs::read_to_string(sb.path("drill.md")).unwrap();
    assert!(md.contains("RPO"), "{md}");

    // The monthly test restore into a scratch namespace, kept for a look, then removed.
    let mut args = vec![
        "drill".to_string(),
        root.join("runbooks/kubernetes-config-restore.yaml")
            .display()
            .to_string(),
        "--scenario".into(),
        "test-restore".into(),
        "--yes".into(),
    ];
    args.extend(params(
        &k,
        &s3,
        &["restore_into=scratch", "keep_scratch=true"],
    ));
    let t = run_env(&sb, &args, &env);
    assert_eq!(t.code, 0, "{}\n{}", t.stdout, t.stderr);
    let scratch = k.get("v1", "Secret", Some("platform-restore-test"), "tls-bundle");
    assert_eq!(scratch["data"], before["data"]);
    let w = k.get(
        "example.com/v1",
        "Widget",
        Some("platform-restore-test"),
        "w1",
    );
    assert_eq!(w["spec"], json!({"size": 3}));
    let i = args.iter().position(|a| a == "keep_scratch=true").unwrap();
    args[i] = "keep_scratch=false".into();
    let t2 = run_env(&sb, &args, &env);
    assert_eq!(t2.code, 0, "{}\n{}", t2.stdout, t2.stderr);
    assert_eq!(sb.outputs(&t2.run_id(), "clear_scratch")["deleted"], true);
    assert_eq!(sb.outputs(&t2.run_id(), "remove_scratch")["deleted"], true);
    assert!(
        k.get("v1", "Namespace", None, "platform-restore-test")
            .is_null()
    );
    // The live namespace was never touched by the test restores.
    let live = k.get("v1", "Secret", Some("platform"), "tls-bundle");
    assert_eq!(
        live["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );

    assert_no_secret(
        &sb,
        &[
            &b.stdout, &b.stderr, &d.stdout, &d.stderr, &t.stdout, &t.stderr, &t2.stdout,
            &t2.stderr,
        ],
    );
}

/// An export of its own, for the failure tests: `with` of a `kubernetes.export` step.
fn export_runbook(k: &KubeServer, s3: &S3Server, context: &str, with: &str) -> String {
    runbook(
        "export",
        &format!(
            "secrets:\n  s3_key: {{env: LIFEBOAT_S3_ACCESS_KEY}}\n  s3_secret: {{env: LIFEBOAT_S3_SECRET_KEY}}\n  age: {{env: LIFEBOAT_AGE_IDENTITY}}\nconnections:\n{}{}steps:\n  - id: export\n    action: kubernetes.export\n    retry: {{attempts: 1}}\n    with: {{connection: cluster, to: {{connection: b, key: k8s/one}}, {with}}}\n",
            k.connection("cluster", context, "platform"),
            s3.connection("b", "config-backups")
        ),
    )
}

fn import_runbook(k: &KubeServer, s3: &S3Server, with: &str) -> String {
    runbook(
        "import",
        &format!(
            "secrets:\n  s3_key: {{env: LIFEBOAT_S3_ACCESS_KEY}}\n  s3_secret: {{env: LIFEBOAT_S3_SECRET_KEY}}\n  age: {{env: LIFEBOAT_AGE_IDENTITY}}\nconnections:\n{}{}steps:\n  - id: import\n    action: kubernetes.import\n    retry: {{attempts: 1}}\n    with: {{connection: cluster, from: {{connection: b, key: k8s/one}}, decrypt_with: \"{{{{ secrets.age }}}}\", {with}}}\n",
            k.connection("cluster", "admin", "platform"),
            s3.connection("b", "config-backups")
        ),
    )
}

/// The dry run lists each object as create, change (naming the fields) or unchanged and changes
/// nothing; `plan --live` says the same. A backup whose CRD the cluster lacks is refused before
/// anything changes when asked to (`crds: require`) or when the backup has no CRD, and otherwise
/// brings its CRD, established before the custom resources are applied.
#[test]
fn the_dry_run_lists_each_object_and_missing_crds_are_made_or_refused_before_any_change() {
    let World {
        k,
        s3,
        recipient,
        env,
    } = World::start();
    let sb = Sandbox::new();
    sb.write(
        "export.yaml",
        &export_runbook(
            &k,
            &s3,
            "admin",
            &format!(
                "kinds: [ConfigMap, secrets, Widget], encrypt: {{recipients: [\"{recipient}\"]}}"
            ),
        ),
    );
    let e = run_env(&sb, &["run".into(), "export.yaml".into()], &env);
    assert_eq!(e.code, 0, "{}", e.stderr);

    // One ConfigMap changed, one deleted, a Secret changed.
    k.apply(&[json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": "platform"},
                     "data": {"LOG_LEVEL": "debug", "FEATURES": "a,b,c"}})]);
    k.with_client(async |c| {
        let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(c.clone(), "platform");
        cms.delete("nginx", &Default::default()).await.unwrap();
    });
    // The test's own field manager owns LOG_LEVEL: without `force` the server's dry run says
    // the apply would conflict, and the import stops there.
    sb.write("conflict.yaml", &import_runbook(&k, &s3, "dry_run: true"));
    let c = run_env(&sb, &["run".into(), "conflict.yaml".into()], &env);
    assert_eq!(c.code, 1, "{}", c.stderr);
    let f = sb.failure(&c.run_id());
    assert!(
        f.contains("ConfigMap platform/app-config")
            && f.contains("conflict with \"test\": .data.LOG_LEVEL")
            && f.contains("`force: true` takes them over")
            && f.ends_with("nothing was changed"),
        "{f}"
    );
    sb.write(
        "dry.yaml",
        &import_runbook(&k, &s3, "dry_run: true, force: true"),
    );
    let dry = run_env(&sb, &["run".into(), "dry.yaml".into()], &env);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let out = sb.outputs(&dry.run_id(), "import");
    let changes: Vec<(String, String)> = out["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["object"].as_str().unwrap().to_string(),
                c["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        changes.contains(&("ConfigMap platform/nginx".into(), "create".into())),
        "{out}"
    );
    let app = out["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["object"] == "ConfigMap platform/app-config")
        .expect("the changed ConfigMap is listed");
    assert_eq!(app["change"], "change");
    assert!(
        app["fields"]
            .as_array()
            .unwrap()
            .contains(&json!("data.LOG_LEVEL")),
        "{app}"
    );
    assert_eq!(out["created"], 1, "{out}");
    assert_eq!(out["changed"], 1, "{out}");
    // Nothing changed on the server.
    assert!(
        k.get("v1", "ConfigMap", Some("platform"), "nginx")
            .is_null()
    );
    assert_eq!(
        k.get("v1", "ConfigMap", Some("platform"), "app-config")["data"]["LOG_LEVEL"],
        "debug"
    );
    // `plan --live` reads the same from the server.
    let live = sb.lifeboat_env(
        &["plan", "dry.yaml", "--live"],
        &env.iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    assert_eq!(live.code, 0, "{}", live.stderr);
    assert!(
        live.stdout.contains("create ConfigMap platform/nginx")
            && live
                .stdout
                .contains("change ConfigMap platform/app-config (data.LOG_LEVEL"),
        "{}",
        live.stdout
    );

    // The CRD goes, and its Widgets with it.
    k.with_client(async |c| {
        let crds: kube::Api<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        > = kube::Api::all(c);
        crds.delete("widgets.example.com", &Default::default())
            .await
            .unwrap();
        for _ in 0..200 {
            if crds.get_opt("widgets.example.com").await.unwrap().is_none() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the CRD was not deleted");
    });
    for (with, why) in [
        ("crds: require", "`crds: require`"),
        (
            "exclude_kinds: [CustomResourceDefinition]",
            "holds no CustomResourceDefinition",
        ),
    ] {
        sb.write("refused.yaml", &import_runbook(&k, &s3, with));
        let r = run_env(&sb, &["run".into(), "refused.yaml".into()], &env);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let failure = sb.failure(&r.run_id());
        assert!(
            failure.contains("does not serve Widget (example.com/v1)")
                && failure.contains(why)
                && failure.ends_with("nothing was changed"),
            "{failure}"
        );
        assert!(
            k.get("v1", "ConfigMap", Some("platform"), "nginx")
                .is_null()
        );
    }
    sb.write("import.yaml", &import_runbook(&k, &s3, "force: true"));
    let i = run_env(&sb, &["run".into(), "import.yaml".into()], &env);
    assert_eq!(i.code, 0, "{}", i.stderr);
    let out = sb.outputs(&i.run_id(), "import");
    assert_eq!(out["crds_created"], json!(["widgets.example.com"]), "{out}");
    assert_eq!(
        k.get("example.com/v1", "Widget", Some("platform"), "w1")["spec"],
        json!({"size": 3})
    );
    assert_eq!(
        k.get("v1", "ConfigMap", Some("platform"), "app-config")["data"]["LOG_LEVEL"],
        "info"
    );
    // Again: everything is as in the backup, so nothing is written.
    let again = run_env(&sb, &["run".into(), "import.yaml".into()], &env);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let out = sb.outputs(&again.run_id(), "import");
    assert_eq!(
        (out["created"].clone(), out["changed"].clone()),
        (json!(0), json!(0)),
        "{out}"
    );
    assert_no_secret(&sb, &[&dry.stdout, &live.stdout, &i.stdout, &i.stderr]);
}

/// What an export refuses, and what it only reports: RBAC that forbids listing Secrets (the
/// error names the verb and the resource, and nothing is stored), an unknown kind (with a
/// suggestion), and a selector that matches nothing (said, not an error unless asked).
#[test]
fn an_export_names_what_rbac_forbids_and_says_when_a_selector_matches_nothing() {
    let World {
        k,
        s3,
        recipient,
        env,
    } = World::start();
    let enc = format!("encrypt: {{recipients: [\"{recipient}\"]}}");
    let sb = Sandbox::new();
    let run = |name: &str, context: &str, with: &str| {
        sb.write(name, &export_runbook(&k, &s3, context, with));
        let r = run_env(&sb, &["run".into(), name.into()], &env);
        (r.code, r.run_id(), r)
    };

    // The viewers may read ConfigMaps in the namespace, not Secrets (nor the Namespace object,
    // which a namespaced Role cannot grant).
    k.apply(&[
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "config-reader", "namespace": "platform"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "config-reader", "namespace": "platform"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "config-reader"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "lifeboat:viewers"}]}),
    ]);
    let (code, id1, _) = run(
        "viewer.yaml",
        "viewer",
        &format!("kinds: [ConfigMap, Secret], {enc}"),
    );
    assert_eq!(code, 1);
    let f = sb.failure(&id1);
    assert!(
        f.contains("listing secrets in namespace platform")
            && f.contains("denied by RBAC (403 Forbidden)")
            && f.contains(
                "cannot list resource \"secrets\" in API group \"\" in the namespace \"platform\""
            ),
        "{f}"
    );
    assert!(f.ends_with("nothing was stored"), "{f}");
    assert!(
        sb.events(&id1).iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot read the Namespace object platform (RBAC)"))),
        "the Namespace object it could not read is said"
    );
    sb.write(
        "list.yaml",
        &runbook(
            "list",
            &format!(
                "secrets:\n  s3_key: {{env: LIFEBOAT_S3_ACCESS_KEY}}\n  s3_secret: {{env: LIFEBOAT_S3_SECRET_KEY}}\nconnections:\n{}steps:\n  - {{id: list, action: s3.list, with: {{connection: b, prefix: k8s/}}}}\n",
                s3.connection("b", "config-backups")
            ),
        ),
    );
    let l = run_env(&sb, &["run".into(), "list.yaml".into()], &env);
    assert_eq!(l.code, 0, "{}", l.stderr);
    assert_eq!(
        sb.outputs(&l.run_id(), "list")["count"],
        0,
        "nothing stored"
    );

    let (code, id2, _) = run(
        "typo.yaml",
        "admin",
        &format!("kinds: [ConfigMap, Widgt], {enc}"),
    );
    assert_eq!(code, 1);
    let f = sb.failure(&id2);
    assert!(
        f.contains("serves no kind `Widgt`; did you mean `Widget`?")
            && f.contains("nothing was exported"),
        "{f}"
    );

    let (code, id3, _) = run(
        "none.yaml",
        "admin",
        &format!("kinds: [ConfigMap, Secret], selector: \"app=nothing\", {enc}"),
    );
    assert_eq!(code, 0);
    let out = sb.outputs(&id3, "export");
    assert_eq!(
        out["unmatched"],
        json!(["ConfigMap in platform", "Secret in platform"])
    );
    assert!(
        sb.events(&id3).iter().any(|e| e["event"] == "step_progress"
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("selector `app=nothing` matched no ConfigMap in platform")),
        "the run log says so"
    );
    let (code, id4, _) = run(
        "strict.yaml",
        "admin",
        &format!("kinds: [Secret], selector: \"app=nothing\", require_match: true, {enc}"),
    );
    assert_eq!(code, 1);
    assert!(
        sb.failure(&id4)
            .contains("matched no Secret in platform (`require_match: true`)"),
        "{}",
        sb.failure(&id4)
    );
}

/// `kubernetes.scale` by label selector records each workload's count, and a `compensate` with
/// `restore_previous` puts each one back; `kubernetes.wait` waits for a custom resource's
/// condition (and says where it is stuck when it times out); `kubernetes.apply` reads a folder
/// of multi-document manifests.
#[test]
fn scale_by_selector_wait_for_a_condition_and_apply_a_folder() {
    let k = KubeServer::start();
    k.namespace("shop");
    k.widget_crd();
    let _kubelet = FakeKubelet::start(&k, &["shop"]);
    let mut a = k.deployment("shop", "writer-a", 2);
    a["metadata"]["labels"] = json!({"role": "writer"});
    let mut b = k.deployment("shop", "writer-b", 1);
    b["metadata"]["labels"] = json!({"role": "writer"});
    k.apply(&[a, b, k.deployment("shop", "reader", 1)]);
    k.widget("shop", "w1", "False");
    k.widget("shop", "w2", "False");

    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("k8s")).unwrap();
    sb.write(
        "k8s/10-config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-file, namespace: shop}\ndata: {a: \"1\"}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w3, namespace: shop}\nspec: {size: 1}\n",
    );
    sb.write("k8s/README.md", "not a manifest");
    sb.write(
        "r.yaml",
        &runbook(
            "kube",
            &format!(
                "connections:\n{}steps:\n{}",
                k.connection("cluster", "admin", "shop"),
                r#"
  - id: stop_writers
    action: kubernetes.scale
    with: {connection: cluster, selector: "role=writer", replicas: 0, wait: ready, wait_timeout: 2m}
    compensate:
      action: kubernetes.scale
      with: {connection: cluster, selector: "role=writer", restore_previous: true, wait: ready, wait_timeout: 2m}
  - id: files
    action: kubernetes.apply
    needs: [stop_writers]
    with: {connection: cluster, files: [k8s]}
  - id: ready
    action: kubernetes.wait
    needs: [files]
    with: {connection: cluster, kind: Widget.example.com, name: w1, condition: Ready, within: 1m}
  - id: stuck
    action: kubernetes.wait
    needs: [ready]
    retry: {attempts: 1}
    with: {connection: cluster, kind: widgets, name: w2, condition: Ready, within: 2s}
"#
            ),
        ),
    );
    // w1 becomes Ready while the step waits for it.
    let r = std::thread::scope(|scope| {
        let running = scope.spawn(|| sb.lifeboat(&["run", "r.yaml"]));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !running.is_finished() && std::time::Instant::now() < deadline {
            let waiting = walk(&sb.path(".lifeboat")).iter().any(|p| {
                std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"step\":\"ready\""))
            });
            if waiting {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        k.widget_ready("shop", "w1", "True");
        running.join().unwrap()
    });
    assert_eq!(r.code, 1, "{}", r.stderr);
    let run = r.run_id();
    let stop = sb.outputs(&run, "stop_writers");
    let mut scaled: Vec<(String, i64)> = stop["scaled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["previous_replicas"].as_i64().unwrap(),
            )
        })
        .collect();
    scaled.sort();
    assert_eq!(
        scaled,
        [("writer-a".to_string(), 2), ("writer-b".to_string(), 1)]
    );
    assert_eq!(
        sb.outputs(&run, "files")["applied"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        !k.get("v1", "ConfigMap", Some("shop"), "from-file")
            .is_null()
    );
    assert_eq!(
        sb.outputs(&run, "ready")["objects"],
        json!(["Widget shop/w1"])
    );
    let f = sb.failure(&run);
    assert!(
        f.contains("condition Ready=True was not reached after 2s")
            && f.contains("Widget shop/w2: Ready=False (Test: set by the test)"),
        "{f}"
    );
    // The rollback put each writer back to its own count, and left the reader alone.
    let replicas = |n: &str| k.read("shop", "Deployment", n)["spec"]["replicas"].clone();
    assert_eq!(replicas("writer-a"), 2);
    assert_eq!(replicas("writer-b"), 1);
    assert_eq!(replicas("reader"), 1);
    let a = k.read("shop", "Deployment", "writer-a");
    assert!(
        a["metadata"]["annotations"]
            .get("lifeboat.dev/previous-replicas")
            .is_none(),
        "restoring clears the record: {a}"
    );
}

/// An import killed (SIGKILL) while it applies, part of the objects written, is finished by
/// `resume`: the interrupted attempt runs again (an import is idempotent), finds what the first
/// one applied unchanged, and applies the rest; every object is on the server.
#[test]
fn an_import_killed_while_it_applies_is_finished_by_resume() {
    let World {
        k,
        s3,
        recipient,
        env,
    } = World::start();
    let sb = Sandbox::new();
    let many: String = (0..2500)
        .map(|i| {
            format!(
                "---\n{{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {{\"name\": \"cm-{i:04}\", \"namespace\": \"platform\"}}, \"data\": {{\"n\": \"{i}\"}}}}\n"
            )
        })
        .collect();
    sb.write("many.yaml", &many);
    sb.write(
        "setup.yaml",
        &runbook(
            "setup",
            &format!(
                "secrets:\n  s3_key: {{env: LIFEBOAT_S3_ACCESS_KEY}}\n  s3_secret: {{env: LIFEBOAT_S3_SECRET_KEY}}\nconnections:\n{}{}steps:\n  - {{id: make, action: kubernetes.apply, with: {{connection: cluster, files: [many.yaml]}}}}\n  - id: export\n    action: kubernetes.export\n    needs: [make]\n    with: {{connection: cluster, kinds: [ConfigMap], to: {{connection: b, key: k8s/one}}, encrypt: {{recipients: [\"{recipient}\"]}}}}\n  - {{id: wipe, action: kubernetes.delete, needs: [export], with: {{connection: cluster, kind: ConfigMap, all: true, wait: false}}}}\n",
                k.connection("cluster", "admin", "platform"),
                s3.connection("b", "config-backups")
            ),
        ),
    );
    let s = run_env(&sb, &["run".into(), "setup.yaml".into()], &env);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert_eq!(
        sb.outputs(&s.run_id(), "export")["counts"]["ConfigMap"]["platform"],
        2502
    );

    sb.write("import.yaml", &import_runbook(&k, &s3, "parallel: 4"));
    let mut c = sb.command(&["run", "import.yaml"]);
    for (name, value) in &env {
        c.env(name, value);
    }
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = false;
    for _ in 0..3000 {
        seen = walk(&sb.path(".lifeboat/runs")).iter().any(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains("applied 1000 of")
        });
        if seen {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        seen,
        "the import never reported progress: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let present = || {
        k.with_client(async |c| {
            let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(c, "platform");
            cms.list(&Default::default())
                .await
                .unwrap()
                .items
                .iter()
                .filter(|c| {
                    c.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("cm-"))
                })
                .count()
        })
    };
    let part = present();
    assert!(
        (1000..2500).contains(&part),
        "killed part way: {part} applied"
    );
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = sb.lifeboat_env(&["resume", &id, "--yes"], &env_ref);
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    let out = sb.outputs(&id, "import");
    assert_eq!(out["counts"]["ConfigMap"]["platform"], 2502, "{out}");
    assert!(out["unchanged"].as_u64().unwrap() >= 1000, "{out}");
    assert_eq!(present(), 2500);
}

/// runbooks/platform-backup.yaml end to end: runbooks/postgres-backup.yaml for each database
/// of a list param (a `for_each` of `action: runbook`), then
/// runbooks/kubernetes-config-backup.yaml, each a child run linked to the step that ran it,
/// against a real PostgreSQL, API server and S3.
#[test]
fn the_platform_runbook_runs_each_components_runbook_as_a_child_run() {
    let World {
        k,
        s3,
        recipient,
        mut env,
    } = World::start();
    let pg = common::pg::Cluster::start();
    for db in ["orders", "users"] {
        pg.psql("postgres", &format!("create database {db}"));
        pg.psql(
            db,
            "create table t(id int primary key); insert into t select generate_series(1, 50)",
        );
    }
    env.push(("PGPASSWORD", common::pg::PASSWORD.to_string()));
    let sb = Sandbox::new();
    let mut args = vec![
        "run".to_string(),
        common::root()
            .join("runbooks/platform-backup.yaml")
            .display()
            .to_string(),
    ];
    args.extend(params(
        &k,
        &s3,
        &[
            &format!("age_recipient={recipient}"),
            &format!("pg_url=postgres://postgres@127.0.0.1:{}", pg.port),
            "databases=orders,users",
        ],
    ));
    let r = run_env(&sb, &args, &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let parent = r.run_id();
    let runs: serde_json::Value =
        serde_json::from_str(&sb.lifeboat(&["runs", "--json"]).stdout).unwrap();
    let mut children: Vec<(String, String)> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] != parent.as_str())
        .map(|r| {
            let id = r["id"].as_str().unwrap().to_string();
            let started = sb.events(&id).remove(0);
            (started["parent"].as_str().unwrap().to_string(), id)
        })
        .collect();
    children.sort();
    let steps: Vec<&str> = children.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        steps,
        [
            format!("{parent}/databases[orders]"),
            format!("{parent}/databases[users]"),
            format!("{parent}/kubernetes_config"),
        ]
    );
    for (step, child) in &children {
        let step = step.rsplit('/').next().unwrap();
        let out = sb.outputs(&parent, step);
        assert_eq!(out["run"], child.as_str(), "{step}: {out}");
        assert_eq!(out["status"], "succeeded");
    }
    let users = &children[1].1;
    let dumped = sb.outputs(users, "dump");
    assert!(
        dumped["key"]
            .as_str()
            .unwrap()
            .starts_with("postgres/users/"),
        "{dumped}"
    );
    // Two ConfigMaps, two Secrets, their Namespace.
    assert_eq!(sb.outputs(&children[2].1, "export")["objects"], 5);
    assert_no_secret(&sb, &[&r.stdout, &r.stderr]);
}
