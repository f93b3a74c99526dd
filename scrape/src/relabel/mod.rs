//! Prometheus relabeling: `relabel_configs` (targets) and `metric_relabel_configs` (series).
//!
//! A [`Relabeler`] is compiled once from [`lgtm_config::RelabelConfig`]s (Prometheus defaults:
//! separator `;`, regex `(.*)`, replacement `$1`, action `replace`; the action name is
//! case-insensitive) and applied to a [`LabelSet`] in place. Regexes are fully anchored
//! (`^(?s:regex)$`). Replacements and replace's `target_label` expand `$1`, `${1}`, `$name`,
//! `${name}` and `$$`, as Go's `Regexp.Expand` does (`$1a` names the group `1a`).
//!
//! Differences from Prometheus worth knowing: regexes use Rust's `regex` syntax (RE2-like, but
//! `\w`, `\d` and `\s` are Unicode-aware), and label names follow the classic
//! `[a-zA-Z_][a-zA-Z0-9_]*` rule (no UTF-8 names).

mod compile;
mod rule;
#[cfg(test)]
mod tests;

pub use compile::RelabelError;
pub use rule::{Action, Rule};

use std::sync::Arc;

use lgtm_config::RelabelConfig;

use crate::labels::LabelSet;

/// A compiled list of relabeling rules, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Relabeler {
    rules: Arc<[Rule]>,
}

impl Relabeler {
    /// Compiles the rules in order; the error names the rule's index and the bad field.
    pub fn compile(configs: &[RelabelConfig]) -> Result<Relabeler, RelabelError> {
        let rules = configs.iter().enumerate().map(|(i, c)| Rule::compile(c, i)).collect::<Result<Vec<_>, _>>()?;
        Ok(Relabeler { rules: rules.into() })
    }

    /// A handle on the rules that does not keep them alive: [`Relabeler::upgrade`] gets them
    /// back while a `Relabeler` still holds them.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<[Rule]> {
        Arc::downgrade(&self.rules)
    }

    pub(crate) fn upgrade(rules: &std::sync::Weak<[Rule]>) -> Option<Relabeler> {
        rules.upgrade().map(|rules| Relabeler { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Applies every rule in order. Returns `false` when a rule drops the label set (its
    /// content is then unspecified).
    pub fn process(&self, labels: &mut LabelSet) -> bool {
        self.rules.iter().all(|rule| rule.apply(labels))
    }
}
