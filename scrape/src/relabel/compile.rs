//! From a config rule to a [`Rule`], with Prometheus's validation.

use lgtm_config::RelabelConfig;
use regex::Regex;

use super::rule::{Action, Rule};
use crate::parser::is_valid_label_name;

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

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

/// A `labelmap` replacement must expand to a label name: literal name characters and `$`
/// references.
fn is_label_name_template(s: &str) -> bool {
    static TEMPLATE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").expect("valid template regex")
    });
    TEMPLATE.is_match(s)
}

impl Rule {
    /// Compiles `config`, the `index`-th rule of its list.
    pub fn compile(config: &RelabelConfig, index: usize) -> Result<Rule, RelabelError> {
        let err = |field: &'static str, message: String| RelabelError { index, field, message };
        let action = match config.action.as_deref() {
            None => Action::Replace,
            Some(name) => {
                Action::parse(name).ok_or_else(|| err("action", format!("unknown relabel action {name:?}")))?
            }
        };
        for name in &config.source_labels {
            if !is_valid_label_name(name) {
                return Err(err("source_labels", format!("{name:?} is not a valid label name")));
            }
        }
        let separator = config.separator.clone().unwrap_or_else(|| DEFAULT_SEPARATOR.into());
        let regex_src = config.regex.clone().unwrap_or_else(|| DEFAULT_REGEX.into());
        let replacement = config.replacement.clone().unwrap_or_else(|| DEFAULT_REPLACEMENT.into());
        let target_label = config.target_label.clone().unwrap_or_default();
        let modulus = config.modulus.unwrap_or(0);

        let is_default_separator = separator == DEFAULT_SEPARATOR;
        let is_default_regex = regex_src == DEFAULT_REGEX;
        let is_default_replacement = replacement == DEFAULT_REPLACEMENT;

        use Action::*;
        if action == HashMod && modulus == 0 {
            return Err(err("modulus", "action hashmod requires a non-zero modulus".into()));
        }
        let needs_target = matches!(action, Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual);
        if needs_target && target_label.is_empty() {
            return Err(err("target_label", format!("action {action} requires a target_label")));
        }
        let target_ok = match action {
            // A replace target may be a template expanded per match.
            Replace => target_label.contains('$') || is_valid_label_name(&target_label),
            HashMod | Lowercase | Uppercase | KeepEqual | DropEqual => is_valid_label_name(&target_label),
            _ => true,
        };
        if !target_ok {
            return Err(err("target_label", format!("{target_label:?} is not a valid label name for action {action}")));
        }
        if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual) && !is_default_replacement {
            return Err(err("replacement", format!("replacement cannot be set for action {action}")));
        }
        if action == LabelMap && !is_label_name_template(&replacement) {
            return Err(err("replacement", format!("{replacement:?} is not a valid label name for action labelmap")));
        }
        if matches!(action, KeepEqual | DropEqual) {
            let extra = [
                ("regex", !is_default_regex),
                ("modulus", config.modulus.is_some_and(|m| m != 0)),
                ("separator", !is_default_separator),
            ];
            if let Some((field, _)) = extra.iter().find(|(_, set)| *set) {
                return Err(err(field, format!("action {action} takes only source_labels and target_label")));
            }
        }
        if matches!(action, LabelDrop | LabelKeep) {
            let extra = [
                ("source_labels", !config.source_labels.is_empty()),
                ("target_label", !target_label.is_empty()),
                ("modulus", config.modulus.is_some_and(|m| m != 0)),
                ("separator", !is_default_separator),
                ("replacement", !is_default_replacement),
            ];
            if let Some((field, _)) = extra.iter().find(|(_, set)| *set) {
                return Err(err(field, format!("action {action} takes only regex")));
            }
        }
        let regex = Regex::new(&format!("^(?s:{regex_src})$"))
            .map_err(|e| err("regex", format!("invalid regular expression {regex_src:?}: {e}")))?;
        Ok(Rule {
            source_labels: config.source_labels.clone(),
            separator,
            target_label,
            regex,
            modulus,
            replacement,
            action,
        })
    }
}
