//! Sharding of scrape targets across the cluster-mode replicas.
//!
//! Every replica sees every target (each runs the same discovery) and keeps the ones it owns.
//! Ownership is rendezvous (highest random weight) hashing of the target's full identity (its
//! final labels and scrape URL, [`lgtm_scrape::Target::identity`]) with each replica index: a
//! target belongs to the replica with the highest score. So the shares are disjoint, their union
//! is every target, and going from N to N+1 replicas moves only the targets the new replica now
//! wins, about 1/(N+1) of them. The OTel target allocator hashes the URL alone; two targets with
//! one URL and different labels (two jobs scraping one endpoint) land on different replicas here.

mod cache;
mod replica;

pub use cache::{OwnedGroup, ShardCache};
pub use replica::{parse_pod_name, PodOrdinal};

use std::sync::Arc;

use lgtm_scrape::relabel::Relabeler;
use lgtm_scrape::target::{populate_with, TargetError};
use lgtm_scrape::PackedLabels;
use lgtm_scrape::TargetGroup;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// This replica's place among the replicas that share the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub replicas: u32,
}

impl Shard {
    /// One replica scraping everything.
    pub const ALL: Shard = Shard { index: 0, replicas: 1 };

    /// `replicas` 0 counts as 1; an index outside the replicas owns nothing (a pod of a
    /// StatefulSet being scaled down).
    pub fn new(index: u32, replicas: u32) -> Shard {
        Shard { index, replicas: replicas.max(1) }
    }

    /// Whether this replica scrapes the target of `identity`.
    pub fn owns(&self, identity: u64) -> bool {
        owner(identity, self.replicas) == self.index
    }
}

/// The replica (in `0..replicas`) that scrapes the target of `identity`.
pub fn owner(identity: u64, replicas: u32) -> u32 {
    (0..replicas.max(1)).max_by_key(|r| (score(identity, *r), std::cmp::Reverse(*r))).unwrap_or(0)
}

fn score(identity: u64, replica: u32) -> u64 {
    xxh3_64_with_seed(&identity.to_le_bytes(), u64::from(replica).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// What [`keep_owned`] found: the groups reduced to this replica's targets, how many targets
/// there were in all, and the targets that cannot be scraped (reported by every replica).
#[derive(Debug, Default)]
pub struct Sharded {
    pub groups: Vec<TargetGroup>,
    /// Targets after relabeling, over all replicas (dropped ones not counted).
    pub total: usize,
    pub owned: usize,
    /// Per group (in order): (targets over all replicas, targets here).
    pub per_group: Vec<(usize, usize)>,
    pub errors: Vec<TargetError>,
}

/// Relabels each target as the scrape manager will, to learn its identity, and keeps in each
/// group only the targets this replica owns. A group whose `relabel_configs` do not compile is
/// kept whole, so that the manager reports it.
pub fn keep_owned(groups: Vec<TargetGroup>, shard: Shard) -> Sharded {
    let mut out = Sharded::default();
    for mut group in groups {
        let owners = Owners::of(&group, shard);
        owners.keep_in(&mut group);
        out.total += owners.total;
        out.owned += owners.here();
        out.per_group.push((owners.total, owners.here()));
        out.errors.extend(owners.errors);
        out.groups.push(group);
    }
    out
}

/// Which targets of one group this replica owns.
pub(crate) struct Owners {
    /// Positions in the group's target list, ascending; `None`: the group's relabelings do not
    /// compile, it is kept whole (for the manager to report) and counts none.
    pub owned: Option<Vec<usize>>,
    /// Targets after relabeling, over all replicas.
    pub total: usize,
    pub errors: Vec<TargetError>,
}

impl Owners {
    pub fn of(group: &TargetGroup, shard: Shard) -> Owners {
        let Ok(relabeler) = Relabeler::compile(&group.options.relabel_configs) else {
            return Owners { owned: None, total: 0, errors: Vec::new() };
        };
        // Compiled once for the group, not once per target.
        let metric_relabel = Relabeler::compile(&group.options.metric_relabel_configs);
        let source: Arc<str> = group.source.as_str().into();
        let mut out = Owners { owned: Some(Vec::new()), total: 0, errors: Vec::new() };
        let owned = out.owned.as_mut().expect("set above");
        for (i, discovered) in group.targets.iter().enumerate() {
            let metric_relabel = || metric_relabel.clone();
            match populate_with(
                discovered,
                &group.labels,
                &group.options,
                &relabeler,
                metric_relabel,
                PackedLabels::pack,
                &source,
            ) {
                Ok(Some(target)) => {
                    out.total += 1;
                    if shard.owns(target.identity()) {
                        owned.push(i);
                    }
                }
                Ok(None) => {}
                Err(e) => out.errors.push(e),
            }
        }
        out
    }

    /// Removes from `group` (the group these owners are of) the targets other replicas own.
    pub fn keep_in(&self, group: &mut TargetGroup) {
        let Some(owned) = &self.owned else { return };
        let mut i = 0;
        group.targets.retain(|_| {
            i += 1;
            owned.binary_search(&(i - 1)).is_ok()
        });
    }

    /// Targets counted as this replica's.
    pub fn here(&self) -> usize {
        self.owned.as_ref().map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_replica_owns_everything() {
        for id in 0..1000u64 {
            assert!(Shard::ALL.owns(id.wrapping_mul(0x1234_5678_9abc_def1)));
        }
    }

    #[test]
    fn an_index_beyond_the_replicas_owns_nothing() {
        let gone = Shard::new(3, 3);
        assert!((0..1000u64).all(|id| !gone.owns(id)));
    }

    proptest::proptest! {
        /// Every target is owned by exactly one replica: no target scraped twice, none by nobody.
        #[test]
        fn exactly_one_replica_owns_each_target(ids in proptest::collection::vec(proptest::num::u64::ANY, 1..200), replicas in 1u32..12) {
            for id in ids {
                let owners = (0..replicas).filter(|r| Shard::new(*r, replicas).owns(id)).count();
                proptest::prop_assert_eq!(owners, 1, "target {:#x} with {} replicas", id, replicas);
            }
        }

        /// Going from N to N+1 replicas moves targets only to the new replica, about 1/(N+1) of
        /// them (within five standard deviations of the binomial count over 4,000 targets).
        #[test]
        fn scaling_up_moves_a_fair_share_only_to_the_new_replica(seed in proptest::num::u64::ANY, replicas in 1u32..10) {
            const TARGETS: u64 = 4000;
            let mut moved = 0u64;
            for i in 0..TARGETS {
                let id = xxh3_64_with_seed(&i.to_le_bytes(), seed);
                let (before, after) = (owner(id, replicas), owner(id, replicas + 1));
                if before != after {
                    proptest::prop_assert_eq!(after, replicas, "a target moved between old replicas");
                    moved += 1;
                }
            }
            let p = 1.0 / f64::from(replicas + 1);
            let mean = TARGETS as f64 * p;
            let sd = (TARGETS as f64 * p * (1.0 - p)).sqrt();
            proptest::prop_assert!((moved as f64 - mean).abs() <= 5.0 * sd, "moved {} of {}, expected {:.0} +- {:.0}", moved, TARGETS, mean, 5.0 * sd);
        }
    }
}
