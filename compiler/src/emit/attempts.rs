//! One attempt, one translation: the EnvoyPatchPolicies that let Envoy balance, retry and fall
//! back between the backends of an AIGatewayRoute rule, with the extproc translating each
//! attempt for the backend it reached (`docs/routing.md`).
//!
//! Each AIGatewayRoute rule is one HTTPRoute rule listing its backends, which Envoy Gateway
//! makes one cluster `httproute/<ns>/<name>/rule/<i>` with one locality per backendRef. Envoy
//! Gateway has no API for the rest, so these patches add it, by the xDS names Envoy Gateway
//! v1.8 generates (`internal/xds/translator`):
//!
//! - the extproc as an upstream HTTP filter of the cluster (before `upstream_codec`, in the
//!   cluster's `HttpProtocolOptions`), opening one stream per attempt with the initial
//!   metadata `x-aigw-role: upstream` and the attempt's `upstream.locality`;
//! - `backendRef.priority` as the priority of the backendRef's locality (the inline
//!   `load_assignment` of a `STRICT_DNS` cluster, or the ClusterLoadAssignment of an EDS one);
//! - `streamIdleTimeout` as `retry_policy.per_try_idle_timeout` of every route of the rule
//!   (selected by the cluster they route to, in the route configuration of each listener the
//!   HTTPRoute attaches to), which Envoy Gateway's JSON patch creates with the retry policy
//!   when the rule has none.
//!
//! Retries stay the user's: a BackendTrafficPolicy `retry` on the HTTPRoute named after the
//! AIGatewayRoute, which Envoy Gateway translates itself.
//!
//! Envoy Gateway must run with `extensionApis.enableEnvoyPatchPolicy: true`.

use serde_json::{Value, json};

use super::metadata;
use crate::model::GATEWAY_GROUP;
use crate::plan::{self, BackendRule, HttpRoutePlan, Instance, Selection};

/// Suffix of the policies' names (`aigw-extproc-<gateway>-upstream`, `…-upstream-2`, ...).
pub const POLICY_SUFFIX: &str = "-upstream";

/// Name of the extproc filter in each rule cluster.
pub const UPSTREAM_FILTER: &str = "envoy.filters.http.ext_proc/aigw-upstream";
/// Envoy's key for the upstream HTTP protocol options of a cluster.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Largest patch list in one EnvoyPatchPolicy, as compact JSON (its YAML is about 1.3 times
/// larger, and must stay under [`super::MAX_OBJECT_BYTES`]); the rest go to further policies.
const MAX_PATCH_BYTES: usize = 150 * 1024;

/// The xDS cluster Envoy Gateway makes for the generated EnvoyExtensionPolicy's extproc entry,
/// which the upstream filter calls too.
pub fn extproc_cluster(instance: &Instance) -> String {
    let ours = instance
        .extension_policy
        .merged
        .get("extProc")
        .map_or(0, Vec::len);
    format!(
        "envoyextensionpolicy/{}/{}/extproc/{ours}",
        instance.namespace, instance.extension_policy.name
    )
}

/// The upstream HTTP filters of a rule cluster: the extproc, then the codec.
pub fn upstream_filters(instance: &Instance) -> Value {
    let authority = format!(
        "{}.{}:{}",
        instance.name,
        instance.namespace,
        plan::GRPC_PORT
    );
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {
            "envoy_grpc": {"cluster_name": extproc_cluster(instance), "authority": authority},
            "timeout": "10s",
            "initial_metadata": [{"key": aigw_filterconfig::ROLE_METADATA, "value": aigw_filterconfig::UPSTREAM_ROLE}],
        },
        "processing_mode": {
            "request_header_mode": "SEND",
            "request_body_mode": "BUFFERED",
            "response_header_mode": "SKIP",
            "request_trailer_mode": "SKIP",
            "response_trailer_mode": "SKIP",
        },
        "request_attributes": ["upstream.locality"],
        "message_timeout": "30s",
        "failure_mode_allow": false,
        // The attempt's Host is the backend's: one cluster spans the rule's Backends.
        "mutation_rules": {"allow_all_routing": true},
    });
    // Envoy hands every attempt the request headers the attempt before it left; each attempt
    // records the values it changed first under ATTEMPT_METADATA_NAMESPACE, and the next one
    // reads them back to start from the request as the router passed it.
    let attempt = aigw_filterconfig::ATTEMPT_METADATA_NAMESPACE.to_string();
    let mut forwarding = accessible_namespaces(instance);
    forwarding.push(attempt.clone());
    forwarding.sort();
    config["metadata_options"] = json!({
        "forwarding_namespaces": {"untyped": forwarding},
        "receiving_namespaces": {"untyped": [attempt]},
    });
    json!([
        {"name": UPSTREAM_FILTER, "typed_config": config},
        {
            "name": "envoy.filters.http.upstream_codec",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
        },
    ])
}

/// Dynamic metadata namespaces the extproc reads per-request credentials from.
pub fn accessible_namespaces(instance: &Instance) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> = instance
        .config
        .backends
        .iter()
        .filter_map(|b| {
            b.auth
                .as_ref()?
                .credential_override
                .as_ref()?
                .metadata_namespace
                .as_deref()
        })
        .collect();
    set.into_iter().map(str::to_string).collect()
}

/// Whether any rule of the instance is balanced by Envoy.
pub fn any(instance: &Instance) -> bool {
    instance
        .routes
        .iter()
        .flat_map(|r| &r.rules)
        .any(|r| r.selection == Selection::Rule)
}

/// The patches that let the router's extproc filter (Envoy Gateway's, from the generated
/// EnvoyExtensionPolicy) set `:authority`, on each listener of the Gateway: the router names a
/// rule's virtual host by it ([`aigw_filterconfig::RouteRule::authority`]), and Envoy's
/// ext_proc ignores changes to `:authority` unless `mutation_rules.allow_all_routing` says so,
/// which the EnvoyExtensionPolicy API cannot.
fn router_patches(instance: &Instance) -> Vec<Value> {
    let by_host = instance.routes.iter().any(|r| r.rule_authority.is_some());
    let Some(local_replies) = instance.local_replies.as_ref().filter(|_| by_host) else {
        return Vec::new();
    };
    let json_path = format!(
        "{}.http_filters[?(@.name=='envoy.filters.http.ext_proc/{}')].typed_config",
        super::routing::HCM_JSON_PATH,
        extproc_cluster(instance)
    );
    super::routing::listener_patches(
        &local_replies.listeners,
        &json_path,
        "/mutation_rules",
        &json!({"allow_all_routing": true}),
    )
}

/// The patches for one rule.
fn rule_patches(
    instance: &Instance,
    route: &HttpRoutePlan,
    rule: &BackendRule,
    filters: &Value,
) -> Vec<Value> {
    const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    const ASSIGNMENT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    let cluster = &rule.selector;
    let mut patches = Vec::new();
    let (path, value) = if rule.has_protocol_options() {
        (
            format!("/typed_extension_protocol_options/{HTTP_PROTOCOL_OPTIONS}/http_filters"),
            filters.clone(),
        )
    } else {
        (
            "/typed_extension_protocol_options".to_string(),
            json!({HTTP_PROTOCOL_OPTIONS: {
                "@type": format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"),
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": filters,
            }}),
        )
    };
    patches.push(json!({
        "type": CLUSTER,
        "name": cluster,
        "operation": {"op": "add", "path": path, "value": value},
    }));
    let dns = rule.targets.iter().any(|t| t.facts.dns);
    for (k, target) in rule.targets.iter().enumerate() {
        if target.priority == 0 {
            continue;
        }
        let (kind, path) = if dns {
            (CLUSTER, format!("/load_assignment/endpoints/{k}/priority"))
        } else {
            (ASSIGNMENT, format!("/endpoints/{k}/priority"))
        };
        patches.push(json!({
            "type": kind,
            "name": cluster,
            "operation": {"op": "add", "path": path, "value": target.priority},
        }));
    }
    if let Some(timeout) = rule
        .stream_idle_timeout
        .as_deref()
        .and_then(super::envoy::duration_ms)
    {
        for route_config in route_configs(instance, route) {
            patches.push(json!({
                "type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                "name": route_config,
                "operation": {
                    "op": "add",
                    "jsonPath": format!("$.virtual_hosts[*].routes[?(@.route.cluster=='{cluster}')]"),
                    "path": "/route/retry_policy/per_try_idle_timeout",
                    "value": super::envoy::proto_duration(timeout),
                },
            }));
        }
    }
    patches
}

/// The route configurations (named after the first listener of their port, as Envoy Gateway
/// names them) holding the routes of `route`: those of the listeners its parentRefs select.
fn route_configs(instance: &Instance, route: &HttpRoutePlan) -> Vec<String> {
    let listeners = &instance.listeners;
    let mut out: Vec<String> = Vec::new();
    for parent in &route.parent_refs {
        for listener in listeners {
            let selected = parent
                .section_name
                .as_ref()
                .is_none_or(|s| *s == listener.name)
                && parent.port.is_none_or(|p| i64::from(p) == listener.port);
            if selected && !out.contains(&listener.route_config) {
                out.push(listener.route_config.clone());
            }
        }
    }
    out
}

/// The EnvoyPatchPolicies of `instance` (none when no rule is balanced by Envoy), each holding
/// at most [`MAX_PATCH_BYTES`] of patches.
pub fn policies(instance: &Instance) -> Vec<Value> {
    let router = router_patches(instance);
    if !any(instance) && router.is_empty() {
        return Vec::new();
    }
    let filters = upstream_filters(instance);
    let mut groups: Vec<Vec<Value>> = vec![router];
    let mut size: usize = groups[0].iter().map(|p| p.to_string().len()).sum();
    for route in &instance.routes {
        for rule in route
            .rules
            .iter()
            .filter(|r| r.selection == Selection::Rule)
        {
            let patches = rule_patches(instance, route, rule, &filters);
            let bytes: usize = patches.iter().map(|p| p.to_string().len()).sum();
            if size + bytes > MAX_PATCH_BYTES && groups.last().is_some_and(|g| !g.is_empty()) {
                groups.push(Vec::new());
                size = 0;
            }
            size += bytes;
            if let Some(group) = groups.last_mut() {
                group.extend(patches);
            }
        }
    }
    let base = plan::bounded_name(&format!("{}{POLICY_SUFFIX}", instance.name), 253);
    groups
        .into_iter()
        .enumerate()
        .map(|(i, patches)| {
            let name = if i == 0 {
                base.clone()
            } else {
                plan::bounded_name(&format!("{base}-{}", i + 1), 253)
            };
            json!({
                "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                "kind": "EnvoyPatchPolicy",
                "metadata": metadata(&name, &instance.namespace, &instance.gateway, Default::default()),
                "spec": {
                    "targetRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "name": instance.gateway.name},
                    "type": "JSONPatch",
                    "priority": 0,
                    "jsonPatches": patches,
                },
            })
        })
        .collect()
}
