//! A label set as the scrape path uses it: sorted by name, names unique, no empty values.
//!
//! Setting a label to the empty string removes it, as in Prometheus (a label with an empty value
//! is the same as no label).

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

#[cfg(test)]
mod tests {
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
}
