//! The Kubernetes actions against a real kube-apiserver and controller manager
//! (scripts/kube-server), with a stand-in kubelet marking pods Ready so rollouts really happen.

use crate::common;

use common::kube::{FakeKubelet, KubeServer};
use common::sandbox::{Sandbox, runbook};
use serde_json::json;

fn outputs(events: &[serde_json::Value], step: &str) -> serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == "step_succeeded" && e["step"] == step)
        .unwrap_or_else(|| panic!("{step} did not succeed"))["outputs"]
        .clone()
}

fn failures(events: &[serde_json::Value], step: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            e["step"] == step
                && (e["event"] == "step_failed" || e["event"] == "step_attempt_failed")
        })
        .map(|e| e["error"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn scale_restart_job_apply_and_delete_against_a_real_api_server() {
    let k = KubeServer::start();
    k.namespace("shop");
    let _kubelet = FakeKubelet::start(&k, &["shop", "drill"]);
    k.apply(&[k.deployment("shop", "orders-api", 3)]);

    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "kube",
            &format!(
                "connections:\n{}steps:\n{}",
                k.connection("cluster", "admin", "shop"),
                r#"
  - {id: ready, action: kubernetes.wait_ready, with: {connection: cluster, deployment: orders-api, within: 2m}}
  - id: stop
    action: kubernetes.scale
    needs: [ready]
    with: {connection: cluster, deployment: orders-api, replicas: 0, wait: ready, wait_timeout: 2m}
  - id: restart_back
    action: kubernetes.scale
    needs: [stop]
    with: {connection: cluster, deployment: orders-api, replicas: "{{ steps.stop.outputs.previous_replicas }}", wait: ready, wait_timeout: 2m}
  - {id: restart, action: kubernetes.rollout_restart, needs: [restart_back], with: {connection: cluster, deployment: orders-api, wait_timeout: 2m}}
  - id: migrate
    action: kubernetes.job
    needs: [restart]
    with:
      connection: cluster
      name: migrate
      within: 2m
      spec:
        backoffLimit: 0
        template:
          spec:
            restartPolicy: Never
            containers: [{name: m, image: "registry.invalid/migrate:1", command: [migrate, up]}]
  - id: drill_ns
    action: kubernetes.apply
    needs: [migrate]
    with:
      connection: cluster
      namespace: drill
      manifests:
        - {apiVersion: v1, kind: Namespace, metadata: {name: drill}}
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: scenario}, data: {fault: "kill primary"}}
  - id: again
    action: kubernetes.apply
    needs: [drill_ns]
    with:
      connection: cluster
      namespace: drill
      manifests:
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: scenario}, data: {fault: "kill primary"}}
  - {id: teardown, action: kubernetes.delete, needs: [again], with: {connection: cluster, kind: Namespace, name: drill, within: 2m}}
  - {id: teardown_again, action: kubernetes.delete, needs: [teardown], with: {connection: cluster, kind: Namespace, name: drill}}
"#
            ),
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ev = sb.events(&r.run_id());
    assert_eq!(outputs(&ev, "ready")["ready_replicas"], 3);
    assert_eq!(
        outputs(&ev, "stop"),
        json!({"previous_replicas": 3, "replicas": 0, "ready_replicas": 0,
               "scaled": [{"kind": "deployment", "name": "orders-api", "previous_replicas": 3, "replicas": 0}]})
    );
    assert_eq!(outputs(&ev, "restart_back")["previous_replicas"], 0);
    assert_eq!(outputs(&ev, "restart_back")["ready_replicas"], 3);
    let progress: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "step_progress" && e["step"] == "restart_back")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        progress
            .first()
            .is_some_and(|m| m.starts_with("deployment shop/orders-api: ")),
        "the rollout reported no progress: {progress:?}"
    );
    let restarted_at = outputs(&ev, "restart")["restarted_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(outputs(&ev, "restart")["ready_replicas"], 3);
    let job = outputs(&ev, "migrate");
    assert_eq!(job["succeeded"], 1, "{job}");
    assert!(
        job["name"].as_str().unwrap().starts_with("migrate-"),
        "{job}"
    );
    let applied = outputs(&ev, "drill_ns")["applied"].clone();
    assert_eq!(applied[0]["kind"], "Namespace");
    assert_eq!(applied[0]["namespace"], serde_json::Value::Null);
    assert_eq!(applied[1]["namespace"], "drill");
    // Applying the same object again is a no-op: the server keeps its resourceVersion.
    assert_eq!(
        outputs(&ev, "again")["applied"][0]["resource_version"],
        applied[1]["resource_version"]
    );
    assert_eq!(outputs(&ev, "teardown")["deleted"], true);
    assert_eq!(outputs(&ev, "teardown_again")["deleted"], false);

    // What the server holds now, read independently of lifeboat.
    let d = k.read("shop", "Deployment", "orders-api");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        restarted_at.as_str()
    );
    assert_eq!(
        d["metadata"]["annotations"]["lifeboat.dev/previous-replicas"],
        "0"
    );
    let j = k.read("shop", "Job", job["name"].as_str().unwrap());
    assert_eq!(
        j["metadata"]["labels"]["lifeboat.dev/run"],
        r.run_id().as_str()
    );
    assert_eq!(k.read("", "Namespace", "drill"), serde_json::Value::Null);

    examples_are_accepted_by_the_api_server(&k);
}

/// examples/kubernetes/ is what teams copy: every object in it is accepted by the real API server
/// (a server-side dry run). This 1.20 server predates batch/v1 CronJob, so a CronJob is checked as
/// the k8s-openapi type and its Job template is sent as a Job.
fn examples_are_accepted_by_the_api_server(k: &KubeServer) {
    k.namespace("lifeboat");
    let dir = common::root().join("examples/kubernetes");
    let mut checked = Vec::new();
    for path in common::yaml_files(&dir) {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---\n") {
            let mut obj: serde_json::Value =
                serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if obj["kind"] == "CronJob" {
                let typed: k8s_openapi::api::batch::v1::CronJob =
                    serde_json::from_value(obj.clone()).unwrap();
                assert_eq!(
                    typed.spec.unwrap().concurrency_policy.as_deref(),
                    Some("Forbid")
                );
                obj = json!({
                    "apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": format!("{}-template", obj["metadata"]["name"].as_str().unwrap()), "namespace": "lifeboat"},
                    "spec": obj["spec"]["jobTemplate"]["spec"].clone(),
                });
            }
            let name = format!(
                "{} {}",
                obj["kind"].as_str().unwrap(),
                obj["metadata"]["name"].as_str().unwrap()
            );
            k.with_client(async |c| {
                let kind = obj["kind"].as_str().unwrap();
                let (group, version) = obj["apiVersion"]
                    .as_str()
                    .unwrap()
                    .split_once('/')
                    .unwrap_or(("", "v1"));
                let (ar, _) = kube::discovery::pinned_kind(
                    &c,
                    &kube::api::GroupVersionKind::gvk(group, version, kind),
                )
                .await
                .unwrap();
                let api: kube::Api<kube::api::DynamicObject> =
                    kube::Api::namespaced_with(c, "lifeboat", &ar);
                let pp = kube::api::PatchParams::apply("examples-test").dry_run();
                api.patch(
                    obj["metadata"]["name"].as_str().unwrap(),
                    &pp,
                    &kube::api::Patch::Apply(&obj),
                )
                .await
                .unwrap_or_else(|e| {
                    panic!("{}: the API server refused {name}: {e}", path.display())
                });
            });
            checked.push(name);
        }
    }
    assert_eq!(
        checked,
        [
            "ServiceAccount lifeboat",
            "Job postgres-backup-template",
            "Job postgres-restore-drill"
        ],
        "{checked:?}"
    );
}

#[test]
fn failures_are_classified_and_worded_for_the_operator() {
    let k = KubeServer::start();
    k.namespace("shop");
    let _kubelet = FakeKubelet::start(&k, &["shop"]);
    k.apply(&[k.deployment("shop", "orders-api", 2)]);

    // The API server's own wording of a stale write, which `classify` retries on.
    let stale = k.with_client(async |c| {
        let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(c, "shop");
        let mut d = api.get("orders-api").await.unwrap();
        api.patch(
            "orders-api",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
        d.metadata.managed_fields = None;
        match api.replace("orders-api", &Default::default(), &d).await {
            Err(kube::Error::Api(s)) => *s,
            other => panic!("a stale replace was not refused: {other:?}"),
        }
    });
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(
        stale
            .message
            .contains("please apply your changes to the latest version"),
        "{}",
        stale.message
    );

    // A closed port on loopback: the API server is unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sb = Sandbox::new();
    let unreachable = std::fs::read_to_string(&k.kubeconfig).unwrap().replace(
        &format!("127.0.0.1:{}", k.port),
        &format!("127.0.0.1:{closed}"),
    );
    sb.write("unreachable.kubeconfig", &unreachable);
    sb.write(
        "r.yaml",
        &runbook(
            "kube-failures",
            &format!(
                "connections:\n{}{}  gone: {{kubernetes: {{kubeconfig: unreachable.kubeconfig, context: admin, namespace: shop}}}}\nsteps:\n{}",
                k.connection("viewer", "viewer", "shop"),
                k.connection("admin", "admin", "shop"),
                r#"
  - id: denied
    action: kubernetes.scale
    with: {connection: viewer, deployment: orders-api, replicas: 0}
    retry: {attempts: 3, delay: 10ms}
    on_failure: continue
  - id: unreachable
    action: kubernetes.wait_ready
    with: {connection: gone, deployment: orders-api}
    retry: {attempts: 2, delay: 10ms}
    on_failure: continue
  - id: missing
    action: kubernetes.scale
    with: {connection: admin, deployment: no-such-app, replicas: 1}
    retry: {attempts: 3, delay: 10ms}
    on_failure: continue
  - id: failing_job
    action: kubernetes.job
    with:
      connection: admin
      within: 1m
      spec:
        backoffLimit: 0
        template:
          metadata: {annotations: {lifeboat.test/outcome: fail}}
          spec:
            restartPolicy: Never
            containers: [{name: m, image: "registry.invalid/migrate:1"}]
    retry: {attempts: 2, delay: 10ms}
    on_failure: continue
  - id: bad_apply
    action: kubernetes.apply
    with:
      connection: admin
      manifests:
        - {apiVersion: example.com/v1, kind: Widget, metadata: {name: w}}
    on_failure: continue
"#
            ),
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    let ev = sb.events(&r.run_id());
    let denied = failures(&ev, "denied");
    assert_eq!(denied.len(), 1, "an RBAC denial is not retried: {denied:?}");
    assert!(
        denied[0].contains("denied by RBAC (403 Forbidden)")
            && denied[0].contains("lifeboat-viewer"),
        "{}",
        denied[0]
    );
    let unreachable = failures(&ev, "unreachable");
    assert_eq!(
        unreachable.len(),
        2,
        "an unreachable server is retried: {unreachable:?}"
    );
    assert!(
        unreachable[1].contains(&format!(
            "cannot reach the API server at https://127.0.0.1:{closed}"
        )),
        "{}",
        unreachable[1]
    );
    let missing = failures(&ev, "missing");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].contains("not found") && missing[0].contains("no-such-app"),
        "{}",
        missing[0]
    );
    let job = failures(&ev, "failing_job");
    assert_eq!(job.len(), 1, "a failed Job is final: {job:?}");
    assert!(
        job[0].contains("failed (1 pod(s) failed)") && job[0].contains("BackoffLimitExceeded"),
        "{}",
        job[0]
    );
    let bad = failures(&ev, "bad_apply");
    assert!(
        bad[0].contains("serves no kind Widget in example.com/v1"),
        "{bad:?}"
    );
    // Nothing was scaled by the denied or missing steps.
    assert_eq!(
        k.read("shop", "Deployment", "orders-api")["spec"]["replicas"],
        2
    );
}

/// Killed while a Job runs, `resume` waits for that same Job instead of starting the work again;
/// and a StatefulSet scales down and back like a Deployment.
#[test]
fn a_job_survives_a_crash_of_lifeboat_and_statefulsets_scale() {
    let k = KubeServer::start();
    k.namespace("batch");
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "kube-crash",
            &format!(
                "connections:\n{}steps:\n{}",
                k.connection("cluster", "admin", "batch"),
                r#"
  - id: migrate
    action: kubernetes.job
    with:
      connection: cluster
      within: 2m
      spec:
        backoffLimit: 0
        template:
          spec:
            restartPolicy: Never
            containers: [{name: m, image: "registry.invalid/migrate:1"}]
  - {id: down, action: kubernetes.scale, needs: [migrate], with: {connection: cluster, statefulset: db, replicas: 0, wait: ready, wait_timeout: 2m}}
  - {id: up, action: kubernetes.scale, needs: [down], with: {connection: cluster, statefulset: db, replicas: "{{ steps.down.outputs.previous_replicas }}", wait: ready, wait_timeout: 2m}}
"#
            ),
        ),
    );
    let jobs_of_step = || {
        k.with_client(async |c| {
            let api: kube::Api<k8s_openapi::api::batch::v1::Job> =
                kube::Api::namespaced(c, "batch");
            let lp = kube::api::ListParams::default().labels("lifeboat.dev/step=migrate");
            api.list(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|j| j.metadata.name.unwrap())
                .collect::<Vec<_>>()
        })
    };
    // No kubelet yet: the Job's pod stays Pending and the step waits.
    let mut child = sb
        .command(&["run", "r.yaml"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut created = Vec::new();
    for _ in 0..200 {
        created = jobs_of_step();
        if !created.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(created.len(), 1, "the step created no Job");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let run = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(!run.is_empty(), "no run id printed");

    k.apply(&[json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "batch"},
        "spec": {
            "replicas": 2, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "registry.invalid/db:1"}]}}
        }
    })]);
    let _kubelet = FakeKubelet::start(&k, &["batch"]);
    let r = sb.lifeboat(&["resume", &run]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(jobs_of_step(), created, "resume started a second Job");
    let ev = sb.events(&run);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "step_interrupted" && e["step"] == "migrate")
    );
    assert_eq!(outputs(&ev, "migrate")["name"], created[0].as_str());
    assert_eq!(outputs(&ev, "migrate")["succeeded"], 1);
    assert_eq!(outputs(&ev, "down")["previous_replicas"], 2);
    assert_eq!(outputs(&ev, "up")["ready_replicas"], 2);
    let s = k.read("batch", "StatefulSet", "db");
    assert_eq!(
        (
            s["spec"]["replicas"].clone(),
            s["status"]["readyReplicas"].clone()
        ),
        (2.into(), 2.into())
    );
}
