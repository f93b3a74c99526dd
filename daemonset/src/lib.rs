//! Node-mode (daemonset) sources: pod log tailer, kubelet/cAdvisor targets, host metrics.
//!
//! Not yet implemented (issues 9 and 10).
