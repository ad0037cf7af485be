//! Stage 6, render: objects in, canonical YAML out.
//!
//! Canonical means: objects in a fixed kind order (namespaces, service accounts, config,
//! services, workloads, Gateway API, Envoy Gateway policies, other custom resources), then by
//! namespace and name; keys sorted; strings that a YAML 1.1 reader such as kubectl would
//! misread (`no`, `on`, `0444`, dates) quoted; multi-line strings as literal blocks. Values are
//! written as they are (`${` too: generated objects carry Flux's
//! `kustomize.toolkit.fluxcd.io/substitute: disabled` instead, see [`crate::emit`]). The same
//! objects always give the same bytes.

use std::cmp::Ordering;

use serde_json::Value;

/// The rank of a kind in the output order.
pub fn kind_rank(api_version: &str, kind: &str) -> u8 {
    let group = crate::validate::split_api_version(api_version).0;
    match (group, kind) {
        ("", "Namespace") => 0,
        ("apiextensions.k8s.io", _) => 1,
        ("", "ServiceAccount") => 2,
        ("rbac.authorization.k8s.io", _) => 3,
        ("", "Secret") => 4,
        ("", "ConfigMap") => 5,
        ("", "Service") => 6,
        ("apps", _) | ("batch", _) | ("", "Pod") => 7,
        ("policy", _) | ("autoscaling", _) => 8,
        ("gateway.networking.k8s.io", "GatewayClass") => 9,
        ("gateway.networking.k8s.io", "Gateway") => 10,
        ("gateway.networking.k8s.io", _) | ("gateway.networking.x-k8s.io", _) => 11,
        ("gateway.envoyproxy.io", "EnvoyProxy") => 12,
        ("gateway.envoyproxy.io", "Backend") | ("gateway.envoyproxy.io", "HTTPRouteFilter") => 13,
        ("gateway.envoyproxy.io", _) => 14,
        ("", _) => 6,
        _ => 15,
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The canonical sort key of an object: kind rank, group, kind, namespace, name.
fn sort_key(v: &Value) -> (u8, &str, &str, &str, &str) {
    let api_version = text(v, "/apiVersion");
    let kind = text(v, "/kind");
    (
        kind_rank(api_version, kind),
        crate::validate::split_api_version(api_version).0,
        kind,
        text(v, "/metadata/namespace"),
        text(v, "/metadata/name"),
    )
}

/// Orders objects canonically.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    sort_key(a).cmp(&sort_key(b))
}

/// Sorts objects canonically (keys computed once per object).
pub fn sort(objects: &mut [Value]) {
    let mut order: Vec<usize> = (0..objects.len()).collect();
    let keys: Vec<_> = objects.iter().map(sort_key).collect();
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    let mut taken: Vec<Option<Value>> = objects
        .iter_mut()
        .map(|v| Some(std::mem::take(v)))
        .collect();
    for (slot, index) in objects.iter_mut().zip(order) {
        *slot = taken[index].take().unwrap_or_default();
    }
}

fn options() -> serde_saphyr::SerializerOptions {
    serde_saphyr::ser_options! {
        indent_step: 2,
        folded_wrap_chars: 1_000_000,
    }
}

/// One value as a YAML document (no `---`), keys sorted, ending in a newline.
pub fn yaml(value: &Value) -> String {
    let mut out = serde_saphyr::to_string_with_options(value, options()).unwrap_or_else(|err| {
        // Serializing a JSON value cannot fail short of a bug in the writer; say so in the output
        // rather than losing it.
        format!("# aigw could not render this object: {err}\n")
    });
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// An object rendered to its canonical YAML, with the identity it is sorted and named by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace` (empty when cluster-scoped).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The YAML document (no `---`), ending in a newline.
    pub text: String,
}

impl Rendered {
    /// An object whose bytes are `text`, as the user wrote them (`value` is the same object,
    /// parsed, for its identity).
    pub fn verbatim(value: &Value, bytes: String) -> Self {
        Rendered {
            api_version: text(value, "/apiVersion").to_string(),
            kind: text(value, "/kind").to_string(),
            namespace: text(value, "/metadata/namespace").to_string(),
            name: text(value, "/metadata/name").to_string(),
            text: bytes,
        }
    }

    /// Renders `value`.
    pub fn new(value: Value) -> Self {
        Rendered {
            api_version: text(&value, "/apiVersion").to_string(),
            kind: text(&value, "/kind").to_string(),
            namespace: text(&value, "/metadata/namespace").to_string(),
            name: text(&value, "/metadata/name").to_string(),
            text: yaml(&value),
        }
    }

    fn key(&self) -> (u8, &str, &str, &str, &str) {
        (
            kind_rank(&self.api_version, &self.kind),
            crate::validate::split_api_version(&self.api_version).0,
            &self.kind,
            &self.namespace,
            &self.name,
        )
    }
}

/// Sorts rendered objects canonically.
pub fn sort_rendered(objects: &mut [Rendered]) {
    objects.sort_by(|a, b| a.key().cmp(&b.key()));
}

/// The rendered objects as one stream, each introduced by `---`.
pub fn join(objects: &[Rendered]) -> String {
    let mut out = String::with_capacity(objects.iter().map(|o| o.text.len() + 4).sum());
    for object in objects {
        out.push_str("---\n");
        out.push_str(&object.text);
    }
    out
}

/// Renders every object, on the available cores; the result is in input order.
pub fn yaml_all(objects: &[Value]) -> Vec<String> {
    crate::parallel::map(objects, yaml)
}

/// A multi-document stream of objects, each introduced by `---`.
pub fn stream(objects: &[Value]) -> String {
    let rendered = yaml_all(objects);
    let mut out = String::with_capacity(rendered.iter().map(|r| r.len() + 4).sum());
    for text in rendered {
        out.push_str("---\n");
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_11_ambiguities_are_quoted_and_read_back_as_strings() {
        let value = json!({"a": "no", "b": "on", "c": "0444", "d": "2025-01-01", "e": "1e3", "f": "y", "g": "null", "h": "~", "i": 444});
        let text = yaml(&value);
        for ambiguous in ["no", "on", "0444", "2025-01-01", "1e3", "y", "null", "~"] {
            assert!(
                !text.contains(&format!(": {ambiguous}\n")),
                "{ambiguous} unquoted in:\n{text}"
            );
        }
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn multi_line_strings_are_literal_blocks_and_long_lines_stay_whole() {
        let long = "x ".repeat(100);
        let value = json!({"config": "a: 1\nb: [2]\n", "long": long.trim_end()});
        let text = yaml(&value);
        assert!(text.contains("config: |"), "{text}");
        assert!(
            text.contains(&format!("long: {}", long.trim_end())),
            "{text}"
        );
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn keys_are_sorted() {
        let text = yaml(&json!({"b": 1, "a": {"d": 1, "c": 2}}));
        assert_eq!(text, "a:\n  c: 2\n  d: 1\nb: 1\n");
    }

    #[test]
    fn kind_order() {
        let mut objects = vec![
            json!({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyExtensionPolicy", "metadata": {"name": "a", "namespace": "n"}}),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "a", "namespace": "n"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "n"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "n"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}),
        ];
        sort(&mut objects);
        let order: Vec<String> = objects
            .iter()
            .map(|o| format!("{}/{}", text(o, "/kind"), text(o, "/metadata/name")))
            .collect();
        assert_eq!(
            order,
            [
                "Namespace/n",
                "ConfigMap/a",
                "ConfigMap/b",
                "Deployment/a",
                "HTTPRoute/a",
                "EnvoyExtensionPolicy/a"
            ]
        );
    }
}
