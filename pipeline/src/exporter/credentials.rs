//! What an exporter authenticates with: a bearer token or basic auth, turned into the value of the
//! `Authorization` header (gRPC: `authorization` metadata).
//!
//! Secrets that come from files are re-read when the file changes, because Kubernetes rotates
//! projected service-account tokens in place. The file is looked at no more often than every few
//! seconds. The values never reach a log line: errors name the file, not its content.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use lgtm_config::ExporterConfig;

/// How often a secret file is checked for changes.
const RECHECK: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("reading {what} {path}: {source}")]
pub struct CredentialsError {
    what: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// The `Authorization` value an exporter sends, if any. Its `Debug` shows the kind and the file,
/// never the secret.
pub struct Credentials {
    kind: Kind,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::None => f.write_str("Credentials::None"),
            Kind::Bearer(file) => write!(f, "Credentials::Bearer({})", file.path.display()),
            Kind::Basic { username, .. } => write!(f, "Credentials::Basic({username})"),
        }
    }
}

enum Kind {
    None,
    Bearer(SecretFile),
    Basic { username: String, password: Password },
}

enum Password {
    Inline(String),
    File(SecretFile),
}

impl Credentials {
    /// From `bearer_token_file` or `basic_auth` (the token wins if both are set). Files are read
    /// lazily, on the first request.
    pub fn from_config(cfg: &ExporterConfig) -> Credentials {
        let kind = if let Some(path) = &cfg.bearer_token_file {
            Kind::Bearer(SecretFile::new("bearer_token_file", path))
        } else if let Some(basic) = &cfg.basic_auth {
            let password = match &basic.password_file {
                Some(path) => Password::File(SecretFile::new("basic_auth.password_file", path)),
                None => Password::Inline(basic.password.clone().unwrap_or_default()),
            };
            Kind::Basic { username: basic.username.clone(), password }
        } else {
            Kind::None
        };
        Credentials { kind }
    }

    /// Shortens how often files are checked (tests).
    #[cfg(test)]
    pub fn recheck_every(mut self, every: Duration) -> Credentials {
        match &mut self.kind {
            Kind::Bearer(f) | Kind::Basic { password: Password::File(f), .. } => f.recheck = every,
            _ => {}
        }
        self
    }

    /// The `Authorization` header value, e.g. `Bearer <token>`, or `None` without credentials.
    pub async fn authorization(&self) -> Result<Option<String>, CredentialsError> {
        match &self.kind {
            Kind::None => Ok(None),
            Kind::Bearer(file) => Ok(Some(format!("Bearer {}", file.current().await?))),
            Kind::Basic { username, password } => {
                let password = match password {
                    Password::Inline(p) => p.clone(),
                    Password::File(f) => f.current().await?,
                };
                let pair = format!("{username}:{password}");
                Ok(Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))))
            }
        }
    }
}

/// What stands in for a credential in text that quotes it.
pub const REDACTED: &str = "<redacted>";

/// `text` with every form of the credentials sent as `authorization` replaced by [`REDACTED`]:
/// the header value, its token (or base64) part, and the password of basic auth. Backends and
/// proxies sometimes quote the request back in an error body, which is logged and kept in the
/// acknowledgement.
pub fn redact(text: String, authorization: Option<&str>) -> String {
    let Some(auth) = authorization else { return text };
    let mut forms = vec![auth.to_string()];
    if let Some((_, secret)) = auth.split_once(' ') {
        forms.push(secret.to_string());
        if auth.starts_with("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(secret).ok();
            let pair = decoded.and_then(|d| String::from_utf8(d).ok());
            if let Some((_, password)) = pair.as_deref().and_then(|p| p.split_once(':')) {
                // A very short password would redact common words; it is also too weak to matter.
                if password.len() >= 4 {
                    forms.push(password.to_string());
                }
            }
        }
    }
    let mut text = text;
    for form in forms.iter().filter(|f| !f.is_empty()) {
        if text.contains(form.as_str()) {
            text = text.replace(form.as_str(), REDACTED);
        }
    }
    text
}

/// A small secret file, cached and re-read when its modification time or length changes.
struct SecretFile {
    what: &'static str,
    path: PathBuf,
    recheck: Duration,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

struct Cached {
    value: String,
    stamp: (Option<SystemTime>, u64),
    checked_at: Instant,
}

impl SecretFile {
    fn new(what: &'static str, path: &Path) -> SecretFile {
        SecretFile { what, path: path.to_path_buf(), recheck: RECHECK, cache: tokio::sync::Mutex::new(None) }
    }

    /// The content without surrounding whitespace. A file that cannot be read after it was read
    /// once keeps its last value (a rotation in progress), and the error is returned only if
    /// there is no value yet.
    async fn current(&self) -> Result<String, CredentialsError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if c.checked_at.elapsed() < self.recheck {
                return Ok(c.value.clone());
            }
        }
        // Metadata follows symlinks, so the `..data` swap of a projected volume shows up here.
        let stamp = match tokio::fs::metadata(&self.path).await {
            Ok(m) => (m.modified().ok(), m.len()),
            Err(e) => return self.stale_or(&mut cache, e),
        };
        if let Some(c) = cache.as_mut() {
            if c.stamp == stamp {
                c.checked_at = Instant::now();
                return Ok(c.value.clone());
            }
        }
        match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => {
                let value = text.trim().to_string();
                *cache = Some(Cached { value: value.clone(), stamp, checked_at: Instant::now() });
                Ok(value)
            }
            Err(e) => self.stale_or(&mut cache, e),
        }
    }

    fn stale_or(&self, cache: &mut Option<Cached>, e: std::io::Error) -> Result<String, CredentialsError> {
        match cache.as_mut() {
            Some(c) => {
                tracing::warn!(file = %self.path.display(), error = %e, "re-reading {} failed; keeping the last value", self.what);
                c.checked_at = Instant::now();
                Ok(c.value.clone())
            }
            None => Err(CredentialsError { what: self.what, path: self.path.clone(), source: e }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lgtm_config::BasicAuth;

    #[tokio::test]
    async fn rewritten_token_file_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let cfg = ExporterConfig { bearer_token_file: Some(path.clone()), ..Default::default() };
        let creds = Credentials::from_config(&cfg).recheck_every(Duration::ZERO);
        assert_eq!(creds.authorization().await.unwrap().as_deref(), Some("Bearer first"));
        std::fs::write(&path, "second-token").unwrap();
        assert_eq!(creds.authorization().await.unwrap().as_deref(), Some("Bearer second-token"));
        // A vanished file (mid-rotation) keeps the last token.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(creds.authorization().await.unwrap().as_deref(), Some("Bearer second-token"));
    }

    #[tokio::test]
    async fn missing_token_file_is_an_error_naming_the_file() {
        let cfg = ExporterConfig { bearer_token_file: Some("/nonexistent/token".into()), ..Default::default() };
        let err = Credentials::from_config(&cfg).authorization().await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/token"), "{err}");
    }

    #[test]
    fn debug_output_has_no_secret() {
        let cfg = ExporterConfig {
            basic_auth: Some(BasicAuth {
                username: "user".into(),
                password: Some("hunter2".into()),
                password_file: None,
            }),
            ..Default::default()
        };
        let shown = format!("{:?}", Credentials::from_config(&cfg));
        assert!(shown.contains("user") && !shown.contains("hunter2"), "{shown}");
    }

    #[tokio::test]
    async fn basic_auth_is_base64_of_user_and_password() {
        let cfg = ExporterConfig {
            basic_auth: Some(BasicAuth { username: "user".into(), password: Some("pass".into()), password_file: None }),
            ..Default::default()
        };
        let auth = Credentials::from_config(&cfg).authorization().await.unwrap();
        assert_eq!(auth.as_deref(), Some("Basic dXNlcjpwYXNz"));
    }
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    #[test]
    fn every_form_of_the_sent_credentials_is_redacted() {
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("tenant:hunter22"));
        let body = format!("denied: got authorization {basic}; the password hunter22 is wrong; retry later");
        let out = redact(body, Some(&basic));
        assert_eq!(out, "denied: got authorization <redacted>; the password <redacted> is wrong; retry later");
        let b64 = basic.trim_start_matches("Basic ");
        assert_eq!(redact(format!("token {b64} refused"), Some(&basic)), "token <redacted> refused");

        let bearer = "Bearer eyJhbGciOi.abc";
        assert_eq!(redact("bad: Bearer eyJhbGciOi.abc".into(), Some(bearer)), "bad: <redacted>");
        assert_eq!(redact("bad token eyJhbGciOi.abc".into(), Some(bearer)), "bad token <redacted>");
    }

    #[test]
    fn text_without_credentials_or_without_a_header_is_unchanged() {
        assert_eq!(
            redact("HTTP 400: out of order sample".into(), Some("Bearer t0ken-x")),
            "HTTP 400: out of order sample"
        );
        assert_eq!(redact("anything Bearer x".into(), None), "anything Bearer x");
        // A password too short to redact safely is left alone (and the header still is not there).
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("u:abc"));
        assert_eq!(redact("abc abc".into(), Some(&basic)), "abc abc");
    }
}
