//! `labelSelector` and `fieldSelector` query parameters, parsed as the API server reads them.
//!
//! Labels: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, joined by commas.
//! Fields: `path=value`, `path==value`, `path!=value` joined by commas, where `path` is any dotted
//! path into the object (`metadata.name`, `spec.nodeName`, `involvedObject.kind`); a missing field
//! reads as the empty string, so `spec.nodeName=` selects unscheduled pods.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    pub fn parse(selector: &str) -> Result<LabelSelector, SelectorError> {
        let error = |reason| SelectorError { selector: selector.to_string(), reason };
        let mut requirements = Vec::new();
        for term in split_outside_parens(selector) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = term.strip_prefix('!') {
                LabelRequirement::NotExists(valid_key(key.trim()).ok_or_else(|| error("bad key after '!'"))?)
            } else if let Some(open) = term.find('(') {
                let close = term.rfind(')').filter(|c| *c > open).ok_or_else(|| error("unclosed '('"))?;
                let values = term[open + 1..close].split(',').map(|v| v.trim().to_string()).collect();
                let mut words = term[..open].split_whitespace();
                let key = words.next().and_then(valid_key).ok_or_else(|| error("bad key before 'in'"))?;
                match (words.next(), words.next()) {
                    (Some("in"), None) => LabelRequirement::In(key, values),
                    (Some("notin"), None) => LabelRequirement::NotIn(key, values),
                    _ => return Err(error("expected 'in' or 'notin' before '('")),
                }
            } else if let Some((key, value)) = term.split_once("!=") {
                LabelRequirement::NotEquals(
                    valid_key(key.trim()).ok_or_else(|| error("bad key"))?,
                    value.trim().to_string(),
                )
            } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
                LabelRequirement::Equals(
                    valid_key(key.trim()).ok_or_else(|| error("bad key"))?,
                    value.trim().to_string(),
                )
            } else {
                LabelRequirement::Exists(valid_key(term).ok_or_else(|| error("bad key"))?)
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        })
    }
}

fn valid_key(key: &str) -> Option<String> {
    let ok = !key.is_empty() && !key.contains(|c: char| c.is_whitespace() || "=!(),".contains(c));
    ok.then(|| key.to_string())
}

/// Splits on commas that are not inside `( )`.
fn split_outside_parens(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A parsed `fieldSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(selector: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, true, v)
            } else {
                return Err(SelectorError { selector: selector.to_string(), reason: "expected '=' or '!='" });
            };
            terms.push((path.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| (field_text(object, path) == *value) == *equal)
    }
}

/// The value at a dotted path, as text; missing or null reads as "".
fn field_text(object: &Value, path: &str) -> String {
    let mut at = object;
    for segment in path.split('.') {
        at = &at[segment];
    }
    match at {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn label_selectors_follow_the_api_grammar() {
        let p = pod(json!({"app": "web", "tier": "front"}));
        for (selector, expected) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier in (front,back),!missing", true),
            ("app=web,tier=back", false),
        ] {
            let parsed = LabelSelector::parse(selector).expect(selector);
            assert_eq!(parsed.matches(&p), expected, "{selector}");
        }
    }

    #[test]
    fn malformed_label_selectors_are_refused() {
        for selector in ["app in (x", "app within (x)", "!", "=x"] {
            assert!(LabelSelector::parse(selector).is_err(), "{selector}");
        }
    }

    #[test]
    fn field_selectors_read_any_dotted_path() {
        let p = pod(json!({}));
        for (selector, expected) in [
            ("metadata.name=p", true),
            ("metadata.namespace=other", false),
            ("spec.nodeName=n1", true),
            ("spec.nodeName!=n1", false),
            ("status.phase=", true),
            ("metadata.name=p,spec.nodeName==n1", true),
        ] {
            assert_eq!(FieldSelector::parse(selector).expect(selector).matches(&p), expected, "{selector}");
        }
        assert!(FieldSelector::parse("spec.nodeName").is_err());
    }
}
