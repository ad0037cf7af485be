//! External processing: the `ext_proc` HTTP filters of an EnvoyExtensionPolicy, as Envoy Gateway
//! builds them, and the label selectors of its `targetSelectors`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::cluster::grpc_socket_cluster;
use super::gateway::GatewayContext;
use super::{
    EXT_PROC_FILTER, EXT_SERVICE_TIMEOUT, Emitter, duration_ms, items, name_of, of_kind,
    proto_duration, text, typed,
};
use crate::model::GATEWAY_GROUP;

/// The EnvoyExtensionPolicy of a Gateway, translated filter by filter.
#[derive(Default)]
pub(super) struct Extensions {
    /// The `ext_proc` HTTP filters, disabled on the HTTP connection manager.
    pub(super) filters: Vec<Value>,
    /// Their names, which every route of a targeted HTTPRoute enables.
    pub(super) names: Vec<String>,
    /// The HTTPRoutes the policy targets, by name.
    pub(super) targets: BTreeSet<String>,
}

impl Emitter<'_> {
    /// The filters of the generated EnvoyExtensionPolicies among `objects`, with the clusters
    /// of their sockets, and the HTTPRoutes (of `routes`) they apply to.
    pub(super) fn extension_filters(
        &mut self,
        gateway: &GatewayContext,
        objects: &[Value],
        routes: &[&Value],
    ) -> Extensions {
        let mut out = Extensions::default();
        for policy in of_kind(objects, "EnvoyExtensionPolicy") {
            self.extension_policy(gateway, policy, routes, &mut out);
        }
        out
    }

    /// One EnvoyExtensionPolicy: its `extProc` filters, then its targets. Filters the
    /// standalone target cannot run are errors.
    fn extension_policy(
        &mut self,
        gateway: &GatewayContext,
        policy: &Value,
        routes: &[&Value],
        out: &mut Extensions,
    ) {
        let policy_ns = text(policy, "/metadata/namespace").unwrap_or_default();
        let policy_name = name_of(policy);
        for list in ["wasm", "lua", "dynamicModule"] {
            if !items(policy, &format!("/spec/{list}")).is_empty() {
                self.errors.push(gateway.fail(format!(
                    "EnvoyExtensionPolicy {policy_ns}/{policy_name} carries {list} filters merged from the input, which the standalone target cannot run; leave them out of the input for `--target envoy`"
                )));
            }
        }
        let entries = items(policy, "/spec/extProc");
        if entries.len() > 1 {
            self.errors.push(gateway.fail(format!(
                "EnvoyExtensionPolicy {policy_ns}/{policy_name} carries ext_proc filters merged from the input, whose Kubernetes Services the standalone target cannot reach; leave them out of the input for `--target envoy`"
            )));
            return;
        }
        for (i, entry) in entries.iter().enumerate() {
            let config_name = format!("envoyextensionpolicy/{policy_ns}/{policy_name}/extproc/{i}");
            let filter_name = format!("{EXT_PROC_FILTER}/{config_name}");
            match ext_proc_filter(&filter_name, &config_name, policy_ns, entry) {
                Ok(filter) => out.filters.push(filter),
                Err(err) => {
                    self.errors
                        .push(gateway.fail(format!("internal error: EnvoyExtensionPolicy: {err}")));
                    continue;
                }
            }
            self.clusters.insert(
                config_name.clone(),
                grpc_socket_cluster(&config_name, &gateway.socket),
            );
            self.referenced.insert(config_name.clone());
            out.names.push(filter_name);
        }
        out.targets.extend(policy_targets(policy, routes));
    }
}

/// The HTTPRoutes an EnvoyExtensionPolicy targets: by `targetRefs`, and, as Envoy Gateway
/// resolves `targetSelectors`, the HTTPRoutes of the policy's namespace (all of `routes` are)
/// whose labels a selector matches.
fn policy_targets(policy: &Value, routes: &[&Value]) -> Vec<String> {
    let mut targets = Vec::new();
    for target in items(policy, "/spec/targetRefs") {
        if text(target, "/kind") == Some("HTTPRoute") {
            targets.push(text(target, "/name").unwrap_or_default().to_string());
        }
    }
    for selector in items(policy, "/spec/targetSelectors") {
        let group = text(selector, "/group").unwrap_or(GATEWAY_GROUP);
        if text(selector, "/kind") != Some("HTTPRoute") || group != GATEWAY_GROUP {
            continue;
        }
        for route in routes {
            if label_selector_matches(selector, route.pointer("/metadata/labels")) {
                targets.push(name_of(route));
            }
        }
    }
    targets
}

/// Whether a Kubernetes label selector holds for `labels` (an object's `metadata.labels`), as
/// [`crate::resolve::selector_matches`] evaluates it; an operator it does not know holds for
/// nothing.
pub(super) fn label_selector_matches(selector: &Value, labels: Option<&Value>) -> bool {
    let labels: BTreeMap<String, String> = labels
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
        .collect();
    crate::resolve::selector_matches(selector, &labels).unwrap_or(false)
}

/// The `ext_proc` filter for one EnvoyExtensionPolicy `extProc` entry, as Envoy Gateway builds
/// it (disabled here, enabled per route).
///
/// The gRPC `:authority` is the backend Service's host, `<name>.<namespace>:<port>`, as Envoy
/// Gateway sets it; without it Envoy would send the cluster name, whose slashes HTTP/2 servers
/// reject.
pub(super) fn ext_proc_filter(
    name: &str,
    cluster: &str,
    namespace: &str,
    entry: &Value,
) -> Result<Value, String> {
    let mut config = Map::new();
    let backend = entry.pointer("/backendRefs/0");
    let authority = match backend {
        Some(b) => format!(
            "{}.{}:{}",
            b.get("name").and_then(Value::as_str).unwrap_or_default(),
            b.get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(namespace),
            b.get("port").and_then(Value::as_i64).unwrap_or(80)
        ),
        None => cluster.replace('/', "."),
    };
    config.insert(
        "grpc_service".into(),
        json!({"envoy_grpc": {"cluster_name": cluster, "authority": authority}, "timeout": EXT_SERVICE_TIMEOUT}),
    );
    let body_mode = |mode: Option<&str>| -> Result<&'static str, String> {
        Ok(match mode {
            None => "NONE",
            Some("Buffered") => "BUFFERED",
            Some("BufferedPartial") => "BUFFERED_PARTIAL",
            Some("Streamed") => "STREAMED",
            Some("FullDuplexStreamed") => "FULL_DUPLEX_STREAMED",
            Some(other) => return Err(format!("unknown body processing mode {other:?}")),
        })
    };
    let mode = entry.get("processingMode");
    let request = mode.and_then(|m| m.get("request"));
    let response = mode.and_then(|m| m.get("response"));
    let request_body = body_mode(request.and_then(|r| text(r, "/body")))?;
    let response_body = body_mode(response.and_then(|r| text(r, "/body")))?;
    let trailer = |body: &str| {
        if body == "FULL_DUPLEX_STREAMED" {
            "SEND"
        } else {
            "SKIP"
        }
    };
    let mut processing = json!({
        "request_header_mode": if request.is_some() { "SEND" } else { "SKIP" },
        "response_header_mode": if response.is_some() { "SEND" } else { "SKIP" },
        "request_trailer_mode": trailer(request_body),
        "response_trailer_mode": trailer(response_body),
    });
    if request_body != "NONE" {
        processing["request_body_mode"] = json!(request_body);
    }
    if response_body != "NONE" {
        processing["response_body_mode"] = json!(response_body);
    }
    config.insert("processing_mode".into(), processing);
    if let Some(fail_open) = entry.get("failOpen").and_then(Value::as_bool) {
        config.insert("failure_mode_allow".into(), json!(fail_open));
    }
    if let Some(timeout) = entry.get("messageTimeout").and_then(Value::as_str) {
        let ms = duration_ms(timeout).ok_or_else(|| format!("messageTimeout {timeout:?}"))?;
        config.insert("message_timeout".into(), json!(proto_duration(ms)));
    }
    for (side, envoy) in [
        (request, "request_attributes"),
        (response, "response_attributes"),
    ] {
        if let Some(list) = side.and_then(|s| s.get("attributes")) {
            config.insert(envoy.into(), list.clone());
        }
    }
    let mut metadata = Map::new();
    for (field, envoy) in [
        ("/metadata/accessibleNamespaces", "forwarding_namespaces"),
        ("/metadata/writableNamespaces", "receiving_namespaces"),
    ] {
        if let Some(list) = entry.pointer(field) {
            metadata.insert(envoy.into(), json!({"untyped": list}));
        }
    }
    if !metadata.is_empty() {
        config.insert("metadata_options".into(), Value::Object(metadata));
    }
    if let Some(allow) = mode
        .and_then(|m| m.get("allowModeOverride"))
        .and_then(Value::as_bool)
    {
        config.insert("allow_mode_override".into(), json!(allow));
    }
    Ok(json!({
        "name": name,
        "disabled": true,
        "typed_config": typed("envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor", Value::Object(config)),
    }))
}
