//! Loki's validation limits (`limits_config`), checked before sending: an entry or a stream that
//! Loki would refuse is dropped here and counted by Loki's own reason, so that it never rides in a
//! request with healthy entries (Loki would store those and answer 400, or 204 when the refused
//! stream came first: either way the agent's counts would be guesswork).
//!
//! The checks are Loki's (`pkg/distributor/validator.go`), in its order: a stream is refused
//! whole for too many label names (`service_name` not counted), a label name or value too long
//! (bytes); an entry for a timestamp older than `reject_old_samples_max_age` or newer than
//! `creation_grace_period` from now, then for a line longer than `max_line_size` (bytes), which
//! `max_line_size_truncate` cuts instead (at a UTF-8 character boundary). `0` turns a check off.
//! A selector that does not read is left to Loki.

use std::time::Duration;

use lgtm_config::LokiLimits;

use super::loki_wire;

/// What Loki would do with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Stored with its line cut to `max_line_size` (`max_line_size_truncate`).
    Truncate(usize),
    /// Refused, with Loki's reason (the label of `loki_discarded_samples_total`).
    Refuse(&'static str),
}

#[derive(Debug, Clone)]
pub struct Limits {
    max_line: usize,
    truncate: bool,
    max_names: usize,
    max_name_len: usize,
    max_value_len: usize,
    max_age: Option<Duration>,
    grace: Option<Duration>,
}

impl Limits {
    pub fn new(cfg: &LokiLimits) -> Limits {
        let age = cfg.reject_old_samples_max_age.get();
        let grace = cfg.creation_grace_period.get();
        Limits {
            max_line: usize::try_from(cfg.max_line_size.bytes()).unwrap_or(usize::MAX),
            truncate: cfg.max_line_size_truncate,
            max_names: cfg.max_label_names_per_series,
            max_name_len: cfg.max_label_name_length,
            max_value_len: cfg.max_label_value_length,
            max_age: (cfg.reject_old_samples && !age.is_zero()).then_some(age),
            grace: (!grace.is_zero()).then_some(grace),
        }
    }

    /// No check at all.
    #[cfg(test)]
    pub fn off() -> Limits {
        Limits {
            max_line: 0,
            truncate: false,
            max_names: 0,
            max_name_len: 0,
            max_value_len: 0,
            max_age: None,
            grace: None,
        }
    }

    fn checks_labels(&self) -> bool {
        self.max_names > 0 || self.max_name_len > 0 || self.max_value_len > 0
    }

    fn checks_entries(&self) -> bool {
        self.max_line > 0 || self.max_age.is_some() || self.grace.is_some()
    }

    /// Why Loki would refuse a stream with this selector, if it would.
    pub fn stream(&self, selector: &[u8]) -> Option<&'static str> {
        if !self.checks_labels() {
            return None;
        }
        let labels = parse_selector(selector)?;
        let names = labels.iter().filter(|(name, _)| *name != b"service_name").count();
        if self.max_names > 0 && names > self.max_names {
            return Some("max_label_names_per_series");
        }
        for (name, value_len) in labels {
            if self.max_name_len > 0 && name.len() > self.max_name_len {
                return Some("label_name_too_long");
            }
            if self.max_value_len > 0 && value_len > self.max_value_len {
                return Some("label_value_too_long");
            }
        }
        None
    }

    /// What Loki would do with one encoded `entries` field at `now_ns` (Unix nanoseconds).
    pub fn entry(&self, field: &[u8], now_ns: i64) -> Verdict {
        if !self.checks_entries() {
            return Verdict::Pass;
        }
        let Some((ts, len)) = loki_wire::entry_time_and_len(field) else { return Verdict::Pass };
        if self.max_age.is_some_and(|age| ts < now_ns.saturating_sub(nanos(age))) {
            return Verdict::Refuse("greater_than_max_sample_age");
        }
        if self.grace.is_some_and(|grace| ts > now_ns.saturating_add(nanos(grace))) {
            return Verdict::Refuse("too_far_in_future");
        }
        if self.max_line > 0 && len > self.max_line {
            return if self.truncate { Verdict::Truncate(self.max_line) } else { Verdict::Refuse("line_too_long") };
        }
        Verdict::Pass
    }

    /// Whether Loki would take every stream and entry of an encoded `PushRequest` as it is: the
    /// common case, in which the request goes out untouched.
    pub fn all_pass(&self, request: &[u8], now_ns: i64) -> bool {
        let (labels, entries) = (self.checks_labels(), self.checks_entries());
        if !labels && !entries {
            return true;
        }
        loki_wire::walk(
            request,
            |selector| !labels || self.stream(selector).is_none(),
            |entry| !entries || self.entry(entry, now_ns) == Verdict::Pass,
        )
    }

    /// How `max_line_size` is described in messages.
    pub fn describe(&self, reason: &str) -> String {
        let what = match reason {
            "line_too_long" => format!("max_line_size {} bytes", self.max_line),
            "max_label_names_per_series" => format!("max_label_names_per_series {}", self.max_names),
            "label_name_too_long" => format!("max_label_name_length {}", self.max_name_len),
            "label_value_too_long" => format!("max_label_value_length {}", self.max_value_len),
            "greater_than_max_sample_age" => {
                format!("reject_old_samples_max_age {:?}", self.max_age.unwrap_or_default())
            }
            "too_far_in_future" => format!("creation_grace_period {:?}", self.grace.unwrap_or_default()),
            _ => String::new(),
        };
        format!("Loki would refuse it ({reason}: exporters.loki.limits.{what})")
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The label names of a selector `{a="x", b="y"}` with the length of each value once unescaped;
/// `None` if it does not read as one.
fn parse_selector(s: &[u8]) -> Option<Vec<(&[u8], usize)>> {
    let s = s.trim_ascii();
    let mut rest = s.strip_prefix(b"{")?.strip_suffix(b"}")?;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_ascii_start();
        if rest.is_empty() {
            return Some(out);
        }
        let eq = rest.iter().position(|&b| b == b'=')?;
        let name = rest[..eq].trim_ascii();
        rest = rest[eq + 1..].trim_ascii_start().strip_prefix(b"\"")?;
        // The value, up to the closing quote that is not escaped.
        let (mut i, mut len) = (0, 0);
        loop {
            match rest.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                _ => i += 1,
            }
            len += 1;
        }
        out.push((name, len));
        rest = rest[i + 1..].trim_ascii_start();
        if let Some(r) = rest.strip_prefix(b",") {
            rest = r;
        } else if !rest.is_empty() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};
    use prost::Message;

    const NOW: i64 = 1_800_000_000_000_000_000;
    const SEC: i64 = 1_000_000_000;

    fn limits() -> Limits {
        Limits::new(&LokiLimits {
            max_line_size: lgtm_config::ByteSize::from_bytes(10),
            max_label_names_per_series: 3,
            max_label_name_length: 12,
            max_label_value_length: 5,
            ..LokiLimits::default()
        })
    }

    fn entry(ts: i64, line: &str) -> Vec<u8> {
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: "{a=\"1\"}".into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(ts)),
                    line: line.into(),
                    structured_metadata: vec![],
                }],
                hash: 0,
            }],
        };
        let bytes = bytes::Bytes::from(req.encode_to_vec());
        loki_wire::streams(&bytes).unwrap()[0].entries[0].to_vec()
    }

    #[test]
    fn defaults_are_lokis() {
        let l = Limits::new(&LokiLimits::default());
        assert_eq!(l.max_line, 256_000);
        assert!(!l.truncate);
        assert_eq!((l.max_names, l.max_name_len, l.max_value_len), (15, 1024, 2048));
        assert_eq!(l.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(l.grace, Some(Duration::from_secs(600)));
    }

    #[test]
    fn streams_are_refused_for_their_labels_as_loki_does() {
        let l = limits();
        assert_eq!(l.stream(br#"{a="1", b="2", c="3"}"#), None);
        assert_eq!(l.stream(br#"{a="1", b="2", c="3", service_name="x"}"#), None, "service_name is not counted");
        assert_eq!(l.stream(br#"{a="1", b="2", c="3", d="4"}"#), Some("max_label_names_per_series"));
        assert_eq!(l.stream(br#"{abcdefghijklm="1"}"#), Some("label_name_too_long"));
        assert_eq!(l.stream(br#"{abcdefghijkl="12345"}"#), None, "at the limits");
        assert_eq!(l.stream(br#"{a="123456"}"#), Some("label_value_too_long"));
        assert_eq!(l.stream(br#"{a="1\"34\\"}"#), None, "escapes count as the character they stand for");
        assert_eq!(l.stream(br#"{a="1\"345\\"}"#), Some("label_value_too_long"));
        assert_eq!(l.stream(b"not a selector"), None, "left to Loki");
        assert_eq!(Limits::off().stream(br#"{a="1", b="2", c="3", d="4", e="xxxxxxxxxxxxxxxx"}"#), None);
    }

    #[test]
    fn entries_are_refused_for_age_future_and_size_in_lokis_order() {
        let l = limits();
        let week = 7 * 86_400 * SEC;
        assert_eq!(l.entry(&entry(NOW, "0123456789"), NOW), Verdict::Pass);
        assert_eq!(l.entry(&entry(NOW - week + SEC, "x"), NOW), Verdict::Pass);
        assert_eq!(l.entry(&entry(NOW - week - SEC, "x"), NOW), Verdict::Refuse("greater_than_max_sample_age"));
        assert_eq!(l.entry(&entry(NOW + 599 * SEC, "x"), NOW), Verdict::Pass);
        assert_eq!(l.entry(&entry(NOW + 601 * SEC, "x"), NOW), Verdict::Refuse("too_far_in_future"));
        assert_eq!(l.entry(&entry(NOW, "0123456789a"), NOW), Verdict::Refuse("line_too_long"));
        assert_eq!(
            l.entry(&entry(NOW - week - SEC, "0123456789a"), NOW),
            Verdict::Refuse("greater_than_max_sample_age"),
            "age first, as Loki"
        );
        let cut = Limits { truncate: true, ..limits() };
        assert_eq!(cut.entry(&entry(NOW, "0123456789a"), NOW), Verdict::Truncate(10));
        let no_age = Limits::new(&LokiLimits { reject_old_samples: false, ..LokiLimits::default() });
        assert_eq!(no_age.entry(&entry(NOW - 100 * week, "x"), NOW), Verdict::Pass);
        let zeros = Limits::new(&LokiLimits {
            max_line_size: lgtm_config::ByteSize::from_bytes(0),
            reject_old_samples_max_age: lgtm_config::Duration::from_secs(0),
            creation_grace_period: lgtm_config::Duration::from_secs(0),
            ..LokiLimits::default()
        });
        assert_eq!(
            zeros.entry(&entry(NOW - 100 * week, &"x".repeat(1 << 20)), NOW),
            Verdict::Pass,
            "0 turns a check off"
        );
        assert_eq!(zeros.entry(&entry(NOW + 100 * week, "x"), NOW), Verdict::Pass);
    }

    #[test]
    fn all_pass_walks_the_whole_request() {
        let l = limits();
        let req = |labels: &str, lines: &[&str]| {
            PushRequest {
                streams: vec![StreamAdapter {
                    labels: labels.into(),
                    entries: lines
                        .iter()
                        .map(|line| EntryAdapter {
                            timestamp: Some(Timestamp::from_unix_nanos(NOW)),
                            line: line.to_string(),
                            structured_metadata: vec![],
                        })
                        .collect(),
                    hash: 0,
                }],
            }
            .encode_to_vec()
        };
        let mut two = req(r#"{a="1"}"#, &["ok", "fine"]);
        assert!(l.all_pass(&two, NOW));
        two.extend(req(r#"{a="2"}"#, &["ok", "this one is too long"]));
        assert!(!l.all_pass(&two, NOW));
        assert!(!l.all_pass(&req(r#"{a="123456"}"#, &["ok"]), NOW));
        assert!(Limits::off().all_pass(&two, NOW));
    }
}
