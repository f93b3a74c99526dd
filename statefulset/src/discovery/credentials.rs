//! Secrets and ConfigMap values that monitors reference (bearer tokens, TLS CAs, certificates and
//! keys), handed to the scrape loops as files: the scrape crate reads credentials from files
//! (re-reading tokens before each scrape), and a file keeps them out of every `Debug` output and
//! log line. Files are named after a hash of their content, so a rotated Secret gives a new
//! path, which restarts the target's loop with the new value; files no longer used are removed.
//! Values are never logged: errors name the Secret and key, not the content.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::monitor::SecretKeySelector;

/// A referenced key of a Secret or ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ref {
    Secret(SecretKeySelector),
    ConfigMap(SecretKeySelector),
}

/// Kind, namespace and name of an object a monitor references; discovery watches each.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectRef {
    Secret { namespace: String, name: String },
    ConfigMap { namespace: String, name: String },
}

/// Turns a reference into a file path. `Ok(None)`: an `optional` reference that is missing.
pub trait Credentials {
    fn file(&mut self, namespace: &str, r: &Ref) -> Result<Option<PathBuf>, String>;
}

/// Objects by (namespace, name).
pub type ObjectMap<K> = HashMap<(String, String), Arc<K>>;

/// The real [`Credentials`]: values from the watched Secrets and ConfigMaps, written under
/// `dir` (mode 0600). Remembers what was referenced ([`CredentialFiles::referenced`]) so that
/// discovery can watch exactly those objects.
pub struct CredentialFiles<'a> {
    dir: PathBuf,
    secrets: &'a ObjectMap<Secret>,
    config_maps: &'a ObjectMap<ConfigMap>,
    referenced: BTreeSet<ObjectRef>,
    written: BTreeSet<PathBuf>,
}

impl<'a> CredentialFiles<'a> {
    pub fn new(dir: &Path, secrets: &'a ObjectMap<Secret>, config_maps: &'a ObjectMap<ConfigMap>) -> Self {
        CredentialFiles {
            dir: dir.to_path_buf(),
            secrets,
            config_maps,
            referenced: BTreeSet::new(),
            written: BTreeSet::new(),
        }
    }

    /// Every object referenced since `new`.
    pub fn referenced(&self) -> &BTreeSet<ObjectRef> {
        &self.referenced
    }

    /// What was referenced, and the files written (to keep), since `new`.
    pub fn into_parts(self) -> (BTreeSet<ObjectRef>, BTreeSet<PathBuf>) {
        (self.referenced, self.written)
    }

    fn lookup(&mut self, namespace: &str, r: &Ref) -> Result<Option<Vec<u8>>, String> {
        let (sel, value) = match r {
            Ref::Secret(sel) => {
                self.referenced.insert(ObjectRef::Secret { namespace: namespace.into(), name: sel.name.clone() });
                let found = self.secrets.get(&(namespace.to_string(), sel.name.clone()));
                let Some(secret) = found else {
                    return missing(sel, format!("Secret {namespace}/{} not found", sel.name));
                };
                let value = secret.data.as_ref().and_then(|d| d.get(&sel.key)).map(|v| v.0.clone()).or_else(|| {
                    secret.string_data.as_ref().and_then(|d| d.get(&sel.key)).map(|v| v.clone().into_bytes())
                });
                (sel, value)
            }
            Ref::ConfigMap(sel) => {
                self.referenced.insert(ObjectRef::ConfigMap { namespace: namespace.into(), name: sel.name.clone() });
                let found = self.config_maps.get(&(namespace.to_string(), sel.name.clone()));
                let Some(cm) = found else {
                    return missing(sel, format!("ConfigMap {namespace}/{} not found", sel.name));
                };
                let value = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&sel.key))
                    .map(|v| v.clone().into_bytes())
                    .or_else(|| cm.binary_data.as_ref().and_then(|d| d.get(&sel.key)).map(|v| v.0.clone()));
                (sel, value)
            }
        };
        match value {
            Some(v) => Ok(Some(v)),
            None => {
                let kind = if matches!(r, Ref::Secret(_)) { "Secret" } else { "ConfigMap" };
                missing(sel, format!("{kind} {namespace}/{} has no key {:?}", sel.name, sel.key))
            }
        }
    }

    fn write(&mut self, content: &[u8]) -> Result<PathBuf, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let path = self.dir.join(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(content)));
        if !path.exists() {
            let partial = path.with_extension("partial");
            write_private(&partial, content).map_err(|e| format!("writing {}: {e}", partial.display()))?;
            std::fs::rename(&partial, &path).map_err(|e| format!("renaming to {}: {e}", path.display()))?;
        }
        self.written.insert(path.clone());
        Ok(path)
    }
}

/// Removes the files of `dir` not in `keep` (old values, gone monitors). Call it once the scrape
/// loops use the new files.
pub fn remove_unused_files(dir: &Path, keep: &BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !keep.contains(&path) {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an unused credential file");
            }
        }
    }
}

fn missing(sel: &SecretKeySelector, message: String) -> Result<Option<Vec<u8>>, String> {
    if sel.optional == Some(true) {
        Ok(None)
    } else {
        Err(message)
    }
}

fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

impl Credentials for CredentialFiles<'_> {
    fn file(&mut self, namespace: &str, r: &Ref) -> Result<Option<PathBuf>, String> {
        match self.lookup(namespace, r)? {
            Some(value) => self.write(&value).map(Some),
            None => Ok(None),
        }
    }
}
