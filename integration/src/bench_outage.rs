//! The `outage` bench workload (being built; see issue notes).

/// Options of the `outage` workload.
#[derive(Debug, Clone, clap::Args)]
pub struct OutageBench {
    /// The lgtm-agent binary to run; default: the workspace's release binary (built if missing).
    #[arg(long)]
    pub agent_bin: Option<std::path::PathBuf>,
}

/// Runs the workload and prints its figures.
pub async fn run(_b: OutageBench) -> anyhow::Result<()> {
    anyhow::bail!("the outage workload is not built yet")
}
