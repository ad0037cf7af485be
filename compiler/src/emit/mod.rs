//! Stage 5, emit: the [`Plan`] in, Kubernetes objects (as JSON values) out.
//!
//! - [`workload`]: the extproc's ServiceAccount, ConfigMap, Deployment, Service and
//!   PodDisruptionBudget, from the minijinja templates in `templates/`, each parsed back into its
//!   typed k8s-openapi object so that a template mistake is a build error, not a broken manifest;
//! - [`routing`]: HTTPRoutes, HTTPRouteFilters, ReferenceGrants, the EnvoyExtensionPolicy and the
//!   rate-limit BackendTrafficPolicy;
//! - pass-through objects, normalised: server-set fields removed, namespace defaulted;
//! - [`envoy`]: the standalone target, which translates the routing objects into an Envoy
//!   bootstrap as Envoy Gateway would, plus the extproc's files.
//!
//! Every generated object carries the `app.kubernetes.io/managed-by: aigw` label and the
//! `aigateway.envoyproxy.io/generated-from` annotation naming its source.

pub mod attempts;
pub mod envoy;
pub mod jsonpatch;
pub mod local_reply;
pub mod ratelimit;
pub mod routing;
pub mod shard;
pub mod workload;

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::diag::Diagnostic;
use crate::plan::Plan;
use crate::render::Rendered;
use crate::validate::{ObjectId, Validated};

/// Label every generated object carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "aigw");
/// Annotation naming the object a generated object comes from.
pub const GENERATED_FROM: &str = "aigateway.envoyproxy.io/generated-from";

/// `Kind/namespace/name` of a source object.
pub fn lineage(id: &ObjectId) -> String {
    format!("{}/{}/{}", id.kind, id.namespace, id.name)
}

/// Standard metadata of a generated object.
pub fn metadata(
    name: &str,
    namespace: &str,
    source: &ObjectId,
    mut labels: BTreeMap<String, String>,
) -> Value {
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    json!({
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "annotations": {GENERATED_FROM: lineage(source)},
    })
}

/// A generated object, finished and rendered: it carries [`FLUX_SUBSTITUTE`] and every default
/// its CRD declares.
fn finish(mut value: Value) -> Rendered {
    crate::validate::defaults::apply(&mut value);
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(FLUX_SUBSTITUTE.0.into(), FLUX_SUBSTITUTE.1.into());
        }
    }
    Rendered::new(value)
}

/// Annotation telling Flux not to apply post-build variable substitution to an object: generated
/// objects carry it, so a `${...}` they hold (a header or body mutation value, a CEL expression)
/// reaches the cluster as written under Flux, Argo CD and kubectl alike. Objects passed through
/// are left as the user wrote them, substitution included.
pub const FLUX_SUBSTITUTE: (&str, &str) = ("kustomize.toolkit.fluxcd.io/substitute", "disabled");

/// Emits every object of the plan, generated and passed through, each rendered as soon as it
/// is shaped so that the object trees of the whole output never exist at once.
pub fn emit(input: &Validated, plan: &Plan) -> Result<Vec<Rendered>, Vec<Diagnostic>> {
    let mut objects: Vec<Rendered> = Vec::new();
    let mut errors = Vec::new();
    let emitted = crate::parallel::map(&plan.instances, |instance| {
        let mut objects = Vec::new();
        let mut errors = Vec::new();
        match workload::emit(instance) {
            // A large Gateway's config parts render on every core.
            Ok(values) => objects.extend(crate::parallel::map_owned(values, finish)),
            Err(mut found) => errors.append(&mut found),
        }
        match routing::emit_with(instance, finish) {
            Ok(mut rendered) => objects.append(&mut rendered),
            Err(mut found) => errors.append(&mut found),
        }
        (objects, errors)
    });
    for (mut found, mut failed) in emitted {
        objects.append(&mut found);
        errors.append(&mut failed);
    }
    let generated = objects.len();
    let passthrough: Vec<usize> = plan
        .passthrough
        .iter()
        .chain(&plan.secrets)
        .copied()
        .collect();
    objects.extend(crate::parallel::map(&passthrough, |&index| {
        let document = input.document(&input.objects[index]);
        if crate::validate::is_sops_encrypted(&document.value) {
            // Re-serialised, its keys would be re-ordered and `sops --decrypt` would fail with
            // a MAC mismatch.
            return Rendered::verbatim(&document.value, document.source_text());
        }
        let mut value = normalize(&document.value);
        crate::validate::defaults::apply(&mut value);
        Rendered::new(value)
    }));
    for object in &objects[..generated] {
        if object.text.len() > MAX_OBJECT_BYTES {
            errors.push(Diagnostic::error(format!(
                "{} {}/{} would be {} KiB, more than the {} KiB every generated object is kept under: kubectl and Argo CD store a copy of each object they apply in an annotation of at most 256 KiB",
                object.kind,
                object.namespace,
                object.name,
                object.text.len() / 1024,
                MAX_OBJECT_BYTES / 1024
            )));
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

/// Largest generated object, in bytes of YAML: client-side apply (`kubectl apply`, Argo CD's
/// default sync) keeps a copy in the 256 KiB `last-applied-configuration` annotation.
pub const MAX_OBJECT_BYTES: usize = 240 * 1024;

/// Removes what the API server sets, so that objects exported from a cluster become
/// desired state again: `status` and the server-managed metadata.
pub fn normalize(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "managedFields",
                "generation",
                "selfLink",
                "ownerReferences",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                meta.remove(key);
            }
            if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
                annotations.remove("deployment.kubernetes.io/revision");
                if annotations.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    // A Service's cluster IPs are allocated by the cluster; only a headless `None` is desired state.
    if value.get("kind").and_then(Value::as_str) == Some("Service")
        && value.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && let Some(spec) = value.get_mut("spec").and_then(Value::as_object_mut)
        && spec.get("clusterIP").and_then(Value::as_str) != Some("None")
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    value
}

/// Deserializes `value` into `T` and back, and fails when anything was lost or changed on the
/// way: a field `T` does not have, a wrong type. Returns the typed object's JSON.
pub fn through_typed<T: DeserializeOwned + Serialize>(
    value: Value,
    what: &str,
) -> Result<Value, String> {
    let typed: T = serde_path_to_error::deserialize(&value)
        .map_err(|err| format!("{what}: field {}: {}", err.path(), err.inner()))?;
    let back = serde_json::to_value(&typed).map_err(|err| format!("{what}: {err}"))?;
    let mut expected = value;
    crate::validate::schema::drop_nulls(&mut expected);
    // Equal trees are the common case; only a difference is worth locating.
    if expected == back {
        return Ok(back);
    }
    if let Some(path) = first_difference(&expected, &back, String::new()) {
        return Err(format!(
            "{what}: field {path} is not part of the typed object or changed type"
        ));
    }
    Ok(back)
}

fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let child = format!("{path}.{key}");
                match (x.get(key), y.get(key)) {
                    (Some(left), Some(right)) => {
                        if let Some(found) = first_difference(left, right, child) {
                            return Some(found);
                        }
                    }
                    (Some(left), None) if is_empty(left) => {}
                    (None, Some(right)) if is_empty(right) => {}
                    _ => return Some(child.trim_start_matches('.').to_string()),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(path.trim_start_matches('.').to_string());
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (l, r))| first_difference(l, r, format!("{path}[{i}]")))
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(path.trim_start_matches('.').to_string()),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_round_trip_catches_unknown_fields() {
        let good = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        assert!(through_typed::<k8s_openapi::api::core::v1::ConfigMap>(good, "ConfigMap").is_ok());
        let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "dta": {"k": "v"}});
        let err =
            through_typed::<k8s_openapi::api::core::v1::ConfigMap>(bad, "ConfigMap").unwrap_err();
        assert!(err.contains("dta"), "{err}");
    }

    #[test]
    fn normalize_drops_server_fields() {
        let exported = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a", "namespace": "n", "uid": "x", "resourceVersion": "1", "ownerReferences": [],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "status": {}
        });
        assert_eq!(
            normalize(&exported),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"}})
        );
    }
}
