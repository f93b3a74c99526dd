//! Daemonset mode: spans routed by trace ID to the cluster-mode replicas.
