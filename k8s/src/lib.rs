//! The Kubernetes side of the agent, one home for what every mode reads from the API server:
//!
//! - [`client`]: the one client constructor (kubeconfig, else the in-cluster service account);
//! - [`backoff`]: the retry policy and logging of every watch ([`backoff::retry_watch`]);
//! - [`reflect`]: a watch into a `kube` reflector store (monitors, referenced Secrets);
//! - [`objects`] and [`store`]: compact Pods, Services, EndpointSlices and the cluster-state kinds
//!   (ReplicaSets, Deployments, DaemonSets, StatefulSets, Jobs, Nodes, Namespaces) deserialized
//!   straight from the API server's JSON, with interned strings, in stores of their own.
//!
//! The mode crates keep what is specific to a mode: the node's pod index for log labels
//! (`lgtm-daemonset`), monitor discovery, events and cluster state (`lgtm-statefulset`).

pub mod backoff;
pub mod client;
pub mod objects;
pub mod reflect;
pub mod store;
