//! The `lgtm-agent` binary as a child process: built once per test run, started with a config
//! written to a temporary directory, stopped with SIGTERM (or killed with SIGKILL) by the tests.
//! The bench command runs the release build instead (`release_agent_binary`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};

/// Builds `lgtm-agent` (debug profile) once and returns its path.
pub fn agent_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_agent(false).unwrap_or_else(|e| panic!("{e:#}"))).clone()
}

/// Builds `lgtm-agent` with the release profile (a no-op when it is up to date) and returns its
/// path: what the bench command measures.
pub fn release_agent_binary() -> anyhow::Result<PathBuf> {
    eprintln!("building lgtm-agent (release)...");
    build_agent(true)
}

/// `cargo build -p lgtm-agent` in this workspace, `--release` or not; the binary's path.
fn build_agent(release: bool) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("workspace root")?;
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args(["build", "-q", "-p", "lgtm-agent", "--bin", "lgtm-agent"]).current_dir(root);
    if release {
        cargo.arg("--release");
    }
    let profile = if release { "release" } else { "debug" };
    let status = cargo.status().context("running cargo build")?;
    if !status.success() {
        bail!("building lgtm-agent ({profile}) failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    Ok(target.join(profile).join("lgtm-agent"))
}

pub struct AgentProcess {
    child: Option<Child>,
    pub config_path: PathBuf,
    pub admin_port: u16,
    pub log_path: PathBuf,
}

impl AgentProcess {
    /// Writes `config_yaml` to `dir/agent.yaml` and starts `lgtm-agent run` on it; waits for
    /// `/readyz`. The config must set `admin.listen` to `127.0.0.1:<admin_port>`.
    pub async fn start(dir: &Path, config_yaml: &str, admin_port: u16) -> AgentProcess {
        AgentProcess::start_with_env(dir, config_yaml, admin_port, &[("RUST_LOG", "info")]).await
    }

    /// [`AgentProcess::start`] with these environment variables set for the agent.
    pub async fn start_with_env(dir: &Path, config_yaml: &str, admin_port: u16, env: &[(&str, &str)]) -> AgentProcess {
        AgentProcess::launch(&agent_binary(), dir, config_yaml, admin_port, env)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Writes `config_yaml` to `dir/agent.yaml`, starts `bin run` on it with `env` (output to a
    /// log file in `dir`) and waits up to 30 s for `/readyz`. The bench workloads' way to run a
    /// given (release) binary: errors instead of panics, the log quoted when it exits early.
    pub async fn launch(
        bin: &Path,
        dir: &Path,
        config_yaml: &str,
        admin_port: u16,
        env: &[(&str, &str)],
    ) -> anyhow::Result<AgentProcess> {
        let config_path = dir.join("agent.yaml");
        std::fs::write(&config_path, config_yaml).context("writing the agent config")?;
        let log_path = dir.join(format!(
            "agent-{}.log",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        let log = std::fs::File::create(&log_path).context("creating the agent log")?;
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config_path)
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut p = AgentProcess { child: Some(child), config_path, admin_port, log_path };
        let url = format!("http://127.0.0.1:{admin_port}/readyz");
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        loop {
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(p);
            }
            if let Some(Ok(Some(status))) = p.child.as_mut().map(Child::try_wait) {
                bail!("lgtm-agent exited ({status}) before it was ready; log:\n{}", p.log());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("lgtm-agent not ready after 30 s; log:\n{}", p.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The agent's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap_or_default()
    }

    /// Sum of a self-metric's samples whose label text contains every `filters` item.
    pub async fn metric_sum(&self, name: &str, filters: &[&str]) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| filters.iter().all(|f| l.contains(f)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM and wait for the exit status (at most `timeout`, then SIGKILL and panic).
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let start = std::time::Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return status;
                }
            }
            if start.elapsed() > timeout {
                self.kill();
                panic!("lgtm-agent did not exit within {timeout:?} of SIGTERM; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; its status, or `None` if it
    /// is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL (a crash), and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
