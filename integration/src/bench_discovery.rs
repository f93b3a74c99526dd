//! The `discovery` bench workload (being built; see issue notes).

/// Options of the `discovery` workload.
#[derive(Debug, Clone, clap::Args)]
pub struct DiscoveryBench {
    /// The lgtm-agent binary to run; default: the workspace's release binary (built if missing).
    #[arg(long)]
    pub agent_bin: Option<std::path::PathBuf>,
}

/// Runs the workload and prints its figures.
pub async fn run(_b: DiscoveryBench) -> anyhow::Result<()> {
    anyhow::bail!("the discovery workload is not built yet")
}
