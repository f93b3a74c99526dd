//! A directory of fixture files (`*.yaml`, `*.yml`, `*.json`, searched recursively; hidden files
//! skipped) mirrored into the store: objects of new files are created, changed ones modified,
//! those of removed files deleted, each becoming a watch event. A file may hold several YAML
//! documents and `kind: List` objects. A file that does not parse keeps its previous objects, so
//! a half-written file does not make objects flicker away.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::shared::Shared;

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("reading fixture {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("parsing fixture {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("applying an object of fixture {path}: {message}")]
    Apply { path: PathBuf, message: String },
}

/// What identifies an object across fixture scans: (apiVersion, kind, namespace, name).
type Identity = (String, String, String, String);

fn identity(object: &Value) -> Identity {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        text(&object["apiVersion"]),
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

/// Parses one fixture file's text into objects (`json` picks JSON over multi-document YAML).
pub fn parse_objects(text: &str, json: bool) -> Result<Vec<Value>, String> {
    let documents: Vec<Value> = if json {
        vec![serde_json::from_str(text).map_err(|e| e.to_string())?]
    } else {
        let mut documents = Vec::new();
        for document in serde_yaml::Deserializer::from_str(text) {
            documents.push(Value::deserialize(document).map_err(|e| e.to_string())?);
        }
        documents
    };
    let mut objects = Vec::new();
    for document in documents {
        match document {
            Value::Null => {}
            Value::Object(_) if document["items"].is_array() && is_list_kind(&document) => {
                objects.extend(document["items"].as_array().into_iter().flatten().cloned());
            }
            Value::Object(_) => objects.push(document),
            _ => return Err("a document is not an object".into()),
        }
    }
    Ok(objects)
}

fn is_list_kind(document: &Value) -> bool {
    document["kind"].as_str().is_some_and(|k| k.ends_with("List"))
}

#[derive(Debug)]
struct FixtureFile {
    content: Vec<u8>,
    objects: Vec<Value>,
}

/// The state of one mirrored directory between scans.
#[derive(Debug)]
pub(crate) struct FixtureDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FixtureFile>,
    /// What was last applied from the files, to apply only what changed.
    applied: BTreeMap<Identity, (PathBuf, Value)>,
}

impl FixtureDir {
    pub fn new(dir: &Path) -> FixtureDir {
        FixtureDir { dir: dir.to_path_buf(), files: BTreeMap::new(), applied: BTreeMap::new() }
    }

    /// Re-reads the directory (blocking I/O: run it off the async threads).
    pub fn read(&mut self) -> Vec<FixtureError> {
        let mut errors = Vec::new();
        let mut paths = Vec::new();
        collect_files(&self.dir, &mut paths, &mut errors);
        self.files.retain(|path, _| paths.contains(path));
        for path in paths {
            let content = match std::fs::read(&path) {
                Ok(content) => content,
                // Removed between listing and reading: the next scan forgets it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    errors.push(FixtureError::Io { path, source });
                    continue;
                }
            };
            if self.files.get(&path).is_some_and(|f| f.content == content) {
                continue;
            }
            let json = path.extension().is_some_and(|e| e == "json");
            let parsed = std::str::from_utf8(&content).map_err(|e| e.to_string()).and_then(|t| parse_objects(t, json));
            match parsed {
                Ok(objects) => {
                    self.files.insert(path, FixtureFile { content, objects });
                }
                Err(message) => errors.push(FixtureError::Parse { path, message }),
            }
        }
        errors
    }

    /// Applies to the store what changed in the files since the last call; CRDs go first so that
    /// their scope is known before their objects arrive.
    pub fn apply(&mut self, shared: &Shared) -> Vec<FixtureError> {
        let mut desired: BTreeMap<Identity, (PathBuf, Value)> = BTreeMap::new();
        for (path, file) in &self.files {
            for object in &file.objects {
                desired.insert(identity(object), (path.clone(), object.clone()));
            }
        }
        let mut errors = Vec::new();
        let removed: Vec<(Identity, (PathBuf, Value))> = self
            .applied
            .iter()
            .filter(|(id, _)| !desired.contains_key(*id))
            .map(|(i, v)| (i.clone(), v.clone()))
            .collect();
        for (id, (path, object)) in removed {
            self.applied.remove(&id);
            let result = shared.write(|store| {
                let (rt, namespace) = store.type_of(&object)?;
                store.delete(&rt, &namespace, &id.3)
            });
            if let Err(e) = result {
                errors.push(FixtureError::Apply { path, message: e.to_string() });
            }
        }
        let (crds, others): (Vec<_>, Vec<_>) =
            desired.into_iter().partition(|(id, _)| id.1 == "CustomResourceDefinition");
        for (id, (path, object)) in crds.into_iter().chain(others) {
            if self.applied.get(&id).is_some_and(|(_, applied)| *applied == object) {
                continue;
            }
            match shared.write(|store| store.apply(object.clone())) {
                Ok(_) => {
                    self.applied.insert(id, (path, object));
                }
                Err(e) => errors.push(FixtureError::Apply { path, message: e.to_string() }),
            }
        }
        errors
    }
}

fn collect_files(dir: &Path, paths: &mut Vec<PathBuf>, errors: &mut Vec<FixtureError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            errors.push(FixtureError::Io { path: dir.to_path_buf(), source });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, paths, errors);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            paths.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_and_lists_become_objects() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Node, metadata: {name: n}}\n- {apiVersion: v1, kind: Node, metadata: {name: m}}\n";
        let objects = parse_objects(text, false).expect("parses");
        let names: Vec<&str> = objects.iter().filter_map(|o| o["metadata"]["name"].as_str()).collect();
        assert_eq!(names, ["a", "n", "m"]);
        assert!(parse_objects("[1]", true).is_err());
    }
}
