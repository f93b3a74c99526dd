//! The one way the agent builds its Kubernetes client: `kube::Config::infer`, i.e. `KUBECONFIG`
//! (or `~/.kube/config`) when present, else the in-cluster service account. The `kube` crate
//! reads `KUBECONFIG` itself; that is the one environment variable outside `config/` the agent
//! reads.

use kube::Client;

/// Why there is no client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no Kubernetes API configuration (in-cluster service account or KUBECONFIG): {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes API client: {0}")]
    Client(#[from] kube::Error),
}

/// A client for the cluster the agent runs in (or the one `KUBECONFIG` names).
pub async fn connect() -> Result<Client, ConnectError> {
    let config = kube::Config::infer().await?;
    Ok(Client::try_from(config)?)
}
