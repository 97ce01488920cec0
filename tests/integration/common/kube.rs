//! A throwaway Kubernetes control plane from scripts/kube-server (etcd, kube-apiserver and
//! kube-controller-manager on 127.0.0.1), stopped when dropped; and a stand-in kubelet.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

pub struct KubeServer {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub port: u16,
    _tmp: tempfile::TempDir,
}

impl KubeServer {
    pub fn start() -> KubeServer {
        let s = super::start_service("kube-server", &[], &[]);
        KubeServer {
            kubeconfig: s.dir.join("kubeconfig"),
            dir: s.dir,
            port: s.port,
            _tmp: s.tmp,
        }
    }

    /// A client for the `admin` context.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let opts = kube::config::KubeConfigOptions {
            context: Some("admin".into()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Runs `f` with an admin client on a runtime of its own (the tests are synchronous).
    pub fn with_client<T>(&self, f: impl AsyncFnOnce(kube::Client) -> T) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = self.client().await;
            f(c).await
        })
    }

    /// Applies manifests as the admin (server-side apply), for test fixtures.
    pub fn apply(&self, manifests: &[serde_json::Value]) {
        self.with_client(async |c| {
            for m in manifests {
                let api_version = m["apiVersion"].as_str().unwrap();
                let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
                let gvk =
                    kube::api::GroupVersionKind::gvk(group, version, m["kind"].as_str().unwrap());
                let (ar, caps) = kube::discovery::pinned_kind(&c, &gvk).await.unwrap();
                let name = m["metadata"]["name"].as_str().unwrap();
                let api: Api<kube::api::DynamicObject> =
                    if caps.scope == kube::discovery::Scope::Namespaced {
                        Api::namespaced_with(
                            c.clone(),
                            m["metadata"]["namespace"].as_str().unwrap(),
                            &ar,
                        )
                    } else {
                        Api::all_with(c.clone(), &ar)
                    };
                api.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(m))
                    .await
                    .unwrap_or_else(|e| panic!("applying {name}: {e}"));
            }
        })
    }

    /// A namespace whose `default` ServiceAccount exists, so pods can be created in it.
    pub fn namespace(&self, name: &str) {
        self.apply(&[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})]);
        self.with_client(async |c| {
            let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(c, name);
            for _ in 0..200 {
                if sa.get_opt("default").await.unwrap().is_some() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("the controller manager made no default ServiceAccount in {name}");
        })
    }

    /// A Deployment of `replicas` pods labelled `app: NAME`.
    pub fn deployment(&self, namespace: &str, name: &str, replicas: i32) -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
                }
            }
        })
    }

    pub fn read(&self, namespace: &str, kind: &str, name: &str) -> serde_json::Value {
        let api_version = match kind {
            "Deployment" | "StatefulSet" => "apps/v1",
            "Job" => "batch/v1",
            "Namespace" => "v1",
            other => panic!("read: unknown kind {other}"),
        };
        // A cluster-scoped kind ignores the namespace.
        let ns = (kind != "Namespace").then_some(namespace);
        self.get(api_version, kind, ns, name)
    }

    /// The `widgets.example.com` CustomResourceDefinition (namespaced, `v1`, with a status
    /// subresource), once the server serves its kind.
    pub fn widget_crd(&self) -> serde_json::Value {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        });
        self.apply(std::slice::from_ref(&crd));
        self.with_client(async |c| {
            let gvk = kube::api::GroupVersionKind::gvk("example.com", "v1", "Widget");
            for _ in 0..200 {
                if kube::discovery::pinned_kind(&c, &gvk).await.is_ok() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("the Widget kind was never served");
        });
        crd
    }

    /// A Widget whose status says `Ready` is `ready`, as a controller would write it.
    pub fn widget(&self, namespace: &str, name: &str, ready: &str) {
        self.apply(&[json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "shop"}},
            "spec": {"size": 3}
        })]);
        self.widget_ready(namespace, name, ready);
    }

    pub fn widget_ready(&self, namespace: &str, name: &str, ready: &str) {
        self.with_client(async |c| {
            let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "example.com",
                "v1",
                "Widget",
            ));
            let api: Api<kube::api::DynamicObject> = Api::namespaced_with(c, namespace, &ar);
            let status = json!({"status": {"conditions": [{"type": "Ready", "status": ready, "reason": "Test", "message": "set by the test"}]}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        })
    }

    /// Any object as JSON (`Null` when absent), by API version and plural resource name.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> serde_json::Value {
        self.with_client(async |c| {
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
            let (ar, _) = kube::discovery::pinned_kind(&c, &gvk).await.unwrap();
            let api: Api<kube::api::DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(c, ns, &ar),
                None => Api::all_with(c, &ar),
            };
            match api.get_opt(name).await.unwrap() {
                Some(o) => serde_json::to_value(o).unwrap(),
                None => serde_json::Value::Null,
            }
        })
    }

    /// A `connections:` entry for lifeboat.
    pub fn connection(&self, name: &str, context: &str, namespace: &str) -> String {
        format!(
            "  {name}: {{kubernetes: {{kubeconfig: \"{}\", context: {context}, namespace: {namespace}}}}}\n",
            self.kubeconfig.display()
        )
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        super::stop_service("kube-server", &self.dir);
    }
}

/// Does for the pods of some namespaces what a kubelet would: a pod of a Job ends `Succeeded`
/// (or `Failed` when its template is annotated `lifeboat.test/outcome: fail`); any other pod
/// becomes Running and Ready. There is no scheduler or kubelet in the test cluster, and with
/// this the real controllers roll Deployments, StatefulSets and Jobs out for real.
pub struct FakeKubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelet {
    pub fn start(server: &KubeServer, namespaces: &[&str]) -> FakeKubelet {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let kubeconfig = server.kubeconfig.clone();
        let namespaces: Vec<String> = namespaces.iter().map(|s| s.to_string()).collect();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                let opts = kube::config::KubeConfigOptions { context: Some("admin".into()), ..Default::default() };
                let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &opts).await.unwrap()).unwrap();
                while !flag.load(Ordering::Relaxed) {
                    for ns in &namespaces {
                        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
                        let Ok(list) = pods.list(&ListParams::default()).await else { continue };
                        for p in list.items {
                            let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                            if phase != "Pending" && !phase.is_empty() || p.metadata.deletion_timestamp.is_some() {
                                continue;
                            }
                            let name = p.metadata.name.clone().unwrap_or_default();
                            let of_job = p.metadata.owner_references.iter().flatten().any(|o| o.kind == "Job");
                            let fail = p.metadata.annotations.as_ref().and_then(|a| a.get("lifeboat.test/outcome")).is_some_and(|v| v == "fail");
                            let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                            let status = if of_job {
                                json!({"status": {"phase": if fail { "Failed" } else { "Succeeded" }, "startTime": now}})
                            } else {
                                let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                                json!({"status": {
                                    "phase": "Running", "startTime": now, "podIP": "10.244.0.10",
                                    "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
                                    "containerStatuses": p.spec.iter().flat_map(|s| s.containers.iter()).map(|c| json!({
                                        "name": c.name, "image": c.image, "imageID": "", "ready": true, "restartCount": 0,
                                        "started": true, "state": {"running": {"startedAt": now}}
                                    })).collect::<Vec<_>>()
                                }})
                            };
                            let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                }
            })
        });
        FakeKubelet {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
