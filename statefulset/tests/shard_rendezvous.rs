//! Sharding properties: every target is scraped by exactly one replica, and going from N to N+1
//! replicas moves about 1/(N+1) of the targets, all of them to the new replica.

use std::collections::BTreeMap;
use std::sync::Arc;

use lgtm_scrape::{ScrapeOptions, TargetGroup};
use lgtm_statefulset::shard::{keep_owned, owner, Shard};
use proptest::prelude::*;

proptest! {
    #[test]
    fn every_target_has_exactly_one_owner(ids in proptest::collection::vec(any::<u64>(), 1..300), replicas in 1u32..12) {
        for id in ids {
            let owners: Vec<u32> = (0..replicas).filter(|i| Shard::new(*i, replicas).owns(id)).collect();
            prop_assert_eq!(owners, vec![owner(id, replicas)]);
        }
    }

    #[test]
    fn scaling_up_moves_about_one_in_n_plus_one_and_only_to_the_new_replica(seed in any::<u64>(), n in 1u32..10) {
        let ids: Vec<u64> = (0..20_000u64).map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed)).collect();
        let mut moved = 0usize;
        for id in &ids {
            let (before, after) = (owner(*id, n), owner(*id, n + 1));
            if before != after {
                prop_assert_eq!(after, n, "a moved target goes to the new replica");
                moved += 1;
            }
        }
        let fraction = moved as f64 / ids.len() as f64;
        let expected = 1.0 / f64::from(n + 1);
        prop_assert!((fraction - expected).abs() < 0.25 * expected, "moved {fraction}, expected about {expected}");
    }
}

fn groups(n: usize) -> Vec<TargetGroup> {
    let options = Arc::new(ScrapeOptions { job: "web".into(), ..Default::default() });
    let other = Arc::new(ScrapeOptions { job: "web-again".into(), ..Default::default() });
    let targets: Vec<BTreeMap<String, String>> = (0..n)
        .map(|i| BTreeMap::from([("__address__".to_string(), format!("10.0.{}.{}:8080", i / 250, i % 250))]))
        .collect();
    vec![
        TargetGroup { source: "a".into(), targets: targets.clone(), labels: BTreeMap::new(), options },
        // The same addresses under another job are other targets (full identity, not the URL).
        TargetGroup { source: "b".into(), targets, labels: BTreeMap::new(), options: other },
    ]
}

fn shares(replicas: u32) -> Vec<Vec<(String, String)>> {
    (0..replicas)
        .map(|i| {
            let sharded = keep_owned(groups(1000), Shard::new(i, replicas));
            assert_eq!(sharded.total, 2000);
            sharded
                .groups
                .iter()
                .flat_map(|g| g.targets.iter().map(|t| (g.options.job.clone(), t["__address__"].clone())))
                .collect()
        })
        .collect()
}

#[test]
fn replicas_share_target_groups_disjointly_and_completely() {
    for replicas in [1u32, 2, 3, 5] {
        let shares = shares(replicas);
        let mut all: Vec<(String, String)> = shares.iter().flatten().cloned().collect();
        let before = all.len();
        all.sort();
        all.dedup();
        assert_eq!(before, all.len(), "no target scraped twice with {replicas} replicas");
        assert_eq!(all.len(), 2000, "every target scraped with {replicas} replicas");
        for share in &shares {
            // Balanced within a loose bound.
            let ideal = 2000.0 / f64::from(replicas);
            assert!((share.len() as f64 - ideal).abs() < 0.2 * ideal + 10.0, "{} of {ideal}", share.len());
        }
    }
}

#[test]
fn scaling_three_to_four_replicas_moves_a_quarter_of_the_targets() {
    let owner_of = |shares: &[Vec<(String, String)>]| -> BTreeMap<(String, String), usize> {
        shares.iter().enumerate().flat_map(|(i, s)| s.iter().map(move |t| (t.clone(), i))).collect()
    };
    let (three, four) = (owner_of(&shares(3)), owner_of(&shares(4)));
    let moved = three.iter().filter(|(t, i)| four[*t] != **i).count();
    let fraction = moved as f64 / three.len() as f64;
    assert!((fraction - 0.25).abs() < 0.05, "moved {fraction}");
}
