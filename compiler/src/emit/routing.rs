//! Routing objects of one instance: HTTPRoutes (checked against the gateway-api crate's types),
//! their HTTPRouteFilters, the ReferenceGrants their cross-namespace backendRefs need, the
//! EnvoyExtensionPolicy that puts the extproc on them, and the rate-limit BackendTrafficPolicy.
//! Every Gateway API and Envoy Gateway default is written out, so that what Argo CD or Flux
//! compares with the cluster is exactly what the API server stores.

use gateway_api::apis::standard::httproutes::HttpRoute;
use gateway_api::apis::standard::referencegrants::ReferenceGrant;
use serde_json::{Value, json};

use super::{GENERATED_FROM, MANAGED_BY, lineage, metadata, through_typed};
use crate::diag::Diagnostic;
use crate::model::{EG_GROUP, GATEWAY_GROUP};
use crate::plan::{self, HttpRoutePlan, Instance, RateLimitPlan};
use aigw_filterconfig::METADATA_NAMESPACE;

/// Label naming the extproc instance of a generated object; the EnvoyExtensionPolicy selects
/// the HTTPRoutes by it.
pub const EXTPROC_LABEL: &str = "aigw.envoyproxy.io/extproc";

/// Body of the catch-all answer, in the OpenAI error shape.
pub const NOT_FOUND_BODY: &str = r#"{"error":{"message":"No matching route found. It is likely because the model specified in your request is not configured in the Gateway.","type":"invalid_request_error","code":"model_not_found"}}"#;

/// Emits the routing objects of `instance`.
pub fn emit(instance: &Instance) -> Result<Vec<Value>, Vec<Diagnostic>> {
    emit_with(instance, |value| value)
}

/// Emits the routing objects of `instance`, each passed through `finish` (rendering, for the
/// Kubernetes target) as soon as it is shaped. The HTTPRoutes, thousands on a large Gateway,
/// are shaped and finished on every core.
pub fn emit_with<T: Send>(
    instance: &Instance,
    finish: impl Fn(Value) -> T + Sync,
) -> Result<Vec<T>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let fail = |message: String| {
        Diagnostic::error(format!(
            "Gateway {}/{}: internal error: {message}",
            instance.gateway.namespace, instance.gateway.name
        ))
    };
    // An AIGatewayRoute split into several HTTPRoutes shares its filters, and the routes of a
    // Gateway share the not-found filter of their catch-all: each written once, by the first
    // HTTPRoute that uses it.
    let mut filters_done = std::collections::BTreeSet::new();
    let jobs: Vec<(&HttpRoutePlan, [bool; 3])> = instance
        .routes
        .iter()
        .map(|route| {
            let mut first = |used: bool, name: &str| used && filters_done.insert(name.to_string());
            let rewrite = first(
                route.rules.iter().any(|r| !route.client_host(r)),
                &route.host_rewrite_filter,
            );
            let client = first(
                route.rules.iter().any(|r| route.client_host(r)),
                &route.client_host_filter,
            );
            let not_found = first(route.catch_all, &route.not_found_filter);
            (route, [rewrite, client, not_found])
        })
        .collect();
    let per_route = crate::parallel::map(&jobs, |&(route, which)| {
        let route_object =
            through_typed::<HttpRoute>(http_route(instance, route), "HTTPRoute").map(&finish);
        let filter_objects: Vec<T> = filters(instance, route, which)
            .into_iter()
            .map(&finish)
            .collect();
        (route_object, filter_objects)
    });
    let mut rendered = Vec::new();
    for (route_object, filter_objects) in per_route {
        match route_object {
            Ok(object) => rendered.push(object),
            Err(err) => errors.push(fail(err)),
        }
        rendered.extend(filter_objects);
    }
    let mut objects = Vec::new();
    for grant in &instance.reference_grants {
        let value = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "ReferenceGrant",
            "metadata": metadata(&grant.name, &grant.namespace, &instance.gateway, Default::default()),
            "spec": {
                "from": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": instance.namespace}],
                "to": grant.backends.iter().map(|b| json!({"group": EG_GROUP, "kind": "Backend", "name": b})).collect::<Vec<_>>(),
            }
        });
        match through_typed::<ReferenceGrant>(value, "ReferenceGrant") {
            Ok(value) => objects.push(value),
            Err(err) => errors.push(fail(err)),
        }
    }
    objects.push(extension_policy(instance));
    if let Some(client) = &instance.client_traffic {
        objects.push(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "ClientTrafficPolicy",
            "metadata": metadata(&client.name, &instance.namespace, &instance.gateway, Default::default()),
            "spec": {
                "targetRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway", "name": instance.gateway.name}],
                "connection": {"bufferLimit": client.buffer_limit},
                "timeout": {"http": {"requestReceivedTimeout": client.request_received_timeout}},
            },
        }));
    }
    if let Some(rate_limit) = &instance.rate_limit {
        objects.push(traffic_policy(instance, rate_limit));
    }
    if let Some(local_replies) = &instance.local_replies {
        objects.push(local_replies_policy(instance, local_replies));
    }
    objects.extend(super::attempts::policies(instance));
    rendered.extend(objects.into_iter().map(&finish));
    if errors.is_empty() {
        Ok(rendered)
    } else {
        Err(errors)
    }
}

/// The HTTP connection manager of an Envoy Gateway listener, wherever it sits among the
/// listener's filter chains (a ClientTrafficPolicy connection limit puts a filter before it;
/// HTTPS listeners have one chain per certificate).
pub(super) const HCM_JSON_PATH: &str =
    "$..filters[?(@.name=='envoy.filters.network.http_connection_manager')].typed_config";

/// One `add` patch per xDS listener: `value` at `path` below each node `json_path` selects.
pub(super) fn listener_patches(
    listeners: &[String],
    json_path: &str,
    path: &str,
    value: &Value,
) -> Vec<Value> {
    listeners
        .iter()
        .map(|listener| {
            json!({
                "type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                "name": listener,
                "operation": {"op": "add", "jsonPath": json_path, "path": path, "value": value},
            })
        })
        .collect()
}

/// The EnvoyPatchPolicy that gives Envoy's own replies to AI requests the client's API shape
/// on each listener of the Gateway (see [`super::local_reply`]).
fn local_replies_policy(instance: &Instance, plan: &plan::LocalRepliesPlan) -> Value {
    let patches = listener_patches(
        &plan.listeners,
        HCM_JSON_PATH,
        "/local_reply_config",
        &super::local_reply::config(),
    );
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyPatchPolicy",
        "metadata": metadata(&plan.name, &instance.namespace, &instance.gateway, Default::default()),
        "spec": {
            "targetRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "name": instance.gateway.name},
            "type": "JSONPatch",
            "priority": 0,
            "jsonPatches": patches,
        },
    })
}

/// One match per path prefix: the AI prefixes the client uses, plus, for a backend rule, the
/// prefix the extproc rewrites the path to (Envoy matches routes again after that rewrite).
fn path_matches(headers: Value, upstream_prefix: Option<&str>) -> Vec<Value> {
    let mut prefixes: Vec<&str> = plan::AI_PATH_PREFIXES.to_vec();
    if let Some(extra) = upstream_prefix {
        prefixes.push(extra);
        prefixes.sort_unstable();
    }
    prefixes
        .iter()
        .map(|prefix| {
            let mut m = json!({"path": {"type": "PathPrefix", "value": prefix}});
            if !headers.is_null() {
                m["headers"] = headers.clone();
            }
            m
        })
        .collect()
}

/// Every path under one of the AI path prefixes, plus `extra` (the prefix the extproc on the
/// router rewrites the path to), as `path_separated_prefix` matches them (the prefix itself, or
/// the prefix and `/...`); every path when `extra` is `/`.
pub fn ai_path_regex(extra: Option<&str>) -> String {
    if extra == Some("/") {
        return "^/.*$".to_string();
    }
    let mut names: Vec<String> = plan::AI_PATH_PREFIXES
        .iter()
        .copied()
        .chain(extra)
        .map(|p| regex::escape(p.trim_start_matches('/')))
        .collect();
    names.sort();
    names.dedup();
    format!("^/({})(/.*)?$", names.join("|"))
}

fn extension_ref(name: &str) -> Value {
    json!({"type": "ExtensionRef", "extensionRef": {"group": EG_GROUP, "kind": "HTTPRouteFilter", "name": name}})
}

fn http_route(instance: &Instance, route: &HttpRoutePlan) -> Value {
    let mut rules: Vec<Value> = route
        .rules
        .iter()
        .map(|rule| {
            let backends: Vec<Value> = rule
                .targets
                .iter()
                .map(|t| {
                    let mut backend = json!({
                        "group": t.target.group,
                        "kind": t.target.kind,
                        "name": t.target.name,
                        "weight": t.weight,
                    });
                    if t.target_namespace != instance.namespace {
                        backend["namespace"] = json!(t.target_namespace);
                    }
                    if let Some(port) = t.target.port {
                        backend["port"] = json!(port);
                    }
                    backend
                })
                .collect();
            let mut timeouts = json!({"request": rule.request_timeout});
            if let Some(backend_request) = &rule.backend_request_timeout {
                timeouts["backendRequest"] = json!(backend_request);
            }
            let selector =
                json!([{"type": "Exact", "name": rule.selector_header(), "value": rule.selector}]);
            // One match per rule covers every AI path: the client's on the second match when
            // each attempt rewrites it, or the one the extproc on the router rewrote it to.
            // One route per rule, not one per path prefix, keeps Envoy's scan of the virtual
            // host short and gives each rule one rate-limit counter (Envoy Gateway counts per
            // route).
            let extra = match rule.selection {
                plan::Selection::Rule => None,
                plan::Selection::Backend => rule.upstream_prefix.as_deref(),
            };
            let matches = vec![json!({
                "path": {"type": "RegularExpression", "value": ai_path_regex(extra)},
                "headers": selector,
            })];
            json!({
                "name": rule.name,
                "matches": matches,
                "filters": [extension_ref(route.host_filter(rule))],
                "backendRefs": backends,
                "timeouts": timeouts,
            })
        })
        .collect();
    if route.catch_all {
        rules.push(json!({
            "name": "route-not-found",
            "matches": path_matches(Value::Null, None),
            "filters": [extension_ref(&route.not_found_filter)],
        }));
    }
    let parent_refs: Vec<Value> = route
        .parent_refs
        .iter()
        .map(|p| {
            let mut parent =
                json!({"group": p.group, "kind": p.kind, "name": p.name, "namespace": p.namespace});
            if let Some(section) = &p.section_name {
                parent["sectionName"] = json!(section);
            }
            if let Some(port) = p.port {
                parent["port"] = json!(port);
            }
            parent
        })
        .collect();
    let mut spec = json!({"parentRefs": parent_refs, "rules": rules});
    if !route.hostnames.is_empty() {
        spec["hostnames"] = json!(route.hostnames);
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(&route.name, &instance.namespace, &route.source, {
            let mut labels = route.labels.clone();
            labels.insert(EXTPROC_LABEL.into(), instance.name.clone());
            labels
        }),
        "spec": spec,
    })
}

/// The HTTPRouteFilters `route` writes: `[host rewrite, client host, not found]`.
fn filters(instance: &Instance, route: &HttpRoutePlan, which: [bool; 3]) -> Vec<Value> {
    let [rewrite, client, not_found] = which;
    let filter = |name: &str, spec: Value| {
        json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "HTTPRouteFilter",
            "metadata": metadata(name, &instance.namespace, &route.source, Default::default()),
            "spec": spec,
        })
    };
    let mut out = Vec::new();
    if client {
        // The router set `:authority` to the route's virtual host and the client's in a header.
        out.push(filter(
            &route.client_host_filter,
            json!({"urlRewrite": {
                "hostname": {"type": "Header", "header": aigw_filterconfig::CLIENT_AUTHORITY_HEADER},
                "appendXForwardedHost": false,
            }}),
        ));
    }
    if rewrite {
        out.push(filter(
            &route.host_rewrite_filter,
            json!({"urlRewrite": {"hostname": {"type": "Backend"}}}),
        ));
    }
    if not_found {
        out.push(filter(
            &route.not_found_filter,
            json!({"directResponse": {
                "statusCode": 404,
                "contentType": "application/json",
                "body": {"type": "Inline", "inline": NOT_FOUND_BODY},
            }}),
        ));
    }
    out
}

fn extension_policy(instance: &Instance) -> Value {
    let policy = &instance.extension_policy;
    let mut ours = json!({
        "backendRefs": [{"group": "", "kind": "Service", "name": instance.name, "port": plan::GRPC_PORT, "weight": 1}],
        "failOpen": false,
        "messageTimeout": "30s",
        "metadata": {"writableNamespaces": [METADATA_NAMESPACE]},
        "processingMode": {
            "allowModeOverride": true,
            "request": {"body": "Buffered"},
            "response": {"body": "Buffered"},
        },
    });
    // Per-request credentials read from dynamic metadata: Envoy sends those namespaces along.
    let accessible = super::attempts::accessible_namespaces(instance);
    if !accessible.is_empty() {
        ours["metadata"]["accessibleNamespaces"] = json!(accessible);
    }
    if super::attempts::any(instance) {
        // The backend that answered, for rules Envoy balances.
        ours["processingMode"]["response"]["attributes"] = json!(["upstream.locality"]);
    }
    // User filters for the same routes run first: they see the client's request, before the
    // extproc routes, translates and adds credentials.
    let mut ext_procs: Vec<Value> = policy.merged.get("extProc").cloned().unwrap_or_default();
    for entry in &mut ext_procs {
        with_backend_defaults(entry);
    }
    ext_procs.push(ours);
    // The HTTPRoutes are selected by the label they carry rather than listed: a Gateway with
    // thousands of routes keeps a small policy.
    let mut spec = json!({
        "targetSelectors": [{
            "group": GATEWAY_GROUP,
            "kind": "HTTPRoute",
            "matchLabels": {EXTPROC_LABEL: instance.name},
        }],
        "extProc": ext_procs,
    });
    for (list, items) in &policy.merged {
        if list != "extProc" {
            spec[list] = json!(items);
        }
    }
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyExtensionPolicy",
        "metadata": metadata(&policy.name, &instance.namespace, &instance.gateway, Default::default()),
        "spec": spec,
    })
}

/// Writes out the defaults the API server would add to a user extProc entry's backendRefs.
fn with_backend_defaults(entry: &mut Value) {
    if let Some(refs) = entry.get_mut("backendRefs").and_then(Value::as_array_mut) {
        for backend in refs {
            if let Some(map) = backend.as_object_mut() {
                map.entry("group").or_insert_with(|| json!(""));
                map.entry("kind").or_insert_with(|| json!("Service"));
                map.entry("weight").or_insert_with(|| json!(1));
            }
        }
    }
}

/// Writes out the defaults of a rate-limit header condition.
fn with_header_defaults(header: &mut Value) {
    if let Some(map) = header.as_object_mut() {
        map.entry("type").or_insert_with(|| json!("Exact"));
        map.entry("invert").or_insert_with(|| json!(false));
    }
}

fn traffic_policy(instance: &Instance, plan: &RateLimitPlan) -> Value {
    let rules: Vec<Value> = plan
        .rules
        .iter()
        .map(|rule| {
            let backend_header = if rule.selectors.len() == 1 {
                json!({"name": rule.selector_header, "type": "Exact", "value": rule.selectors[0], "invert": false})
            } else {
                let alternatives: Vec<String> = rule.selectors.iter().map(|id| regex::escape(id)).collect();
                json!({"name": rule.selector_header, "type": "RegularExpression", "value": format!("^({})$", alternatives.join("|")), "invert": false})
            };
            let selectors: Vec<Value> = if rule.client_selectors.is_empty() {
                vec![json!({"headers": [backend_header]})]
            } else {
                rule.client_selectors
                    .iter()
                    .map(|selector| {
                        let mut selector = Value::Object(selector.clone());
                        let mut headers = selector.get("headers").and_then(Value::as_array).cloned().unwrap_or_default();
                        headers.iter_mut().for_each(with_header_defaults);
                        headers.insert(0, backend_header.clone());
                        selector["headers"] = json!(headers);
                        selector
                    })
                    .collect()
            };
            let mut out = json!({
                "clientSelectors": selectors,
                "limit": {"requests": rule.limit, "unit": rule.unit},
                "cost": {
                    "request": {"from": "Number", "number": 0},
                    "response": {"from": "Metadata", "metadata": {"namespace": METADATA_NAMESPACE, "key": plan::QUOTA_COST_KEY}},
                },
            });
            if let Some(shadow) = rule.shadow_mode {
                out["shadowMode"] = json!(shadow);
            }
            out
        })
        .collect();
    let mut meta = metadata(
        &plan.name,
        &instance.namespace,
        &instance.gateway,
        Default::default(),
    );
    meta["annotations"][GENERATED_FROM] = json!(
        plan.sources
            .iter()
            .map(lineage)
            .collect::<Vec<_>>()
            .join(",")
    );
    meta["labels"][MANAGED_BY.0] = json!(MANAGED_BY.1);
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": meta,
        "spec": {
            "targetRefs": plan.targets.iter().map(|t| json!({"group": GATEWAY_GROUP, "kind": "HTTPRoute", "name": t})).collect::<Vec<_>>(),
            "rateLimit": {"type": "Global", "global": {"rules": rules}},
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ai_path_regex_matches_what_the_prefixes_match() {
        let re = regex::Regex::new(&super::ai_path_regex(None)).unwrap();
        let azure = regex::Regex::new(&super::ai_path_regex(Some("/openai"))).unwrap();
        assert!(azure.is_match("/openai/deployments/x/chat/completions"));
        assert!(azure.is_match("/v1/chat/completions"));
        assert!(!azure.is_match("/openaix"));
        assert_eq!(super::ai_path_regex(Some("/")), "^/.*$");
        assert_eq!(
            super::ai_path_regex(Some("/v1")),
            super::ai_path_regex(None)
        );
        for path in [
            "/v1",
            "/v1/chat/completions",
            "/anthropic/v1/messages",
            "/cohere/v2/rerank",
            "/tokenize",
        ] {
            assert!(re.is_match(path), "{path}");
        }
        for path in [
            "/v10/chat",
            "/",
            "/v1x",
            "/healthz",
            "/openai/v1/chat",
            "x/v1/chat",
        ] {
            assert!(!re.is_match(path), "{path}");
        }
    }
}
