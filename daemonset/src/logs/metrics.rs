//! The tailer's self-metrics (`lgtm_agent_logs_*`), registered once on the pipeline's registry.

use std::sync::LazyLock;

use lgtm_pipeline::metrics::{counter_vec, int_gauge_vec};
use prometheus::{IntCounter, IntGauge};

pub struct LogsMetrics {
    /// Physical lines read from files (a CRI `P` + `F` pair counts 2).
    pub lines_read: IntCounter,
    pub bytes_read: IntCounter,
    /// Files whose descriptor is open (active and rotated-being-drained).
    pub files_open: IntGauge,
    /// Logical lines longer than `max_line_size`, shipped in parts.
    pub lines_split: IntCounter,
    /// Malformed lines (shipped raw), by format.
    pub parse_errors_cri: IntCounter,
    pub parse_errors_docker: IntCounter,
    /// Lines with invalid UTF-8, shipped with U+FFFD in place of the bad bytes.
    pub invalid_utf8: IntCounter,
    /// Files the periodic rescan found that inotify did not report (new, rotated or deleted).
    pub rescan_recoveries: IntCounter,
    /// Checkpoint files that could not be read or held invalid values (files start over).
    pub checkpoints_unreadable: IntCounter,
    /// Failed writes of the checkpoint file.
    pub checkpoint_write_errors: IntCounter,
    /// Log files not opened, by reason (`symlink_outside_allowed`, `symlinked_directory`,
    /// `not_regular_file`, `open_failed`).
    pub files_refused: prometheus::IntCounterVec,
    /// Panics of the reading thread (the agent exits after one).
    pub tailer_panics: IntCounter,
    /// Sum over tracked files of size minus acknowledged offset.
    pub lag_bytes: IntGauge,
    /// Files followed, open or closed to stay under `logs.max_open_files`.
    pub files_tracked: IntGauge,
    /// Idle files closed to stay under `logs.max_open_files`, and closed files reopened.
    pub files_closed_idle: IntCounter,
    pub files_reopened: IntCounter,
    /// Partial lines shipped without their closing piece, by reason.
    pub partial_flushes_timeout: IntCounter,
    pub partial_flushes_shutdown: IntCounter,
    /// Files opened whose directory names are not UTF-8 (labels converted lossily).
    pub non_utf8_paths: IntCounter,
    /// Truncations seen, by whether a rotated copy was found.
    pub truncations_copy_found: IntCounter,
    pub truncations_no_copy: IntCounter,
    /// Bytes read from rotated copies after a truncation.
    pub copy_bytes_read: IntCounter,
    /// Bytes known lost, by reason.
    pub bytes_lost_truncated: IntCounter,
    pub bytes_lost_gone: IntCounter,
}

pub fn logs() -> &'static LogsMetrics {
    static M: LazyLock<LogsMetrics> = LazyLock::new(|| {
        let parse_errors = counter_vec(
            "lgtm_agent_logs_parse_errors_total",
            "Malformed log lines (shipped raw), by format.",
            &["format"],
        );
        let partial = counter_vec(
            "lgtm_agent_logs_partial_lines_flushed_total",
            "Partial log lines (CRI P) shipped without their closing piece: after logs.partial_flush_timeout, or at shutdown.",
            &["reason"],
        );
        let truncations = counter_vec(
            "lgtm_agent_logs_truncations_total",
            "Log files truncated below what was read (copytruncate), by whether a rotated copy was found and its unread tail read.",
            &["copy"],
        );
        let lost = counter_vec(
            "lgtm_agent_logs_bytes_lost_total",
            "Log bytes known to be lost: truncated without a copy (at least), or a closed file deleted before its new data was read.",
            &["reason"],
        );
        let one = |name: &str, help: &str| counter_vec(name, help, &[]).with_label_values(&[] as &[&str]);
        LogsMetrics {
            files_tracked: int_gauge_vec(
                "lgtm_agent_logs_files_tracked",
                "Log files followed, with an open descriptor or closed to stay under logs.max_open_files.",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            files_closed_idle: one(
                "lgtm_agent_logs_files_closed_idle_total",
                "Idle log files closed to stay under logs.max_open_files.",
            ),
            files_reopened: one(
                "lgtm_agent_logs_files_reopened_total",
                "Closed log files reopened by path and identity because they changed.",
            ),
            partial_flushes_timeout: partial.with_label_values(&["timeout"]),
            partial_flushes_shutdown: partial.with_label_values(&["shutdown"]),
            non_utf8_paths: one(
                "lgtm_agent_logs_non_utf8_paths_total",
                "Log files opened whose directory names are not UTF-8 (labels converted lossily).",
            ),
            truncations_copy_found: truncations.with_label_values(&["found"]),
            truncations_no_copy: truncations.with_label_values(&["none"]),
            copy_bytes_read: one(
                "lgtm_agent_logs_copytruncate_bytes_read_total",
                "Bytes read from the rotated copy of a truncated log file (written after the last read, before the truncation).",
            ),
            bytes_lost_truncated: lost.with_label_values(&["truncated"]),
            bytes_lost_gone: lost.with_label_values(&["gone_while_closed"]),
            lines_read: counter_vec("lgtm_agent_logs_lines_read_total", "Physical lines read from log files.", &[])
                .with_label_values(&[] as &[&str]),
            bytes_read: counter_vec("lgtm_agent_logs_bytes_read_total", "Bytes read from log files.", &[])
                .with_label_values(&[] as &[&str]),
            files_open: int_gauge_vec("lgtm_agent_logs_files_open", "Log files held open.", &[])
                .with_label_values(&[] as &[&str]),
            lines_split: counter_vec(
                "lgtm_agent_logs_lines_split_total",
                "Log lines longer than max_line_size, shipped in parts.",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            parse_errors_cri: parse_errors.with_label_values(&["cri"]),
            parse_errors_docker: parse_errors.with_label_values(&["docker"]),
            invalid_utf8: counter_vec(
                "lgtm_agent_logs_invalid_utf8_total",
                "Log lines with invalid UTF-8 (bad bytes replaced with U+FFFD).",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            rescan_recoveries: counter_vec(
                "lgtm_agent_logs_rescan_recoveries_total",
                "Log files the periodic rescan found changed without an inotify event.",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            checkpoints_unreadable: counter_vec(
                "lgtm_agent_logs_checkpoints_unreadable_total",
                "Log checkpoint files unreadable or holding invalid values (ignored: files are read from their start).",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            checkpoint_write_errors: counter_vec(
                "lgtm_agent_logs_checkpoint_write_errors_total",
                "Failed writes of the log checkpoint file.",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            files_refused: counter_vec(
                "lgtm_agent_logs_files_refused_total",
                "Log files not opened, by reason (symlink_outside_allowed, symlinked_directory, not_regular_file, open_failed).",
                &["reason"],
            ),
            tailer_panics: counter_vec(
                "lgtm_agent_logs_tailer_panics_total",
                "Panics of the log reading thread (the agent exits with code 1 after one).",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            lag_bytes: int_gauge_vec(
                "lgtm_agent_logs_lag_bytes",
                "Bytes written to log files and not yet acknowledged by Loki.",
                &[],
            )
            .with_label_values(&[] as &[&str]),
        }
    });
    &M
}
