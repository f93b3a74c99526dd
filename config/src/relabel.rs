//! The one validator of relabeling rules, with Prometheus's rules: `validate` runs it over
//! static configs, and the scraper's compiler (`lgtm_scrape::relabel`) runs it for static
//! configs, ServiceMonitors and PodMonitors alike, so a rule is accepted or refused the same
//! way wherever it comes from.
//!
//! It lives here, in the lowest crate, because `validate` cannot call into the scraper
//! (`lgtm-scrape` depends on `lgtm-config`, not the other way round); the scraper builds its
//! rules from what [`RelabelConfig::check`] returns.

use regex::Regex;

use crate::RelabelConfig;

const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";

/// The relabeling actions of Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Sets `target_label` to the expanded `replacement` when `regex` matches the joined source
    /// values; an empty result removes the label.
    Replace,
    /// Drops the set unless `regex` matches the joined source values.
    Keep,
    /// Drops the set when `regex` matches the joined source values.
    Drop,
    /// Drops the set unless the joined source values equal `target_label`'s value.
    KeepEqual,
    /// Drops the set when the joined source values equal `target_label`'s value.
    DropEqual,
    /// Sets `target_label` to the MD5 of the joined source values modulo `modulus`.
    HashMod,
    /// Copies every label whose name matches `regex` to the name `replacement` expands to.
    LabelMap,
    /// Removes every label whose name matches `regex`.
    LabelDrop,
    /// Removes every label whose name does not match `regex`.
    LabelKeep,
    /// Sets `target_label` to the lowercased joined source values.
    Lowercase,
    /// Sets `target_label` to the uppercased joined source values.
    Uppercase,
}

/// Every action, in the order Prometheus documents them.
pub const ACTIONS: [Action; 11] = [
    Action::Replace,
    Action::Keep,
    Action::Drop,
    Action::KeepEqual,
    Action::DropEqual,
    Action::HashMod,
    Action::LabelMap,
    Action::LabelDrop,
    Action::LabelKeep,
    Action::Lowercase,
    Action::Uppercase,
];

impl Action {
    /// Parses an action name, ignoring case as Prometheus does.
    pub fn parse(name: &str) -> Option<Action> {
        ACTIONS.into_iter().find(|a| a.as_str().eq_ignore_ascii_case(name))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule that breaks Prometheus's rules: the YAML key at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelabelInvalid {
    pub field: &'static str,
    pub message: String,
}

/// A valid rule with Prometheus's defaults filled in and its regex compiled, fully anchored
/// (`^(?s:regex)$`).
#[derive(Debug, Clone)]
pub struct CheckedRelabel {
    pub action: Action,
    pub source_labels: Vec<String>,
    pub separator: String,
    pub target_label: String,
    pub regex: Regex,
    pub modulus: u64,
    pub replacement: String,
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A `labelmap` replacement and a `replace` target must expand to a label name: literal name
/// characters and `$` references, not starting with a digit.
fn is_label_name_template(s: &str) -> bool {
    static TEMPLATE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").expect("valid template regex")
    });
    TEMPLATE.is_match(s)
}

/// The one line of a regex error that says what is wrong (its `Display` draws a diagram).
pub(crate) fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

impl RelabelConfig {
    /// Checks the rule as Prometheus's config loader does and fills in the defaults.
    pub fn check(&self) -> Result<CheckedRelabel, RelabelInvalid> {
        let err = |field: &'static str, message: String| Err(RelabelInvalid { field, message });
        let action = match self.action.as_deref() {
            None => Action::Replace,
            Some(name) => match Action::parse(name) {
                Some(a) => a,
                None => {
                    let all: Vec<&str> = ACTIONS.iter().map(|a| a.as_str()).collect();
                    return err(
                        "action",
                        format!("unknown relabel action {name:?}, expected one of {}", all.join(", ")),
                    );
                }
            },
        };
        for name in &self.source_labels {
            if !is_label_name(name) {
                return err("source_labels", format!("{name:?} is not a valid label name"));
            }
        }
        let separator = self.separator.clone().unwrap_or_else(|| DEFAULT_SEPARATOR.into());
        let regex_src = self.regex.clone().unwrap_or_else(|| DEFAULT_REGEX.into());
        let replacement = self.replacement.clone().unwrap_or_else(|| DEFAULT_REPLACEMENT.into());
        let target_label = self.target_label.clone().unwrap_or_default();
        let modulus = self.modulus.unwrap_or(0);

        let is_default_separator = separator == DEFAULT_SEPARATOR;
        let is_default_regex = regex_src == DEFAULT_REGEX;
        let is_default_replacement = replacement == DEFAULT_REPLACEMENT;

        use Action::*;
        if action == HashMod && modulus == 0 {
            return err("modulus", "action hashmod requires a non-zero modulus".into());
        }
        let needs_target = matches!(action, Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual);
        if needs_target && target_label.is_empty() {
            return err("target_label", format!("action {action} requires a target_label"));
        }
        let target_ok = match action {
            // A replace target may be a template expanded per match: name characters and `$`
            // references (Prometheus's `relabelTarget` rule; `0${1}` is refused).
            Replace => is_label_name_template(&target_label),
            HashMod | Lowercase | Uppercase | KeepEqual | DropEqual => is_label_name(&target_label),
            _ => true,
        };
        if !target_ok {
            return err("target_label", format!("{target_label:?} is not a valid label name for action {action}"));
        }
        if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual) && !is_default_replacement {
            return err("replacement", format!("replacement cannot be set for action {action}"));
        }
        if action == LabelMap && !is_label_name_template(&replacement) {
            return err("replacement", format!("{replacement:?} is not a valid label name for action labelmap"));
        }
        if matches!(action, KeepEqual | DropEqual) {
            let extra = [
                ("regex", !is_default_regex),
                ("modulus", self.modulus.is_some_and(|m| m != 0)),
                ("separator", !is_default_separator),
            ];
            if let Some((field, _)) = extra.iter().find(|(_, set)| *set) {
                return err(field, format!("action {action} takes only source_labels and target_label"));
            }
        }
        if matches!(action, LabelDrop | LabelKeep) {
            let extra = [
                ("source_labels", !self.source_labels.is_empty()),
                ("target_label", !target_label.is_empty()),
                ("modulus", self.modulus.is_some_and(|m| m != 0)),
                ("separator", !is_default_separator),
                ("replacement", !is_default_replacement),
            ];
            if let Some((field, _)) = extra.iter().find(|(_, set)| *set) {
                return err(field, format!("action {action} takes only regex"));
            }
        }
        let regex = match Regex::new(&format!("^(?s:{regex_src})$")) {
            Ok(r) => r,
            Err(e) => return err("regex", format!("invalid regular expression {regex_src:?}: {}", regex_reason(&e))),
        };
        Ok(CheckedRelabel {
            action,
            source_labels: self.source_labels.clone(),
            separator,
            target_label,
            regex,
            modulus,
            replacement,
        })
    }
}
