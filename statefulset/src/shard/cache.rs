//! [`ShardCache`]: what [`keep_owned`] found for each group at the last rebuild, so that a
//! rebuild relabels only the groups whose options or targets changed. Discovery rebuilds every
//! group on every change of the cluster; relabeling thousands of unchanged targets again was
//! the largest part of applying a one-monitor change (measured with the `discovery` bench).

use std::collections::HashSet;
use std::collections::{BTreeMap, HashMap};

use lgtm_scrape::target::TargetError;
use lgtm_scrape::TargetGroup;

use super::{keep_owned, Shard, Sharded};

/// One group's result, valid while the group's fingerprint and the shard are the same. The
/// owned targets are kept as positions in the group's target list (the same list while the
/// fingerprint is the same), not as a second copy of their labels.
struct Cached {
    fingerprint: u64,
    shard: Shard,
    owned: Vec<usize>,
    /// Targets counted as this replica's: `owned.len()`, except for a group whose relabelings
    /// do not compile, which is kept whole (for the manager to report) and counts none.
    here: usize,
    total: usize,
    errors: Vec<TargetError>,
}

/// The last [`keep_owned`] result of each group, by `source`.
#[derive(Default)]
pub struct ShardCache {
    groups: HashMap<String, Cached>,
}

/// The positions in `all` of `kept`, a subsequence of it (what [`keep_owned`] keeps).
fn positions(all: &[BTreeMap<String, String>], kept: &[BTreeMap<String, String>]) -> Vec<usize> {
    let mut out = Vec::with_capacity(kept.len());
    let mut next = kept.iter().peekable();
    for (i, t) in all.iter().enumerate() {
        if next.peek().is_some_and(|k| *k == t) {
            out.push(i);
            next.next();
        }
    }
    out
}

impl ShardCache {
    /// [`keep_owned`], reusing the result of each group unchanged since the last call.
    pub fn keep_owned(&mut self, groups: Vec<TargetGroup>, shard: Shard) -> Sharded {
        let mut out = Sharded::default();
        let mut next: HashMap<String, Cached> = HashMap::with_capacity(groups.len());
        for mut group in groups {
            let fp = group.fingerprint();
            let hit = self.groups.remove(&group.source).filter(|c| c.fingerprint == fp && c.shard == shard);
            let cached = match hit {
                Some(c) => c,
                None => {
                    let one = keep_owned(vec![group.clone()], shard);
                    let here = one.per_group.first().map_or(0, |(_, here)| *here);
                    let kept = one.groups.into_iter().next().map(|g| g.targets).unwrap_or_default();
                    let owned = positions(&group.targets, &kept);
                    Cached { fingerprint: fp, shard, owned, here, total: one.total, errors: one.errors }
                }
            };
            out.total += cached.total;
            out.owned += cached.here;
            out.per_group.push((cached.total, cached.here));
            out.errors.extend(cached.errors.iter().cloned());
            let owned: HashSet<usize> = cached.owned.iter().copied().collect();
            let mut i = 0;
            group.targets.retain(|_| {
                i += 1;
                owned.contains(&(i - 1))
            });
            out.groups.push(group);
            next.insert(out.groups.last().map(|g| g.source.clone()).unwrap_or_default(), cached);
        }
        self.groups = next;
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lgtm_config::RelabelConfig;
    use lgtm_scrape::ScrapeOptions;

    use super::*;

    fn group(source: &str, ports: std::ops::Range<u16>, relabel_configs: Vec<RelabelConfig>) -> TargetGroup {
        TargetGroup {
            source: source.into(),
            targets: ports.map(|p| BTreeMap::from([("__address__".to_string(), format!("10.0.0.1:{p}"))])).collect(),
            labels: BTreeMap::new(),
            options: Arc::new(ScrapeOptions { job: source.into(), relabel_configs, ..ScrapeOptions::default() }),
        }
    }

    fn summary(s: &Sharded) -> (usize, usize, Vec<(usize, usize)>, Vec<usize>, usize) {
        (s.total, s.owned, s.per_group.clone(), s.groups.iter().map(|g| g.targets.len()).collect(), s.errors.len())
    }

    #[test]
    fn cached_results_equal_fresh_ones_through_changes() {
        let drop_odd = vec![RelabelConfig {
            source_labels: vec!["__address__".into()],
            regex: Some(".*[13579]".into()),
            action: Some("drop".into()),
            ..RelabelConfig::default()
        }];
        let bad = vec![RelabelConfig { target_label: Some("__address__".into()), ..RelabelConfig::default() }];
        // Does not compile: the group is kept whole for the manager to report, and counts nothing.
        let uncompilable = vec![RelabelConfig {
            source_labels: vec!["__address__".into()],
            regex: Some("([unclosed".into()),
            ..RelabelConfig::default()
        }];
        let rounds = [
            vec![group("a", 8000..8100, vec![]), group("b", 9000..9050, drop_odd.clone())],
            // Unchanged: served from the cache.
            vec![group("a", 8000..8100, vec![]), group("b", 9000..9050, drop_odd.clone())],
            // One group's targets and the other's relabelings change; a group appears.
            vec![
                group("a", 8000..8120, drop_odd.clone()),
                group("b", 9000..9050, vec![]),
                group("c", 1..3, bad),
                group("d", 1..4, uncompilable.clone()),
            ],
            // Unchanged, the uncompilable group served from the cache.
            vec![group("b", 9000..9050, vec![]), group("d", 1..4, uncompilable)],
            // A group goes.
            vec![group("b", 9000..9050, vec![])],
        ];
        let mut cache = ShardCache::default();
        for shard in [Shard::new(1, 3), Shard::new(0, 2)] {
            for (i, groups) in rounds.iter().enumerate() {
                let cached = cache.keep_owned(groups.clone(), shard);
                let fresh = keep_owned(groups.clone(), shard);
                assert_eq!(summary(&cached), summary(&fresh), "round {i} of {shard:?}");
                let targets = |s: &Sharded| s.groups.iter().map(|g| g.targets.clone()).collect::<Vec<_>>();
                assert_eq!(targets(&cached), targets(&fresh), "round {i} of {shard:?}");
            }
        }
    }
}
