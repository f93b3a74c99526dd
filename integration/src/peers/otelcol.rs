//! The OpenTelemetry Collector built by `scripts/build-otelcol.sh` (see
//! `integration/peers/otelcol`): started with a config of the caller's, its output in a log file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// The `processors` section every bench gives the Collector, as the PoC runs it: memory_limiter,
/// then batch (each pipeline lists both).
pub const PROCESSORS: &str =
    "processors:\n  memory_limiter:\n    check_interval: 1s\n    limit_mib: 512\n  batch: {}\n";

/// `service.telemetry`: warnings only, its own metrics off (nothing else listens on its ports).
pub const TELEMETRY: &str = "  telemetry:\n    logs:\n      level: warn\n    metrics:\n      level: none\n";

/// Writes `config` to `dir/otelcol.yaml` and starts `bin` on it with two Go threads (the
/// machine's cores), stdout and stderr into `dir/otelcol.log`, whose path is returned.
pub fn spawn(bin: &Path, dir: &Path, config: &str) -> anyhow::Result<(Child, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let config_path = dir.join("otelcol.yaml");
    std::fs::write(&config_path, config)?;
    let log = dir.join("otelcol.log");
    let out = std::fs::File::create(&log)?;
    let child = Command::new(bin)
        .arg(format!("--config={}", config_path.display()))
        .env("GOMAXPROCS", "2")
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok((child, log))
}
