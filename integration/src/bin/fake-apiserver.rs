//! `fake-apiserver --fixtures DIR --listen ADDR [--kubeconfig PATH]`: serves the objects of the
//! fixture files in DIR as a Kubernetes API server would (LIST, WATCH, discovery, writes), turns
//! files added, changed or removed in DIR into watch events, and writes a kubeconfig for
//! `KUBECONFIG` once it listens (its appearance means the server is ready).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lgtm_integration::fake_apiserver::{FakeApiServer, Options};

#[derive(Debug, Parser)]
#[command(about = "A fake Kubernetes API server serving the objects of a fixture directory")]
struct Args {
    /// Directory of YAML or JSON object files, re-read every --poll-ms.
    #[arg(long)]
    fixtures: PathBuf,
    /// Address to listen on; port 0 picks a free one (printed, and in the kubeconfig).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the kubeconfig pointing at this server.
    #[arg(long, default_value = "fake-apiserver.kubeconfig")]
    kubeconfig: PathBuf,
    /// How often to re-read the fixture directory, in milliseconds.
    #[arg(long, default_value_t = 200)]
    poll_ms: u64,
    /// How often watches that allow bookmarks get one, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    bookmark_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = Options { bookmark_interval: Duration::from_millis(args.bookmark_ms), ..Options::default() };
    let mut server =
        FakeApiServer::start_on(args.listen, options).await.with_context(|| format!("listening on {}", args.listen))?;
    server
        .watch_fixtures(&args.fixtures, Duration::from_millis(args.poll_ms))
        .await
        .with_context(|| format!("loading fixtures from {}", args.fixtures.display()))?;
    server
        .write_kubeconfig(&args.kubeconfig)
        .with_context(|| format!("writing the kubeconfig {}", args.kubeconfig.display()))?;
    println!("fake-apiserver listening on {}", server.url());
    println!("KUBECONFIG={}", args.kubeconfig.display());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    server.stop().await;
    Ok(())
}
