//! The HTTP surface: discovery (documents built in `discovery`) and the resource paths `/api/v1/[namespaces/<ns>/]<plural>[/<name>]` and
//! `/apis/<group>/<version>/[namespaces/<ns>/]<plural>[/<name>]` with GET (get, list, watch), POST,
//! PUT, PATCH (merge, strategic-merge treated as merge, and apply) and DELETE. Errors are
//! `Status` objects, as the API server answers them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use super::discovery;
use super::resources::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::shared::{ApiCall, Shared};
use super::store::{Store, StoreError};
use super::watch::{self, WatchRequest, WatchStart};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = match Query::<HashMap<String, String>>::try_from_uri(&uri) {
        Ok(Query(q)) => q,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let request = Request { shared: &shared, method: &method, query: &query, headers: &headers, body: &body };
    let found = |document: Option<Value>| document.map(ok).unwrap_or_else(not_found);
    shared.record_path(uri.path());
    if let ["apis", group, ..] = segments.as_slice() {
        if shared.is_group_hidden(group) {
            if let ["apis", _, _, rest @ ..] = segments.as_slice() {
                if !rest.is_empty() {
                    request.audit_path(group, rest);
                }
            }
            return not_found();
        }
    }
    match segments.as_slice() {
        ["version"] => ok(discovery::version_info()),
        ["api" | "apis"] if discovery::wants_aggregated(accept) => {
            let mut document = shared.read(|s| discovery::aggregated(s.registry(), segments[0] == "api"));
            hide_groups(&shared, &mut document, "items", "/metadata/name");
            ([(header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)], document.to_string()).into_response()
        }
        ["api"] => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
            ok(discovery::core_versions(host))
        }
        ["apis"] => {
            let mut document = shared.read(|s| discovery::group_list(s.registry()));
            hide_groups(&shared, &mut document, "groups", "/name");
            ok(document)
        }
        ["apis", group] => found(shared.read(|s| discovery::group(s.registry(), group))),
        ["api", "v1"] => found(shared.read(|s| discovery::resource_list(s.registry(), "", "v1"))),
        ["apis", group, version] => found(shared.read(|s| discovery::resource_list(s.registry(), group, version))),
        ["api", "v1", rest @ ..] => request.resource("", "v1", rest),
        ["apis", group, version, rest @ ..] => request.resource(group, version, rest),
        _ => not_found(),
    }
}

/// Drops the entries of hidden groups from a discovery document's `list`.
fn hide_groups(shared: &Shared, document: &mut Value, list: &str, name: &str) {
    if let Some(entries) = document.get_mut(list).and_then(Value::as_array_mut) {
        entries.retain(|e| !e.pointer(name).and_then(Value::as_str).is_some_and(|g| shared.is_group_hidden(g)));
    }
}

struct Request<'a> {
    shared: &'a Arc<Shared>,
    method: &'a Method,
    query: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

impl Request<'_> {
    fn param(&self, name: &str) -> &str {
        self.query.get(name).map(String::as_str).unwrap_or("")
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), "1" | "true")
    }

    /// `rest` is what follows `/api/v1` or `/apis/<group>/<version>`.
    fn resource(&self, group: &str, version: &str, rest: &[&str]) -> Response {
        let (namespace, plural, tail) = match rest {
            ["namespaces", namespace, plural, tail @ ..] => (Some(*namespace), *plural, tail),
            [plural, tail @ ..] => (None, *plural, tail),
            [] => return not_found(),
        };
        let (name, subresource) = (tail.first().copied(), tail.get(1).copied());
        self.audit(group, plural, namespace, name, subresource);
        if self.shared.is_forbidden(group, plural) {
            let (user, verb) =
                ("system:serviceaccount:default:lgtm-agent", if self.flag("watch") { "watch" } else { "list" });
            let qualified = if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") };
            let message = format!(
                "{qualified} is forbidden: User \"{user}\" cannot {verb} resource \"{plural}\" in API group \"{group}\" at the cluster scope"
            );
            return status(StatusCode::FORBIDDEN, "Forbidden", &message);
        }
        if tail.len() > 2 || subresource.is_some_and(|s| s != "status") {
            return not_found();
        }
        let Some(rt) = self.shared.read(|s| s.registry().by_plural(group, version, plural).cloned()) else {
            return not_found();
        };
        if namespace.is_some() && !rt.namespaced {
            return not_found();
        }
        let namespace = if rt.namespaced { namespace } else { None };
        let m = self.method;
        match name {
            None if m == Method::GET && self.flag("watch") => self.watch(rt, namespace),
            None if m == Method::GET => self.list(&rt, namespace),
            None if m == Method::POST => self.write(StatusCode::CREATED, |store, object| {
                let ns = namespace_for(&rt, namespace, &object);
                store.create(&rt, &ns, object)
            }),
            Some(name) if m == Method::GET => {
                let ns = namespace.unwrap_or("");
                respond(self.shared.read(|s| s.get(&rt, ns, name)).map(|o| (*o).clone()), StatusCode::OK)
            }
            Some(name) if m == Method::PUT => self.write(StatusCode::OK, |store, object| {
                let ns = namespace_for(&rt, namespace, &object);
                store.update(&rt, &ns, name, object)
            }),
            Some(name) if m == Method::PATCH => self.patch(&rt, namespace.unwrap_or(""), name),
            Some(name) if m == Method::DELETE => {
                let ns = namespace.unwrap_or("");
                respond(self.shared.write(|s| s.delete(&rt, ns, name)).map(|o| (*o).clone()), StatusCode::OK)
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "the server does not allow this method"),
        }
    }

    /// Audits a request of a hidden group (`rest` follows `/apis/<group>/<version>`).
    fn audit_path(&self, group: &str, rest: &[&str]) {
        let (namespace, plural, tail) = match rest {
            ["namespaces", namespace, plural, tail @ ..] => (Some(*namespace), *plural, tail),
            [plural, tail @ ..] => (None, *plural, tail),
            [] => return,
        };
        self.audit(group, plural, namespace, tail.first().copied(), tail.get(1).copied());
    }

    /// Records the request in the audit log with the verb RBAC would check.
    fn audit(&self, group: &str, plural: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>) {
        let m = self.method;
        let verb = match name {
            None if m == Method::GET && self.flag("watch") => "watch",
            None if m == Method::GET => "list",
            None if m == Method::POST => "create",
            None if m == Method::DELETE => "deletecollection",
            _ if m == Method::GET => "get",
            _ if m == Method::PUT => "update",
            _ if m == Method::PATCH => "patch",
            _ if m == Method::DELETE => "delete",
            _ => m.as_str(),
        };
        // A list or watch of one object by `fieldSelector=metadata.name=<name>` is authorized
        // against `resourceNames` like a get.
        let selected = self.param("fieldSelector").strip_prefix("metadata.name=").filter(|n| !n.contains(','));
        self.shared.record(ApiCall {
            verb: verb.into(),
            group: group.into(),
            resource: sub.map_or_else(|| plural.to_string(), |s| format!("{plural}/{s}")),
            namespace: namespace.map(str::to_string),
            name: name.or(selected).map(str::to_string),
        });
    }

    fn selectors(&self) -> Result<(LabelSelector, FieldSelector), BadRequest> {
        let bad = |e: super::selectors::SelectorError| BadRequest(e.to_string());
        Ok((
            LabelSelector::parse(self.param("labelSelector")).map_err(bad)?,
            FieldSelector::parse(self.param("fieldSelector")).map_err(bad)?,
        ))
    }

    /// LIST ignores `limit` and answers everything at once, without a `continue` token.
    fn list(&self, rt: &ResourceType, namespace: Option<&str>) -> Response {
        let (labels, fields) = match self.selectors() {
            Ok(s) => s,
            Err(bad) => return bad.into_response(),
        };
        let (objects, resource_version) = self.shared.read(|s| (s.list(rt, namespace), s.resource_version()));
        let items: Vec<Value> =
            objects.iter().filter(|o| labels.matches(o) && fields.matches(o)).map(|o| (**o).clone()).collect();
        ok(json!({
            "kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": resource_version.to_string()}, "items": items,
        }))
    }

    fn watch(&self, rt: ResourceType, namespace: Option<&str>) -> Response {
        let (labels, fields) = match self.selectors() {
            Ok(s) => s,
            Err(bad) => return bad.into_response(),
        };
        let start = match self.param("resourceVersion") {
            _ if self.flag("sendInitialEvents") => WatchStart::CurrentState { mark_end: true },
            "" | "0" => WatchStart::CurrentState { mark_end: false },
            rv => match rv.parse() {
                Ok(rv) => WatchStart::After(rv),
                Err(_) => {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", &format!("invalid resourceVersion {rv:?}"))
                }
            },
        };
        let request = WatchRequest {
            resource: rt,
            namespace: namespace.map(str::to_string),
            labels,
            fields,
            start,
            bookmarks: self.flag("allowWatchBookmarks"),
            timeout: self.param("timeoutSeconds").parse().ok().map(Duration::from_secs),
        };
        let body = watch::stream(self.shared.clone(), request);
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }

    fn body_object(&self) -> Result<Value, BadRequest> {
        let parsed = serde_json::from_slice::<Value>(self.body)
            .or_else(|json_error| serde_yaml::from_slice::<Value>(self.body).map_err(|_| json_error.to_string()));
        match parsed {
            Ok(object) if object.is_object() => Ok(object),
            Ok(_) => Err(BadRequest("the body is not an object".into())),
            Err(e) => Err(BadRequest(format!("invalid body: {e}"))),
        }
    }

    fn write(
        &self,
        success: StatusCode,
        op: impl FnOnce(&mut Store, Value) -> Result<Arc<Value>, StoreError>,
    ) -> Response {
        match self.body_object() {
            Ok(object) => respond(self.shared.write(|s| op(s, object)).map(|o| (*o).clone()), success),
            Err(bad) => bad.into_response(),
        }
    }

    fn patch(&self, rt: &ResourceType, namespace: &str, name: &str) -> Response {
        let content_type = self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let creates = match content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => false,
            "application/apply-patch+yaml" => true,
            other => {
                let message = format!("the fake API server does not support patch type {other:?}");
                return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", &message);
            }
        };
        let patch = match self.body_object() {
            Ok(patch) => patch,
            Err(bad) => return bad.into_response(),
        };
        let result = self.shared.write(|store| match store.get(rt, namespace, name) {
            Ok(current) => {
                let mut object = (*current).clone();
                merge_patch(&mut object, &patch);
                store.update(rt, namespace, name, object)
            }
            Err(StoreError::NotFound { .. }) if creates => {
                let mut object = patch;
                super::store::set_meta(&mut object, "name", Value::from(name));
                store.create(rt, namespace, object)
            }
            Err(e) => Err(e),
        });
        respond(result.map(|o| (*o).clone()), StatusCode::OK)
    }
}

/// A request the server cannot make sense of: `400 BadRequest` with this message.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        status(StatusCode::BAD_REQUEST, "BadRequest", &self.0)
    }
}

/// The namespace a created or updated object goes in: the path's, else its own, else `default`.
fn namespace_for(rt: &ResourceType, path_namespace: Option<&str>, object: &Value) -> String {
    if !rt.namespaced {
        return String::new();
    }
    path_namespace
        .or_else(|| object["metadata"]["namespace"].as_str())
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// JSON merge patch (RFC 7386): objects merge key by key, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn respond(result: Result<Value, StoreError>, success: StatusCode) -> Response {
    match result {
        Ok(object) => (success, [(header::CONTENT_TYPE, "application/json")], object.to_string()).into_response(),
        Err(e) => {
            let (code, reason) = match &e {
                StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "NotFound"),
                StoreError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
                StoreError::Conflict { .. } => (StatusCode::CONFLICT, "Conflict"),
                StoreError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            };
            status(code, reason, &e.to_string())
        }
    }
}

fn ok(value: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

fn not_found() -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")
}

/// A `Status` failure response.
pub(crate) fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, [(header::CONTENT_TYPE, "application/json")], Body::from(body.to_string())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}, "h": [1]}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "h": [1]}));
    }
}
