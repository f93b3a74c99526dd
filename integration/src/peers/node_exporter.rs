//! The real `node_exporter` (Debian package `prometheus-node-exporter`) on a loopback port: a
//! real scrape target.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct NodeExporter {
    child: Child,
    pub port: u16,
}

impl NodeExporter {
    /// Starts it with `collectors` only (e.g. `["cpu", "meminfo", "loadavg"]`), or `None` if it is
    /// not installed.
    pub async fn start(collectors: &[&str]) -> Option<NodeExporter> {
        let bin = super::which("prometheus-node-exporter").or_else(|| super::which("node_exporter"))?;
        let port = crate::free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}")).arg("--collector.disable-defaults");
        for c in collectors {
            cmd.arg(format!("--collector.{c}"));
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn node_exporter");
        let n = NodeExporter { child, port };
        crate::eventually(Duration::from_secs(20), "node_exporter listening", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
        Some(n)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
