//! [`ShardCache`]: what [`super::keep_owned`] found for each group at the last rebuild, so that a
//! rebuild relabels only the groups whose options or targets changed. Discovery rebuilds every
//! group on every change of the cluster; relabeling thousands of unchanged targets again was
//! the largest part of applying a one-monitor change (measured with the `discovery` bench).

use std::collections::HashMap;

use lgtm_scrape::target::TargetError;
use lgtm_scrape::TargetGroup;

use super::{Owners, Shard};

/// One group's result, valid while the group's fingerprint and the shard are the same. The
/// owned targets are kept as positions in the group's target list (the same list while the
/// fingerprint is the same), not as a second copy of their labels.
struct Cached {
    fingerprint: u64,
    shard: Shard,
    owners: Owners,
}

/// The last [`super::keep_owned`] result of each group, by `source`.
#[derive(Default)]
pub struct ShardCache {
    groups: HashMap<String, Cached>,
    /// The groups seen since the last [`ShardCache::finish`].
    next: HashMap<String, Cached>,
}

/// What [`ShardCache::keep_owned_one`] made of one group.
pub struct OwnedGroup {
    /// The group with only this replica's targets.
    pub group: TargetGroup,
    /// Targets after relabeling, over all replicas.
    pub total: usize,
    /// Of those, this replica's.
    pub here: usize,
    pub errors: Vec<TargetError>,
}

impl ShardCache {
    /// [`super::keep_owned`] of one group, reusing the last result for it if it is unchanged. Call
    /// [`ShardCache::finish`] once every group of a rebuild went through.
    pub fn keep_owned_one(&mut self, mut group: TargetGroup, shard: Shard) -> OwnedGroup {
        let fp = group.fingerprint();
        let hit = self.groups.remove(&group.source).filter(|c| c.fingerprint == fp && c.shard == shard);
        let cached = match hit {
            Some(c) => c,
            None => Cached { fingerprint: fp, shard, owners: Owners::of(&group, shard) },
        };
        let owners = &cached.owners;
        owners.keep_in(&mut group);
        let (total, here, errors) = (owners.total, owners.here(), owners.errors.clone());
        self.next.insert(group.source.clone(), cached);
        OwnedGroup { group, total, here, errors }
    }

    /// Forgets the groups not seen since the last call.
    pub fn finish(&mut self) {
        self.groups = std::mem::take(&mut self.next);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use lgtm_config::RelabelConfig;
    use lgtm_scrape::ScrapeOptions;

    use super::super::{keep_owned, Sharded};
    use super::*;

    /// [`keep_owned`] through the cache: every group through [`ShardCache::keep_owned_one`].
    fn cached(cache: &mut ShardCache, groups: Vec<TargetGroup>, shard: Shard) -> Sharded {
        let mut out = Sharded::default();
        for group in groups {
            let one = cache.keep_owned_one(group, shard);
            out.total += one.total;
            out.owned += one.here;
            out.per_group.push((one.total, one.here));
            out.errors.extend(one.errors);
            out.groups.push(one.group);
        }
        cache.finish();
        out
    }

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
                let cached = cached(&mut cache, groups.clone(), shard);
                let fresh = keep_owned(groups.clone(), shard);
                assert_eq!(summary(&cached), summary(&fresh), "round {i} of {shard:?}");
                let targets = |s: &Sharded| s.groups.iter().map(|g| g.targets.clone()).collect::<Vec<_>>();
                assert_eq!(targets(&cached), targets(&fresh), "round {i} of {shard:?}");
            }
        }
    }
}
