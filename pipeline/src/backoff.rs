//! The retry delay of every sender here that waits out a failing peer: the exporters (Mimir,
//! Loki, Tempo, and their set-up), and the trace route to the cluster replicas. The agent's one
//! backoff ([`lgtm_backoff::Backoff`]), built with [`Backoff::new`]: capped exponential growth
//! with full jitter (the n-th delay uniform in `[0, min(max, initial * 2^n)]`, so `max_backoff`
//! stays the longest wait, as the configuration says, and senders that failed together do not
//! retry together), and the peer's own hint (`Retry-After`) honoured up to the cap. The
//! Kubernetes watches use the same type with their own jitter and reset rule
//! (`lgtm_k8s::backoff`).

pub use lgtm_backoff::Backoff;
