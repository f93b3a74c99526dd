//! A label set as the scrape path uses it: sorted by name, names unique, no empty values.
//!
//! Setting a label to the empty string removes it, as in Prometheus (a label with an empty value
//! is the same as no label).
//!
//! [`PackedLabels`] keeps a set that is only read now and then (a target's discovered labels,
//! for the targets page) compressed, the labels common to its group ([`CommonLabels`]) shared.

use std::fmt;
use std::sync::Arc;

use lgtm_pipeline::proto::Label;
use xxhash_rust::xxh3::Xxh3;

/// Sorted, unique, non-empty labels. Also the builder relabeling works on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelSet(Vec<Label>);

impl LabelSet {
    pub fn new() -> LabelSet {
        LabelSet(Vec::new())
    }

    /// Builds a set from pairs in any order; a later pair wins over an earlier one with the same
    /// name, and empty values are left out.
    pub fn from_pairs<N: AsRef<str>, V: Into<String>>(pairs: impl IntoIterator<Item = (N, V)>) -> LabelSet {
        let mut set = LabelSet::new();
        for (n, v) in pairs {
            set.set(n.as_ref(), v);
        }
        set
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|l| l.name.as_str().cmp(name))
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).ok().map(|i| self.0[i].value.as_str())
    }

    /// The value of `name`, or `""` when it is not set (Prometheus's view of a missing label).
    pub fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if value.is_empty() {
            self.remove(name);
            return;
        }
        match self.position(name) {
            Ok(i) => self.0[i].value = value,
            Err(i) => self.0.insert(i, Label { name: name.to_string(), value }),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.position(name).ok().map(|i| self.0.remove(i).value)
    }

    /// Keeps the labels for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Label) -> bool) {
        self.0.retain(|l| keep(l));
    }

    /// Frees the room of removed labels, for a set kept long after it lost most of its labels
    /// (a target's labels, once the `__meta_*` ones are gone).
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }

    /// Heap bytes the set asks for: its vector's and each string's buffer (the allocator's
    /// per-allocation overhead, about 16 bytes each, comes on top).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<Label>()
            + self.iter().map(|l| l.name.capacity() + l.value.capacity()).sum::<usize>()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    /// A 64-bit identity of the set (xxh3 over names and values), for staleness tracking.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Xxh3::new();
        for l in &self.0 {
            h.update(l.name.as_bytes());
            h.update(&[0xff]);
            h.update(l.value.as_bytes());
            h.update(&[0xff]);
        }
        h.digest()
    }
}

impl<'a> IntoIterator for &'a LabelSet {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `{a="1", b="x\"y"}`, as Prometheus prints label sets.
impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

/// A [`LabelSet`] kept for reading rarely, in snappy-compressed bytes: each label as its
/// name's length (varint), name, value's length (varint) and value.
///
/// Every discovered Kubernetes target keeps its ~45 `__meta_kubernetes_*` labels for the
/// targets page. As a `LabelSet` (with the defaults `populate` adds) they are about 100
/// allocations and 6 KiB of heap per target; the prefixes repeat, so packed they are about
/// 1 KiB in one allocation (measured in `tests/memory.rs`). Most of them are the same in every
/// target of a group (the namespace, the Service's and the EndpointSlice's labels, the job):
/// packed with [`CommonLabels::pack`], a target keeps only the others, and shares the packed
/// common ones with the rest of its group.
#[derive(Clone)]
pub struct PackedLabels {
    /// The labels of this set alone.
    own: Box<[u8]>,
    /// Labels of its group ([`CommonLabels`]), none of them also in `own`.
    shared: Option<Arc<[u8]>>,
}

impl PackedLabels {
    /// Packs `labels` on their own; [`PackedLabels::unpack`] gives them back.
    pub fn pack(labels: &LabelSet) -> PackedLabels {
        PackedLabels { own: compress(labels.iter()).into_boxed_slice(), shared: None }
    }

    /// The labels again, as they were packed.
    pub fn unpack(&self) -> LabelSet {
        let own = decompress(&self.own);
        let Some(shared) = &self.shared else {
            // Written from a `LabelSet`: still sorted, unique and non-empty.
            return LabelSet(own);
        };
        // Both sorted, names unique within each and (by `CommonLabels::pack`) between them.
        let shared = decompress(shared);
        let mut labels = Vec::with_capacity(own.len() + shared.len());
        let (mut own, mut shared) = (own.into_iter().peekable(), shared.into_iter().peekable());
        loop {
            let next = match (own.peek(), shared.peek()) {
                (Some(a), Some(b)) if b.name < a.name => shared.next(),
                (Some(_), _) => own.next(),
                (None, _) => shared.next(),
            };
            match next {
                Some(label) => labels.push(label),
                None => break,
            }
        }
        LabelSet(labels)
    }

    /// The bytes this set holds on its own (one heap allocation of this size), without the
    /// ones it shares with its group.
    pub fn packed_len(&self) -> usize {
        self.own.len()
    }

    /// The bytes of the labels it shares with its group (held once by the group).
    pub fn shared_len(&self) -> usize {
        self.shared.as_ref().map_or(0, |s| s.len())
    }
}

impl fmt::Debug for PackedLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackedLabels({}, {} bytes", self.unpack(), self.own.len())?;
        if let Some(shared) = &self.shared {
            write!(f, " + {} shared", shared.len())?;
        }
        f.write_str(")")
    }
}

/// The labels that every set of a group has with the same value, packed once for the group:
/// [`CommonLabels::pack`] packs a set of the group without them and shares them.
#[derive(Debug, Default)]
pub struct CommonLabels {
    set: LabelSet,
    /// `set` packed; `None` when there is nothing worth sharing.
    packed: Option<Arc<[u8]>>,
}

impl CommonLabels {
    /// The labels (name and value) in every one of `sets`. Nothing is shared for fewer than
    /// two sets. Reads the sets one at a time: a group's sets need not all be built at once.
    pub fn of(sets: impl IntoIterator<Item = LabelSet>) -> CommonLabels {
        let mut sets = sets.into_iter();
        let (Some(mut set), Some(second)) = (sets.next(), sets.next()) else {
            return CommonLabels::default();
        };
        for other in std::iter::once(second).chain(sets) {
            set.retain(|l| other.get(&l.name) == Some(l.value.as_str()));
            if set.is_empty() {
                return CommonLabels::default();
            }
        }
        set.shrink_to_fit();
        let packed = Some(compress(set.iter()).into());
        CommonLabels { set, packed }
    }

    /// Packs `labels`, a set of the group: the common labels shared, the others its own. A set
    /// without all of the common labels is packed whole, on its own.
    pub fn pack(&self, labels: &LabelSet) -> PackedLabels {
        let Some(shared) = &self.packed else { return PackedLabels::pack(labels) };
        let common = |l: &&Label| self.set.get(&l.name) == Some(l.value.as_str());
        if labels.iter().filter(common).count() != self.set.len() {
            return PackedLabels::pack(labels);
        }
        let own = compress(labels.iter().filter(|l| !common(l)));
        PackedLabels { own: own.into_boxed_slice(), shared: Some(shared.clone()) }
    }

    /// The labels shared.
    pub fn labels(&self) -> &LabelSet {
        &self.set
    }
}

/// `labels` packed: see [`PackedLabels`].
fn compress<'a>(labels: impl Iterator<Item = &'a Label> + Clone) -> Vec<u8> {
    let mut raw = Vec::with_capacity(labels.clone().map(|l| l.name.len() + l.value.len() + 4).sum());
    for l in labels {
        for s in [&l.name, &l.value] {
            prost::encoding::encode_varint(s.len() as u64, &mut raw);
            raw.extend_from_slice(s.as_bytes());
        }
    }
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compresses any input below 4 GiB, and a label set is far below")
}

/// What [`compress`] packed.
fn decompress(packed: &[u8]) -> Vec<Label> {
    const CORRUPT: &str = "PackedLabels holds only what pack wrote";
    let raw = snap::raw::Decoder::new().decompress_vec(packed).expect(CORRUPT);
    let mut rest = raw.as_slice();
    let mut string = || -> Option<String> {
        if rest.is_empty() {
            return None;
        }
        let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
        let (s, tail) = rest.split_at_checked(len)?;
        rest = tail;
        String::from_utf8(s.to_vec()).ok()
    };
    let mut labels = Vec::new();
    while let Some(name) = string() {
        let value = string().expect(CORRUPT);
        labels.push(Label { name, value });
    }
    labels
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn set_keeps_names_sorted_and_unique_and_empty_values_remove() {
        let mut s = LabelSet::from_pairs([("b", "2"), ("a", "1"), ("c", "3"), ("a", "x")]);
        assert_eq!(s.to_string(), r#"{a="x", b="2", c="3"}"#);
        s.set("b", "");
        assert_eq!(s.to_string(), r#"{a="x", c="3"}"#);
        assert_eq!(s.value("b"), "");
        assert!(LabelSet::from_pairs([("a", "")]).is_empty());
    }

    #[test]
    fn fingerprint_separates_names_from_values() {
        let a = LabelSet::from_pairs([("ab", "c")]);
        let b = LabelSet::from_pairs([("a", "bc")]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }

    #[test]
    fn packed_labels_debug_shows_the_labels() {
        let packed = PackedLabels::pack(&LabelSet::from_pairs([("a", "1"), ("b", "x\"y")]));
        assert!(format!("{packed:?}").starts_with(r#"PackedLabels({a="1", b="x\"y"}, "#), "{packed:?}");
        assert_eq!(PackedLabels::pack(&LabelSet::new()).unpack(), LabelSet::new());
    }

    fn label_sets() -> impl Strategy<Value = LabelSet> {
        // Long values exercise multi-byte length varints; any Unicode in values.
        let value = prop_oneof![".{0,20}", "[a-z]{100,300}"];
        proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,40}", value), 0..60).prop_map(LabelSet::from_pairs)
    }

    proptest! {
        #[test]
        fn pack_then_unpack_gives_the_same_set(labels in label_sets()) {
            let packed = PackedLabels::pack(&labels);
            prop_assert_eq!(packed.unpack(), labels);
        }

        /// Sets that share part of their labels, as a group's targets do, and differ in others.
        #[test]
        fn a_group_packed_with_its_common_labels_unpacks_to_each_set(
            base in label_sets(),
            changes in proptest::collection::vec(
                proptest::collection::vec(("[a-z_]{1,6}", "[a-c]{0,2}"), 0..8), 0..6),
        ) {
            let sets: Vec<LabelSet> = changes
                .iter()
                .map(|c| {
                    let mut set = base.clone();
                    for (name, value) in c {
                        set.set(name, value.as_str());
                    }
                    set
                })
                .collect();
            let common = CommonLabels::of(sets.iter().cloned());
            for set in &sets {
                let packed = common.pack(set);
                prop_assert_eq!(packed.unpack(), set.clone());
                if packed.shared_len() > 0 {
                    prop_assert!(common.labels().iter().all(|l| set.get(&l.name) == Some(l.value.as_str())));
                }
            }
            // A set the common labels are not all part of is packed whole.
            let stranger = LabelSet::from_pairs([("zz", "1")]);
            let packed = common.pack(&stranger);
            prop_assert_eq!(packed.unpack(), stranger);
            prop_assert_eq!(packed.shared_len(), 0);
        }
    }

    #[test]
    fn common_labels_are_shared_and_not_kept_twice() {
        let a = LabelSet::from_pairs([("job", "j"), ("ns", "shop"), ("pod", "a-1"), ("zone", "b")]);
        let b = LabelSet::from_pairs([("job", "j"), ("ns", "shop"), ("pod", "a-2"), ("zone", "c")]);
        let common = CommonLabels::of([a.clone(), b.clone()]);
        assert_eq!(common.labels().to_string(), r#"{job="j", ns="shop"}"#);
        let (pa, pb) = (common.pack(&a), common.pack(&b));
        assert!(Arc::ptr_eq(pa.shared.as_ref().unwrap(), pb.shared.as_ref().unwrap()));
        assert_eq!(decompress(&pa.own), vec![Label::new("pod", "a-1"), Label::new("zone", "b")]);
        assert_eq!((pa.unpack(), pb.unpack()), (a.clone(), b));
        assert!(format!("{pa:?}").contains(" shared)"), "{pa:?}");
        // One set: nothing to share.
        assert_eq!(CommonLabels::of([a.clone()]).pack(&a).shared_len(), 0);
    }
}
