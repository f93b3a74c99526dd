//! The release `lgtm-agent` as a child process of the bench: started on a config file, read
//! through its admin server, stopped with SIGTERM, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
    admin: u16,
    client: reqwest::Client,
}

impl Agent {
    /// Writes `yaml` to `dir/agent.yaml`, starts `bin run` on it and waits for `/readyz`.
    pub async fn start(bin: &Path, dir: &Path, yaml: &str, admin: u16) -> anyhow::Result<Agent> {
        let config = dir.join("agent.yaml");
        std::fs::write(&config, yaml).with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join("agent.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let mut agent = Agent { child: Some(child), log, admin, client };
        let url = format!("http://127.0.0.1:{admin}/readyz");
        let started = Instant::now();
        loop {
            if matches!(agent.client.get(&url).send().await, Ok(r) if r.status().is_success()) {
                return Ok(agent);
            }
            agent.check_running()?;
            if started.elapsed() > Duration::from_secs(30) {
                bail!("lgtm-agent not ready after 30 s; log: {}", agent.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// An error if the agent has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => bail!("lgtm-agent exited ({status}); log: {}", self.log.display()),
            Some(Err(e)) => bail!("waiting for lgtm-agent: {e}"),
            None => bail!("lgtm-agent was stopped"),
        }
    }

    /// The `/metrics` text; empty if it cannot be read.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin);
        match self.client.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; the exit status (`None` if it had to be killed).
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sum of the samples of `name` in a `/metrics` text whose labels contain every one of `filters`.
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sum_takes_only_the_named_family_and_matching_labels() {
        let text = "# HELP x\nlgtm_agent_queue_bytes{exporter=\"mimir\",medium=\"disk\"} 10\n\
                    lgtm_agent_queue_bytes{exporter=\"mimir\",medium=\"memory\"} 5\n\
                    lgtm_agent_queue_bytes_other{exporter=\"mimir\"} 7\nlgtm_agent_queue_bytes 1\n";
        assert_eq!(metric_sum(text, "lgtm_agent_queue_bytes", &["exporter=\"mimir\"", "medium=\"disk\""]), 10.0);
        assert_eq!(metric_sum(text, "lgtm_agent_queue_bytes", &[]), 16.0);
    }
}
