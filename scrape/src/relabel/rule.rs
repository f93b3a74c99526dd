//! One compiled rule and what each action does to a label set.

use std::borrow::Cow;

use md5::{Digest, Md5};
use regex::Regex;

use crate::labels::LabelSet;
use crate::parser::is_valid_label_name;

pub use lgtm_config::relabel::Action;

/// A compiled relabeling rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(super) source_labels: Vec<String>,
    pub(super) separator: String,
    pub(super) target_label: String,
    /// Anchored: `^(?s:...)$`.
    pub(super) regex: Regex,
    pub(super) modulus: u64,
    pub(super) replacement: String,
    pub(super) action: Action,
}

impl Rule {
    pub fn action(&self) -> Action {
        self.action
    }

    /// The source label values joined by the separator; a missing label is the empty string.
    fn joined_source<'a>(&self, labels: &'a LabelSet) -> Cow<'a, str> {
        match self.source_labels.as_slice() {
            [] => Cow::Borrowed(""),
            [one] => Cow::Borrowed(labels.value(one)),
            many => {
                let mut out = String::new();
                for (i, name) in many.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.separator);
                    }
                    out.push_str(labels.value(name));
                }
                Cow::Owned(out)
            }
        }
    }

    /// Applies the rule; `false` means the label set is dropped.
    pub fn apply(&self, labels: &mut LabelSet) -> bool {
        let value = self.joined_source(labels);
        match self.action {
            Action::Keep => return self.regex.is_match(&value),
            Action::Drop => return !self.regex.is_match(&value),
            Action::KeepEqual => return labels.value(&self.target_label) == value,
            Action::DropEqual => return labels.value(&self.target_label) != value,
            Action::Replace => {
                let Some(caps) = self.regex.captures(&value) else { return true };
                let mut target = String::new();
                caps.expand(&self.target_label, &mut target);
                if !is_valid_label_name(&target) {
                    return true;
                }
                let mut result = String::new();
                caps.expand(&self.replacement, &mut result);
                labels.set(&target, result);
            }
            Action::Lowercase => {
                let lower = value.to_lowercase();
                labels.set(&self.target_label, lower);
            }
            Action::Uppercase => {
                let upper = value.to_uppercase();
                labels.set(&self.target_label, upper);
            }
            Action::HashMod => {
                let digest = Md5::digest(value.as_bytes());
                let mut tail = [0u8; 8];
                tail.copy_from_slice(&digest[8..]);
                let bucket = u64::from_be_bytes(tail) % self.modulus;
                labels.set(&self.target_label, bucket.to_string());
            }
            Action::LabelMap => {
                // Matches are taken from the labels as they were before this rule.
                let before = labels.clone();
                for l in &before {
                    if let Some(caps) = self.regex.captures(&l.name) {
                        let mut name = String::new();
                        caps.expand(&self.replacement, &mut name);
                        if !name.is_empty() {
                            labels.set(&name, l.value.clone());
                        }
                    }
                }
            }
            Action::LabelDrop => labels.retain(|l| !self.regex.is_match(&l.name)),
            Action::LabelKeep => labels.retain(|l| self.regex.is_match(&l.name)),
        }
        true
    }
}
