//! From a config rule to a [`Rule`]: checked by the one relabel validator,
//! [`lgtm_config::RelabelConfig::check`] (the same `validate` runs), then built.

use lgtm_config::RelabelConfig;

use super::rule::Rule;

/// A rule that cannot be compiled: which rule, which field, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relabel rule {index}: {field}: {message}")]
pub struct RelabelError {
    /// Position of the rule in its list.
    pub index: usize,
    /// The YAML key at fault.
    pub field: &'static str,
    pub message: String,
}

impl Rule {
    /// Compiles `config`, the `index`-th rule of its list.
    pub fn compile(config: &RelabelConfig, index: usize) -> Result<Rule, RelabelError> {
        let c = config.check().map_err(|e| RelabelError { index, field: e.field, message: e.message })?;
        Ok(Rule {
            source_labels: c.source_labels,
            separator: c.separator,
            target_label: c.target_label,
            regex: c.regex,
            modulus: c.modulus,
            replacement: c.replacement,
            action: c.action,
        })
    }
}
