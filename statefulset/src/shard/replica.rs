//! A StatefulSet pod's name is `<statefulset>-<ordinal>`: the ordinal is the replica index.

/// The parts of a StatefulSet pod name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOrdinal {
    pub statefulset: String,
    pub ordinal: u32,
}

/// `lgtm-agent-cluster-2` -> (`lgtm-agent-cluster`, 2); `None` for a name without an ordinal
/// suffix (not a StatefulSet pod).
pub fn parse_pod_name(pod_name: &str) -> Option<PodOrdinal> {
    let (prefix, suffix) = pod_name.rsplit_once('-')?;
    if prefix.is_empty() || suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `web-01` is not a name the StatefulSet controller makes.
    if suffix.len() > 1 && suffix.starts_with('0') {
        return None;
    }
    Some(PodOrdinal { statefulset: prefix.to_string(), ordinal: suffix.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinal_suffix_is_the_replica_index() {
        let p = parse_pod_name("lgtm-agent-cluster-12").unwrap();
        assert_eq!((p.statefulset.as_str(), p.ordinal), ("lgtm-agent-cluster", 12));
        assert_eq!(parse_pod_name("agent-0").unwrap().ordinal, 0);
        for bad in ["", "agent", "agent-", "-1", "agent-x1", "agent-01", "agent-99999999999"] {
            assert_eq!(parse_pod_name(bad), None, "{bad}");
        }
    }
}
