//! A label set as the scrape path uses it: sorted by name, names unique, no empty values.
//!
//! Setting a label to the empty string removes it, as in Prometheus (a label with an empty value
//! is the same as no label).
//!
//! [`PackedLabels`] keeps a set that is only read now and then (a target's discovered labels,
//! for the targets page) in one compressed allocation.

use std::fmt;

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

/// A [`LabelSet`] kept for reading rarely, in one snappy-compressed allocation: each label as
/// its name's length (varint), name, value's length (varint) and value.
///
/// Every discovered Kubernetes target keeps its ~45 `__meta_kubernetes_*` labels for the
/// targets page. As a `LabelSet` (with the defaults `populate` adds) they are about 100
/// allocations and 6 KiB of heap per target; the prefixes repeat, so packed they are about
/// 1 KiB in one allocation (measured in `tests/memory.rs`).
#[derive(Clone)]
pub struct PackedLabels(Box<[u8]>);

impl PackedLabels {
    /// Packs `labels`; [`PackedLabels::unpack`] gives them back.
    pub fn pack(labels: &LabelSet) -> PackedLabels {
        let mut raw = Vec::with_capacity(labels.iter().map(|l| l.name.len() + l.value.len() + 4).sum());
        for l in labels {
            for s in [&l.name, &l.value] {
                put_varint(&mut raw, s.len());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let packed = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .expect("snappy compresses any input below 4 GiB, and a label set is far below");
        PackedLabels(packed.into_boxed_slice())
    }

    /// The labels again, as [`PackedLabels::pack`] was given them.
    pub fn unpack(&self) -> LabelSet {
        const CORRUPT: &str = "PackedLabels holds only what pack wrote";
        let raw = snap::raw::Decoder::new().decompress_vec(&self.0).expect(CORRUPT);
        let mut rest = raw.as_slice();
        let mut string = || -> Option<String> {
            let len = take_varint(&mut rest)?;
            let (s, tail) = rest.split_at_checked(len)?;
            rest = tail;
            String::from_utf8(s.to_vec()).ok()
        };
        let mut labels = Vec::new();
        while let Some(name) = string() {
            let value = string().expect(CORRUPT);
            labels.push(Label { name, value });
        }
        // Written from a `LabelSet`: still sorted, unique and non-empty.
        LabelSet(labels)
    }

    /// The bytes held (one heap allocation of this size).
    pub fn packed_len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for PackedLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackedLabels({}, {} bytes)", self.unpack(), self.0.len())
    }
}

fn put_varint(buf: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        buf.push(n as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Reads a varint off the front of `buf`; `None` at the end of `buf` (or on a varint longer
/// than a `usize`).
fn take_varint(buf: &mut &[u8]) -> Option<usize> {
    let mut n = 0usize;
    for shift in (0..usize::BITS).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        n |= usize::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(n);
        }
    }
    None
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
    }
}
