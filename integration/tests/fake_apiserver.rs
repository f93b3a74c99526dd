//! The fake Kubernetes API server driven by the real `kube` client: lists with selectors,
//! watchers and reflectors following programmatic and fixture-file changes, relisting after a
//! forced `410 Gone`, a custom resource as `DynamicObject`, and Lease optimistic concurrency.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config};
use lgtm_integration::eventually;
use lgtm_integration::fake_apiserver::{FakeApiServer, Options};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

async fn client_from(kubeconfig: &Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kubeconfig is usable");
    Client::try_from(config).expect("client")
}

/// A server with quick bookmarks, and a `kube` client reading the kubeconfig it wrote.
async fn start() -> (FakeApiServer, Client, tempfile::TempDir) {
    let options = Options { bookmark_interval: Duration::from_millis(200), ..Options::default() };
    let server = FakeApiServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), options).await.expect("starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).expect("kubeconfig written");
    let client = client_from(&path).await;
    (server, client, dir)
}

fn pod(namespace: &str, name: &str, node: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
    })
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().filter_map(|p| p.metadata.name.clone()).collect()
}

#[tokio::test]
async fn pods_are_listed_with_field_and_label_selectors() {
    let (server, client, _dir) = start().await;
    server.apply(pod("shop", "web-0", "node-a", "web")).expect("apply");
    server.apply(pod("shop", "db-0", "node-b", "db")).expect("apply");
    server.apply(pod("ops", "agent-0", "node-a", "agent")).expect("apply");

    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");

    let all: Api<Pod> = Api::all(client.clone());
    let on_a = all.list(&ListParams::default().fields("spec.nodeName=node-a")).await.expect("list");
    assert_eq!(names(&on_a.items), ["agent-0", "web-0"]);
    assert_eq!(on_a.metadata.resource_version.as_deref(), Some(server.resource_version().to_string().as_str()));
    assert!(on_a.items.iter().all(|p| p.metadata.resource_version.is_some() && p.metadata.uid.is_some()));

    let shop: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let not_db = shop.list(&ListParams::default().labels("app notin (db),app")).await.expect("list");
    assert_eq!(names(&not_db.items), ["web-0"]);
    let by_name = all.list(&ListParams::default().fields("metadata.name=db-0,metadata.namespace=shop")).await;
    assert_eq!(names(&by_name.expect("list").items), ["db-0"]);

    let one = shop.get("web-0").await.expect("get");
    assert_eq!(one.spec.and_then(|s| s.node_name).as_deref(), Some("node-a"));
    let missing = shop.get("nope").await.expect_err("404");
    assert!(matches!(missing, kube::Error::Api(ref s) if s.code == 404), "{missing:?}");
}

#[tokio::test]
async fn reflector_follows_objects_applied_through_the_api() {
    let (server, client, _dir) = start().await;
    server.apply(pod("shop", "web-0", "node-a", "web")).expect("apply");
    let api: Api<Pod> = Api::all(client);
    let (reader, writer) = reflector::store::<Pod>();
    let config = watcher::Config::default().fields("spec.nodeName=node-a");
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff().applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(WAIT, reader.wait_until_ready()).await.expect("ready in time").expect("ready");

    let web = ObjectRef::<Pod>::new("web-0").within("shop");
    assert!(reader.get(&web).is_some());

    server.apply(pod("shop", "web-1", "node-a", "web")).expect("add");
    let web1 = ObjectRef::<Pod>::new("web-1").within("shop");
    eventually(WAIT, "web-1 added", || async { reader.get(&web1).map(|_| ()) }).await;

    server.apply(pod("shop", "web-1", "node-a", "web-v2")).expect("modify");
    eventually(WAIT, "web-1 modified", || async {
        let app = reader.get(&web1)?.metadata.labels.as_ref()?.get("app")?.clone();
        (app == "web-v2").then_some(())
    })
    .await;

    // Moving out of the field selection is a DELETED for this watch, as on a real server.
    server.apply(pod("shop", "web-1", "node-b", "web-v2")).expect("move");
    eventually(WAIT, "web-1 left node-a", || async { reader.get(&web1).is_none().then_some(()) }).await;

    server.delete("v1", "Pod", "shop", "web-0").expect("delete");
    eventually(WAIT, "web-0 deleted", || async { reader.get(&web).is_none().then_some(()) }).await;
    task.abort();
}

#[tokio::test]
async fn raw_watch_reports_event_types_bookmarks_and_gone() {
    let (server, client, _dir) = start().await;
    let api: Api<Pod> = Api::namespaced(client, "shop");
    let start_rv = api.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("rv");

    let mut events = api.watch(&WatchParams::default().timeout(20), &start_rv).await.expect("watch").boxed();
    server.apply(pod("shop", "web-0", "node-a", "web")).expect("add");
    server.apply(pod("shop", "web-0", "node-a", "web-v2")).expect("modify");
    server.delete("v1", "Pod", "shop", "web-0").expect("delete");

    let mut seen = Vec::new();
    let mut bookmarks = 0;
    tokio::time::timeout(WAIT, async {
        while seen.len() < 3 || bookmarks == 0 {
            match events.try_next().await.expect("event").expect("stream open") {
                WatchEvent::Added(_) => seen.push("ADDED"),
                WatchEvent::Modified(_) => seen.push("MODIFIED"),
                WatchEvent::Deleted(_) => seen.push("DELETED"),
                WatchEvent::Bookmark(b) => {
                    assert!(!b.metadata.resource_version.is_empty());
                    bookmarks += 1;
                }
                WatchEvent::Error(e) => panic!("unexpected error event {e:?}"),
            }
        }
    })
    .await
    .expect("three events and a bookmark in time");
    assert_eq!(seen, ["ADDED", "MODIFIED", "DELETED"]);

    server.compact();
    let first = tokio::time::timeout(WAIT, events.try_next()).await.expect("in time").expect("event");
    assert!(matches!(first, Some(WatchEvent::Error(ref e)) if e.code == 410 && e.reason == "Expired"), "{first:?}");
    let mut stale = api.watch(&WatchParams::default(), &start_rv).await.expect("watch").boxed();
    let refused = tokio::time::timeout(WAIT, stale.try_next()).await.expect("in time").expect("event");
    assert!(matches!(refused, Some(WatchEvent::Error(ref e)) if e.code == 410), "{refused:?}");
}

#[tokio::test]
async fn forced_gone_makes_the_watcher_relist_and_recover() {
    let (server, client, _dir) = start().await;
    server.apply(pod("shop", "web-0", "node-a", "web")).expect("apply");
    let api: Api<Pod> = Api::all(client);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = log.clone();
    let task = tokio::spawn(watcher(api, watcher::Config::default()).for_each(move |event| {
        let line = match event {
            Ok(watcher::Event::Init) => "init".to_string(),
            Ok(watcher::Event::InitApply(p)) => format!("init-apply {}", p.metadata.name.unwrap_or_default()),
            Ok(watcher::Event::InitDone) => "init-done".to_string(),
            Ok(watcher::Event::Apply(p)) => format!("apply {}", p.metadata.name.unwrap_or_default()),
            Ok(watcher::Event::Delete(p)) => format!("delete {}", p.metadata.name.unwrap_or_default()),
            Err(e) => format!("error {e}"),
        };
        sink.lock().expect("log").push(line);
        async {}
    }));
    let count = |what: &'static str| {
        let log = log.clone();
        move || {
            let n = log.lock().expect("log").iter().filter(|l| l.starts_with(what)).count();
            async move { Some(n) }
        }
    };
    eventually(WAIT, "first init-done", || {
        let n = count("init-done");
        async move { n().await.filter(|n| *n == 1) }
    })
    .await;

    server.compact();
    eventually(WAIT, "a relist after 410", || {
        let n = count("init-done");
        async move { n().await.filter(|n| *n == 2) }
    })
    .await;
    server.apply(pod("shop", "web-1", "node-a", "web")).expect("apply");
    eventually(WAIT, "web-1 after the relist", || {
        let log = log.clone();
        async move { log.lock().expect("log").iter().any(|l| l == "apply web-1").then_some(()) }
    })
    .await;
    let log = log.lock().expect("log").clone();
    let error = log.iter().position(|l| l.starts_with("error")).expect("the 410 surfaced as an error");
    assert!(log[error].contains("410") || log[error].contains("too old"), "{log:?}");
    assert_eq!(log.iter().filter(|l| *l == "init-apply web-0").count(), 2, "{log:?}");
    task.abort();
}

fn service_monitor_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    ApiResource::from_gvk_with_plural(&gvk, "servicemonitors")
}

#[tokio::test]
async fn service_monitor_lists_and_watches_as_a_dynamic_object() {
    let (server, client, _dir) = start().await;
    server
        .apply_yaml(
            "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\n\
             metadata: {name: web, namespace: shop, labels: {team: a}}\n\
             spec: {selector: {matchLabels: {app: web}}, endpoints: [{port: metrics}]}\n",
        )
        .expect("apply");

    let discovery = kube::discovery::Discovery::new(client.clone()).run().await.expect("discovery");
    let found =
        discovery.groups().flat_map(|g| g.recommended_resources()).any(|(ar, _)| ar.plural == "servicemonitors");
    assert!(found, "servicemonitors discovered");
    let aggregated = kube::discovery::Discovery::new(client.clone()).run_aggregated().await.expect("aggregated");
    let (pods, caps) = aggregated.resolve_gvk(&GroupVersionKind::gvk("", "v1", "Pod")).expect("pods discovered");
    assert_eq!((pods.plural.as_str(), caps.scope), ("pods", kube::discovery::Scope::Namespaced));
    assert!(aggregated.has_group("monitoring.coreos.com"));

    let resource = service_monitor_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop", &resource);
    let listed = api.list(&ListParams::default().labels("team=a")).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].data["spec"]["endpoints"][0]["port"], "metrics");

    // A streaming-list watcher: initial events end with the annotated bookmark.
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let reader = writer.as_reader();
    let config = watcher::Config::default().streaming_lists();
    let all: Api<DynamicObject> = Api::all_with(client, &resource);
    let stream = reflector::reflector(writer, watcher(all, config)).default_backoff().applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(WAIT, reader.wait_until_ready()).await.expect("ready in time").expect("ready");
    assert_eq!(reader.state().len(), 1);

    server
        .apply(json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                      "metadata": {"name": "db", "namespace": "shop"}, "spec": {}}))
        .expect("apply");
    eventually(WAIT, "two service monitors", || async { (reader.state().len() == 2).then_some(()) }).await;
    task.abort();
}

#[tokio::test]
async fn lease_update_with_a_stale_resource_version_conflicts() {
    let (_server, client, _dir) = start().await;
    let leases: Api<Lease> = Api::namespaced(client, "lgtm");
    let lease = |holder: &str| Lease {
        metadata: ObjectMeta { name: Some("events-leader".into()), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let pp = PostParams::default();
    let created = leases.create(&pp, &lease("agent-a")).await.expect("create");
    let again = leases.create(&pp, &lease("agent-b")).await.expect_err("already exists");
    assert!(matches!(again, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"), "{again:?}");

    let mut renewed = created.clone();
    renewed.spec.as_mut().expect("spec").lease_duration_seconds = Some(20);
    let renewed = leases.replace("events-leader", &pp, &renewed).await.expect("fresh update");
    assert_ne!(renewed.metadata.resource_version, created.metadata.resource_version);

    let mut stolen = created.clone();
    stolen.spec.as_mut().expect("spec").holder_identity = Some("agent-b".into());
    let conflict = leases.replace("events-leader", &pp, &stolen).await.expect_err("stale");
    assert!(matches!(conflict, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"), "{conflict:?}");
    let current = leases.get("events-leader").await.expect("get");
    assert_eq!(current.spec.and_then(|s| s.holder_identity).as_deref(), Some("agent-a"));
}

/// The binary: fixture files added, changed and removed reach a reflector as watch events.
#[tokio::test]
async fn binary_turns_fixture_file_changes_into_watch_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir(&fixtures).expect("mkdir");
    std::fs::write(
        fixtures.join("node.json"),
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a","labels":{"zone":"z1"}}}"#,
    )
    .expect("write");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .arg("--fixtures")
        .arg(&fixtures)
        .args(["--listen", "127.0.0.1:0", "--poll-ms", "100", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn fake-apiserver");
    eventually(WAIT, "the kubeconfig", || async { kubeconfig.exists().then_some(()) }).await;
    let client = client_from(&kubeconfig).await;

    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store::<Pod>();
    let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default())).default_backoff();
    let task = tokio::spawn(stream.applied_objects().for_each(|_| async {}));
    tokio::time::timeout(WAIT, reader.wait_until_ready()).await.expect("ready in time").expect("ready");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    assert_eq!(nodes.list(&ListParams::default()).await.expect("nodes").items.len(), 1);

    // A raw watch from now on checks the event types on the wire.
    let rv = api.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("rv");
    let mut events = api.watch(&WatchParams::default(), &rv).await.expect("watch").boxed();

    let file = fixtures.join("pod.yaml");
    let web = ObjectRef::<Pod>::new("web-0").within("default");
    std::fs::write(&file, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-0\n  labels: {app: web}\n")
        .expect("write");
    eventually(WAIT, "web-0 added", || async { reader.get(&web).map(|_| ()) }).await;

    std::fs::write(&file, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-0\n  labels: {app: v2}\n").expect("write");
    eventually(WAIT, "web-0 modified", || async {
        (reader.get(&web)?.metadata.labels.as_ref()?.get("app")? == "v2").then_some(())
    })
    .await;

    std::fs::remove_file(&file).expect("remove");
    eventually(WAIT, "web-0 deleted", || async { reader.get(&web).is_none().then_some(()) }).await;

    let mut types = Vec::new();
    while types.len() < 3 {
        let event = tokio::time::timeout(WAIT, events.try_next()).await.expect("in time").expect("event");
        match event.expect("stream open") {
            WatchEvent::Added(_) => types.push("ADDED"),
            WatchEvent::Modified(_) => types.push("MODIFIED"),
            WatchEvent::Deleted(_) => types.push("DELETED"),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);
    task.abort();
    child.kill().await.expect("kill");
}
