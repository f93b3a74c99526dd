//! Reading a config file: expansion, parsing with field paths and lines, validation.

use std::path::Path;

use crate::locate::{parse_path, Found, Outline, Segment};
use crate::{Config, Mode};

/// A config that cannot be used; `Display` is the message a user sees:
/// `FILE:LINE: PATH: MESSAGE`, where `LINE` is left out only when the field is not in the file
/// (a default that breaks a rule) and `PATH` only when the error is not about one field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    /// A `${VAR}` that cannot be expanded.
    #[error("{}{message}", at(file, Some(*line), path))]
    Expand { file: String, line: usize, path: String, message: String },
    /// Not YAML, an unknown field, a wrong type, a bad duration, size or enum value.
    #[error("{}{message}", at(file, Some(*line), path))]
    Parse { file: String, line: usize, path: String, message: String },
    /// Parsed, but breaks a rule of [`Config::validate`].
    #[error("{}{message}", at(file, *line, path))]
    Invalid { file: String, line: Option<usize>, path: String, message: String },
}

impl ConfigError {
    /// The line the error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Expand { line, .. } | ConfigError::Parse { line, .. } => Some(*line),
            ConfigError::Invalid { line, .. } => *line,
        }
    }

    /// The path of the field the error is about (`exporters.loki.batch.max_wait`), or "".
    pub fn path(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "",
            ConfigError::Expand { path, .. } | ConfigError::Parse { path, .. } | ConfigError::Invalid { path, .. } => {
                path
            }
        }
    }
}

/// `file:line: path: ` with the parts that are known.
fn at(file: &str, line: Option<usize>, path: &str) -> String {
    let mut s = file.to_string();
    if let Some(line) = line {
        s.push_str(&format!(":{line}"));
    }
    s.push_str(": ");
    if !path.is_empty() {
        s.push_str(path);
        s.push_str(": ");
    }
    s
}

impl Config {
    /// Reads, expands, parses, resolves and validates `path`.
    pub fn load(path: &Path, mode_override: Option<Mode>) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Config::from_yaml(&file, &text, mode_override, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`], from text, with an explicit environment; `file` only names the text
    /// in errors.
    pub fn from_yaml(
        file: &str,
        text: &str,
        mode_override: Option<Mode>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // Positions are looked up in the text as written, so they are the file's lines even if
        // a variable expands to several lines.
        let outline = Outline::new(text);
        let (expanded, lines) = crate::expand_env_mapped(text, &env).map_err(|e| ConfigError::Expand {
            file: file.into(),
            line: e.line,
            path: outline.path_at(e.line, e.column).unwrap_or_default(),
            message: e.message,
        })?;
        let mut config: Config = if outline.is_empty() {
            Config::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(&expanded);
            serde_path_to_error::deserialize(de).map_err(|e| parse_error(file, &outline, &lines, e))?
        };
        if matches!(outline.line_of(&parse_path("scrape.timeout")), Found::Nowhere | Found::Prefix(_)) {
            // As in Prometheus, a timeout left out is never longer than the interval.
            config.scrape.timeout = config.scrape.timeout.min(config.scrape.interval);
        }
        if config.node_name.is_empty() {
            config.node_name = env("NODE_NAME").unwrap_or_default();
        }
        let own = &mut config.logs.own_pod;
        for (field, var) in
            [(&mut own.namespace, "POD_NAMESPACE"), (&mut own.name, "POD_NAME"), (&mut own.uid, "POD_UID")]
        {
            if field.is_empty() {
                *field = env(var).unwrap_or_default();
            }
        }
        let monitors = &mut config.scrape.monitors;
        if monitors.pod_name.is_empty() {
            monitors.pod_name = env("POD_NAME").unwrap_or_default();
        }
        if monitors.pod_namespace.is_empty() {
            monitors.pod_namespace = env("POD_NAMESPACE").unwrap_or_default();
        }
        config.resolve(mode_override);
        config.validate().map_err(|(path, message)| {
            let line = match outline.line_of(&parse_path(&path)) {
                Found::Exact(l) | Found::Prefix(l) => Some(l),
                Found::Nowhere => None,
            };
            ConfigError::Invalid { file: file.into(), line, path, message }
        })?;
        Ok(config)
    }
}

fn parse_error(
    file: &str,
    outline: &Outline,
    lines: &crate::LineMap,
    e: serde_path_to_error::Error<serde_yaml::Error>,
) -> ConfigError {
    let segments: Vec<Segment> = e
        .path()
        .iter()
        .map_while(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => None,
        })
        .collect();
    let path = if segments.is_empty() { String::new() } else { e.path().to_string() };
    let inner = e.into_inner();
    // serde_yaml reads the expanded text: its lines are mapped back to the file's.
    let serde_line = inner.location().map(|l| lines.file_line(l.line()));
    // serde_yaml's line is that of the enclosing mapping for errors raised by our own types, so
    // the outline comes first; serde_yaml's is right for syntax errors, which have no path.
    let line = match (outline.line_of(&segments), serde_line) {
        (Found::Exact(l), _) if !segments.is_empty() => l,
        (_, Some(l)) => l,
        (Found::Exact(l) | Found::Prefix(l), None) => l,
        (Found::Nowhere, None) => 1,
    };
    let mut message = inner.to_string();
    if let Some(loc) = inner.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    let message = file_lines_in(&message, lines);
    ConfigError::Parse { file: file.into(), line, message: strip_path_prefix(&message, &path), path }
}

/// `message` with every "line N" of the expanded text turned into the file's line.
fn file_lines_in(message: &str, lines: &crate::LineMap) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("line ") {
        let (before, after) = rest.split_at(at + "line ".len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&lines.file_line(n).to_string()),
            Err(_) => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// serde_yaml starts its messages with the path of the enclosing mapping (a prefix of ours);
/// the full path is printed in front instead.
fn strip_path_prefix(message: &str, path: &str) -> String {
    let cuts = path.match_indices(['.', '[']).map(|(i, _)| i).chain([path.len()]);
    let mut best = message;
    for cut in cuts {
        if let Some(rest) = message.strip_prefix(&path[..cut]).and_then(|r| r.strip_prefix(": ")) {
            best = rest;
        }
    }
    best.to_string()
}

/// The full default configuration of `mode`, commented, as `print-config` shows it. Parsing it
/// gives exactly [`Config::default_for`] (a test holds the two together).
pub fn default_config_yaml(mode: Mode) -> &'static str {
    match mode {
        Mode::Daemonset => include_str!("defaults/daemonset.yaml"),
        Mode::Cluster => include_str!("defaults/cluster.yaml"),
    }
}
