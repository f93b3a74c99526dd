//! Real peers started as child processes on loopback ports, stopped when dropped.

pub mod node_exporter;
pub mod otelcol;
pub mod prometheus;
pub mod rotel;

/// Finds an executable on `PATH`.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}
