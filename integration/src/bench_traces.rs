//! The `traces` bench workload (being built; see issue notes).

/// Options of the `traces` workload.
#[derive(Debug, Clone, clap::Args)]
pub struct TracesBench {
    /// The lgtm-agent binary to run; default: the workspace's release binary (built if missing).
    #[arg(long)]
    pub agent_bin: Option<std::path::PathBuf>,
}

/// Runs the workload and prints its figures.
pub async fn run(_b: TracesBench) -> anyhow::Result<()> {
    anyhow::bail!("the traces workload is not built yet")
}
