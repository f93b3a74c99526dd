//! `rotel-agent` (PyPI package `rotel`, a Rust OTLP collector whose binary ships inside the wheel):
//! a second, independent OTLP receiver. It logs every span it receives (`--debug-log traces`), which
//! the tests read back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

pub struct Rotel {
    child: Child,
    pub grpc_port: u16,
    log: PathBuf,
    _dir: TempDir,
}

/// The binary inside the installed wheel, if any.
pub fn rotel_binary() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import rotel, os; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.is_file().then_some(p)
}

impl Rotel {
    pub async fn start() -> Option<Rotel> {
        let bin = rotel_binary()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("rotel.log");
        let grpc_port = crate::free_port();
        let http_port = crate::free_port();
        let out = std::fs::File::create(&log).expect("create rotel log");
        let child = Command::new(bin)
            .args(["start", "--exporter", "blackhole", "--debug-log", "traces", "--debug-log-verbosity", "detailed"])
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{http_port}"))
            .stdout(Stdio::from(out.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn rotel-agent");
        let r = Rotel { child, grpc_port, log, _dir: dir };
        crate::eventually(Duration::from_secs(20), "rotel-agent listening", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", grpc_port)).await.ok().map(|_| ())
        })
        .await;
        Some(r)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// What rotel printed so far (its debug log of received spans).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
