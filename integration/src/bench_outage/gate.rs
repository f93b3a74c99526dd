//! A loopback TCP gate in front of a backend: open, it relays connections; closed, its listener
//! is gone (connections refused) and every relayed connection is cut.
//!
//! It stands between the agent and the receiving Prometheus because a stopped and restarted
//! Prometheus would come back with an empty TSDB (each start has its own data directory), and
//! the bench must count, after the outage, what arrived before it too. To the agent a closed gate
//! is what a stopped backend is: connection refused.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct Gate {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    relay: Option<JoinHandle<()>>,
}

impl Gate {
    /// Opens a gate on a free loopback port relaying to `upstream`.
    pub async fn open(upstream: SocketAddr) -> anyhow::Result<Gate> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.context("binding the gate")?;
        let addr = listener.local_addr()?;
        Ok(Gate { addr, upstream, relay: Some(tokio::spawn(relay(listener, upstream))) })
    }

    /// Closes the listener and cuts every connection.
    pub async fn close(&mut self) {
        if let Some(task) = self.relay.take() {
            // Dropping the relay's future drops the listener and the set of connections, which
            // aborts them; awaiting the aborted task waits until it is dropped.
            task.abort();
            let _ = task.await;
        }
    }

    /// Opens again on the same port.
    pub async fn reopen(&mut self) -> anyhow::Result<()> {
        if self.relay.is_none() {
            let listener = TcpListener::bind(self.addr)
                .await
                .with_context(|| format!("binding the gate again on {}", self.addr))?;
            self.relay = Some(tokio::spawn(relay(listener, self.upstream)));
        }
        Ok(())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(task) = self.relay.take() {
            task.abort();
        }
    }
}

async fn relay(listener: TcpListener, upstream: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut client, _)) = accepted else { continue };
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_closed_gate_refuses_and_a_reopened_one_relays_on_the_same_port() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(&buf).await;
                    }
                });
            }
        });
        let mut gate = Gate::open(upstream).await.unwrap();
        let roundtrip = |addr| async move {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        assert_eq!(&roundtrip(gate.addr).await.unwrap(), b"ping");
        gate.close().await;
        let refused = TcpStream::connect(gate.addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        gate.reopen().await.unwrap();
        assert_eq!(&roundtrip(gate.addr).await.unwrap(), b"ping");
    }
}
