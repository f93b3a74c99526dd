//! Reading a config file: expansion, parsing with field paths and lines, validation.

use std::path::Path;

use crate::{Config, Mode};

/// A config that cannot be used; `Display` is the message a user sees.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Expand { file: String, message: String },
    #[error("{file}:{line}: {path}: {message}")]
    Field { file: String, line: usize, path: String, message: String },
    #[error("{file}: {path}: {message}")]
    Invalid { file: String, path: String, message: String },
}

impl Config {
    /// Reads, expands, parses, resolves and validates `path`.
    pub fn load(path: &Path, mode_override: Option<Mode>) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Config::from_yaml(&file, &text, mode_override, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`], from text, with an explicit environment.
    pub fn from_yaml(
        file: &str,
        text: &str,
        mode_override: Option<Mode>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let expanded =
            crate::expand_env(text, env).map_err(|message| ConfigError::Expand { file: file.into(), message })?;
        let mut config: Config = if expanded.trim().is_empty() {
            Config::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(&expanded);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let line = inner.location().map(|l| l.line()).unwrap_or(0);
                let message = strip_location(&inner.to_string());
                ConfigError::Field { file: file.into(), line, path, message }
            })?
        };
        config.resolve(mode_override);
        config.validate().map_err(|(path, message)| ConfigError::Invalid { file: file.into(), path, message })?;
        Ok(config)
    }

    /// Checks that cross fields; returns the field's path and what is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (name, e) in
            [("mimir", &self.exporters.mimir), ("loki", &self.exporters.loki), ("tempo", &self.exporters.tempo)]
        {
            if e.enabled && !e.console && e.url.as_deref().unwrap_or("").is_empty() {
                return Err((
                    format!("exporters.{name}.url"),
                    "required unless console: true or enabled: false".into(),
                ));
            }
            if e.shards == 0 {
                return Err((format!("exporters.{name}.shards"), "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// serde_yaml appends " at line L column C"; the line is printed in front instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The full default configuration of `mode`, commented, as `print-config` shows it.
pub fn default_config_yaml(mode: Mode) -> String {
    let c = Config::default_for(mode);
    format!(
        "# lgtm-agent default configuration, mode {}\n{}",
        mode.as_str(),
        serde_yaml::to_string(&c).unwrap_or_default()
    )
}
