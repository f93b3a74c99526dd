//! A fake Kubernetes API server speaking the real wire format (Kubernetes API JSON over plain
//! HTTP), for tests of anything that uses `kube`'s watchers and reflectors.
//!
//! It serves discovery, LIST (label and field selectors), WATCH (chunked JSON events after a
//! `resourceVersion`, BOOKMARKs, `410 Gone` once the change log no longer reaches back far
//! enough), GET, and the writes a leader election needs (POST, PUT with optimistic concurrency,
//! merge PATCH, DELETE) for any kind, core or custom. Objects come from the programmatic API
//! ([`FakeApiServer::apply`], [`FakeApiServer::delete`]) and from a fixture directory that is
//! polled for changes ([`FakeApiServer::watch_fixtures`]).
//!
//! It does not do authentication, admission, defaulting, validation beyond names, field
//! management, pagination (`limit` is ignored, no `continue`), `PartialObjectMetadata` responses,
//! protobuf, or conversion between versions of one kind.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use lgtm_integration::fake_apiserver::FakeApiServer;
//! let server = FakeApiServer::start().await?;
//! server.apply(serde_json::json!({
//!     "apiVersion": "v1", "kind": "Pod",
//!     "metadata": {"name": "web-0", "namespace": "shop"}, "spec": {"nodeName": "node-a"},
//! }))?;
//! let dir = tempfile::tempdir()?;
//! let kubeconfig = dir.path().join("kubeconfig");
//! server.write_kubeconfig(&kubeconfig)?; // then KUBECONFIG=<that path> for the agent
//! # Ok(()) }
//! ```

mod discovery;
pub mod events;
mod fixtures;
mod http;
mod resources;
mod selectors;
mod shared;
mod store;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use fixtures::{parse_objects, FixtureError};
pub use resources::{plural_of, ResourceType};
pub use selectors::{FieldSelector, LabelSelector, SelectorError};
pub use store::StoreError;

use fixtures::FixtureDir;
pub use shared::ApiCall;
use shared::Shared;

/// Tuning of a [`FakeApiServer`].
#[derive(Debug, Clone)]
pub struct Options {
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK (the real server: ~1 min).
    pub bookmark_interval: Duration,
    /// How many changes the log keeps; a watch from before the oldest one gets `410 Gone`.
    pub max_logged_changes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { bookmark_interval: Duration::from_secs(1), max_logged_changes: 10_000 }
    }
}

/// A running fake API server. Dropping it stops it.
#[derive(Debug)]
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    app: axum::Router,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    fixtures: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts on an ephemeral loopback port with default [`Options`].
    pub async fn start() -> std::io::Result<FakeApiServer> {
        FakeApiServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), Options::default()).await
    }

    pub async fn start_on(addr: SocketAddr, options: Options) -> std::io::Result<FakeApiServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options.max_logged_changes, options.bookmark_interval));
        let app = http::router(shared.clone());
        let (stop, server) = serve(listener, app.clone());
        Ok(FakeApiServer { addr, shared, app, stop: Some(stop), server: Some(server), fixtures: None })
    }

    /// Stops serving like [`FakeApiServer::stop`] (open watches end, then the port is closed and
    /// connections are refused), waits `down`, and serves again on the same port with the same
    /// objects, as a restarted API server with its etcd.
    pub async fn restart_after(&mut self, down: Duration) -> std::io::Result<()> {
        self.shared.shut_down();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        tokio::time::sleep(down).await;
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.shared.resume();
        let (stop, server) = serve(listener, self.app.clone());
        self.stop = Some(stop);
        self.server = Some(server);
        Ok(())
    }

    /// Serves `group` as if its CRDs were not installed (`hidden`): left out of discovery, every
    /// request under `/apis/<group>/` answered `404 NotFound`. `false` installs them again.
    pub fn set_group_hidden(&self, group: &str, hidden: bool) {
        self.shared.set_group_hidden(group, hidden);
    }

    /// Answers every request for `plural` of `group` (`""`: core) with `403 Forbidden`, as RBAC
    /// does for a resource the Role does not grant (`false` grants it again).
    pub fn set_forbidden(&self, group: &str, plural: &str, forbidden: bool) {
        self.shared.set_forbidden(group, plural, forbidden);
    }

    /// The path of every request so far (discovery included), in arrival order.
    pub fn request_paths(&self) -> Vec<String> {
        self.shared.paths()
    }

    /// Every request for a resource so far, with the verb RBAC checks for it (the audit log).
    pub fn calls(&self) -> Vec<ApiCall> {
        self.shared.calls()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the `server:` of the kubeconfig.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates or replaces an object given whole (`apiVersion`, `kind`, `metadata.name` required;
    /// a namespaced kind without `metadata.namespace` goes to `default`). Unchanged objects cause
    /// no event. Returns the object as stored, with its `resourceVersion`.
    pub fn apply(&self, object: Value) -> Result<Value, StoreError> {
        self.shared.write(|store| store.apply(object)).map(|o| (*o).clone())
    }

    /// Applies every object of a YAML text (several documents and `kind: List` allowed).
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, StoreError> {
        let objects = parse_objects(yaml, false).map_err(StoreError::Invalid)?;
        objects.into_iter().map(|o| self.apply(o)).collect()
    }

    /// Deletes an object; `namespace` is ignored for cluster-scoped kinds.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<Value, StoreError> {
        let probe = serde_json::json!({
            "apiVersion": api_version, "kind": kind, "metadata": {"namespace": namespace, "name": name},
        });
        self.shared
            .write(|store| {
                let (rt, namespace) = store.type_of(&probe)?;
                store.delete(&rt, &namespace, name)
            })
            .map(|o| (*o).clone())
    }

    /// The stored object, if any.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared.read(|store| {
            let rt = store.registry().by_kind(api_version, kind)?;
            let namespace = if rt.namespaced { namespace } else { "" };
            store.get(rt, namespace, name).ok().map(|o| (*o).clone())
        })
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.read(|store| store.resource_version())
    }

    /// Compacts the change log, as etcd compaction does: every open watch receives a `410 Gone`
    /// ERROR event and ends, and every watch from an older resourceVersion is refused the same
    /// way, so clients must relist. Returns the oldest resourceVersion a watch may start from.
    pub fn compact(&self) -> u64 {
        self.shared.write(|store| store.compact())
    }

    /// Mirrors `dir` into the server (see the `fixtures` module): loads it now, then re-reads it
    /// every `interval`, turning added, changed and removed files into watch events. Errors of
    /// files that do not parse are printed and the file's previous objects kept.
    pub async fn watch_fixtures(&mut self, dir: &Path, interval: Duration) -> Result<(), FixtureError> {
        let mut fixtures = FixtureDir::new(dir);
        if let Some(first) = fixtures.read().into_iter().chain(fixtures.apply(&self.shared)).next() {
            return Err(first);
        }
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if shared.is_shutting_down() {
                    return;
                }
                let read = tokio::task::spawn_blocking(move || {
                    let errors = fixtures.read();
                    (fixtures, errors)
                });
                let Ok((mut scanned, mut errors)) = read.await else {
                    eprintln!("fake-apiserver: the fixture reader panicked; fixtures are no longer watched");
                    return;
                };
                errors.extend(scanned.apply(&shared));
                for error in errors {
                    eprintln!("fake-apiserver: {error}");
                }
                fixtures = scanned;
            }
        });
        if let Some(previous) = self.fixtures.replace(task) {
            previous.abort();
        }
        Ok(())
    }

    /// A kubeconfig (context `fake`, namespace `default`, a token the server accepts and ignores)
    /// pointing at this server over plain HTTP.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
            self.url()
        )
    }

    /// Writes [`FakeApiServer::kubeconfig`] to `path` (through a temporary file and a rename, so a
    /// reader never sees half of it); point `KUBECONFIG` at it.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        std::fs::write(&partial, self.kubeconfig())?;
        std::fs::rename(&partial, path)
    }

    /// Stops serving: open watches end, then the listener closes.
    pub async fn stop(mut self) {
        self.shut_down();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    fn shut_down(&mut self) {
        self.shared.shut_down();
        if let Some(fixtures) = self.fixtures.take() {
            fixtures.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let addr = listener.local_addr().ok();
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            eprintln!("fake-apiserver on {addr:?}: {e}");
        }
    });
    (stop, server)
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}
