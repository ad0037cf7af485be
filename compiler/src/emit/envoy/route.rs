//! Routes: the rules of the generated HTTPRoutes as Envoy Gateway's IR routes, their hostnames on
//! each listener (`computeHosts`), their Gateway API precedence (`XdsIRRoutes.Less`), and their
//! Envoy form, grouped into virtual hosts.

use std::collections::{BTreeMap, BTreeSet};

use aigw_filterconfig::SELECTED_RULE_HEADER;
use serde_json::{Map, Value, json};

use super::{Emitter, MIN_IDLE_TIMEOUT_MS, duration_ms, items, proto_duration, text, typed};
use crate::model::GATEWAY_GROUP;
use crate::plan::{self, Instance};
use crate::validate::{AllowedFrom, Body, GatewayView, Listener, ObjectId};

/// How a route matches the path.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PathMatch {
    Exact(String),
    Regex(String),
    Prefix(String),
}

impl PathMatch {
    /// Envoy Gateway's ranking of path match types.
    fn rank(&self) -> u8 {
        match self {
            PathMatch::Exact(_) => 2,
            PathMatch::Regex(_) => 1,
            PathMatch::Prefix(_) => 0,
        }
    }

    /// Characters that count for precedence (`/` as a prefix counts none).
    fn count(&self) -> usize {
        match self {
            PathMatch::Exact(v) | PathMatch::Regex(v) => v.len(),
            PathMatch::Prefix(v) if v == "/" => 0,
            PathMatch::Prefix(v) => v.len(),
        }
    }

    fn to_envoy(&self) -> Value {
        match self {
            PathMatch::Exact(v) => json!({"path": v}),
            PathMatch::Regex(v) => json!({"safe_regex": {"regex": v}}),
            PathMatch::Prefix(v) if v == "/" => json!({"prefix": "/"}),
            PathMatch::Prefix(v) => json!({"path_separated_prefix": v.trim_end_matches('/')}),
        }
    }
}

/// A header condition: name, and exact value or regular expression.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HeaderMatch {
    pub(super) name: String,
    pub(super) exact: bool,
    pub(super) value: String,
}

/// What a route does.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    Forward {
        cluster: String,
        timeout_ms: Option<u64>,
        /// The route action's host rewrite fields (`auto_host_rewrite` or
        /// `host_rewrite_header`, and `append_x_forwarded_host`).
        host_rewrite: Option<Map<String, Value>>,
        /// The route's `retry_policy`, from the user's BackendTrafficPolicy.
        retry: Option<Value>,
    },
    Respond {
        status: u64,
        body: Option<String>,
        content_type: Option<String>,
    },
}

/// One route of a listener, before sorting (Envoy Gateway's IR route).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct IrRoute {
    pub(super) name: String,
    pub(super) hostname: String,
    pub(super) path: Option<PathMatch>,
    pub(super) headers: Vec<HeaderMatch>,
    pub(super) action: Action,
    pub(super) ext_procs: Vec<String>,
    /// `typed_per_filter_config` entries of the rate-limit filters.
    pub(super) rate_limits: Map<String, Value>,
}

/// `XdsIRRoutes.Less` of Envoy Gateway's `internal/gatewayapi/sort.go`.
fn precedes_less(a: &IrRoute, b: &IrRoute) -> bool {
    if let (Some(pa), Some(pb)) = (&a.path, &b.path)
        && pa.rank() != pb.rank()
    {
        return pa.rank() < pb.rank();
    }
    let (ca, cb) = (
        a.path.as_ref().map_or(0, PathMatch::count),
        b.path.as_ref().map_or(0, PathMatch::count),
    );
    if ca != cb {
        return ca < cb;
    }
    if a.headers.len() != b.headers.len() {
        return a.headers.len() < b.headers.len();
    }
    let exact = |r: &IrRoute| r.headers.iter().filter(|h| h.exact).count();
    exact(a) < exact(b)
}

/// Sorts routes as `sort.Stable(sort.Reverse(XdsIRRoutes(routes)))` does.
pub(super) fn sort_by_precedence(routes: &mut [IrRoute]) {
    routes.sort_by(|a, b| {
        if precedes_less(b, a) {
            std::cmp::Ordering::Less
        } else if precedes_less(a, b) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
}

/// `wildcardHostnameMatchesHostname` of Envoy Gateway's `internal/gatewayapi/helpers.go`.
fn wildcard_matches(wildcard: &str, hostname: &str) -> bool {
    let suffix = wildcard.strip_prefix('*').unwrap_or(wildcard);
    match hostname.strip_prefix('*') {
        None => hostname.len() > suffix.len() && hostname.ends_with(suffix),
        Some(host_suffix) => host_suffix
            .strip_suffix(suffix)
            .is_some_and(|remaining| remaining.starts_with('.')),
    }
}

/// `computeHosts` of Envoy Gateway's `internal/gatewayapi/helpers.go`.
pub(super) fn compute_hosts(
    route_hostnames: &[String],
    listener: &Listener,
    all: &[Listener],
) -> Vec<String> {
    let own = listener.hostname.as_deref().unwrap_or_default();
    if route_hostnames.is_empty() {
        return vec![if own.is_empty() { "*" } else { own }.to_string()];
    }
    let mut hosts = BTreeSet::new();
    for route in route_hostnames {
        let route = route.as_str();
        if own.is_empty() || own == route {
            hosts.insert(route.to_string());
        } else if own.starts_with('*') && route.starts_with('*') {
            if wildcard_matches(route, own) {
                hosts.insert(own.to_string());
            }
            if wildcard_matches(own, route) {
                hosts.insert(route.to_string());
            }
        } else if own.starts_with('*') {
            if wildcard_matches(own, route) {
                hosts.insert(route.to_string());
            }
        } else if route.starts_with('*') && wildcard_matches(route, own) {
            hosts.insert(own.to_string());
        }
    }
    for other in all {
        if std::ptr::eq(other, listener) || other.port != listener.port {
            continue;
        }
        if let Some(hostname) = &other.hostname {
            hosts.remove(hostname);
        }
    }
    hosts.into_iter().collect()
}

pub(super) fn route_to_envoy(route: &IrRoute) -> Value {
    let mut matcher = route
        .path
        .as_ref()
        .map_or_else(|| json!({"prefix": "/"}), PathMatch::to_envoy);
    if !route.headers.is_empty() {
        matcher["headers"] = route
            .headers
            .iter()
            .map(|h| {
                let string_match = if h.exact {
                    json!({"exact": h.value})
                } else {
                    json!({"safe_regex": {"regex": h.value}})
                };
                json!({"name": h.name, "string_match": string_match})
            })
            .collect();
    }
    let mut out = json!({"name": route.name, "match": matcher});
    match &route.action {
        Action::Forward {
            cluster,
            timeout_ms,
            host_rewrite,
            retry,
        } => {
            let mut action = json!({
                "cluster": cluster,
                "upgrade_configs": [{"upgrade_type": "websocket"}],
            });
            if let Some(retry) = retry {
                action["retry_policy"] = retry.clone();
            }
            if let Some(ms) = timeout_ms {
                action["timeout"] = json!(proto_duration(*ms));
                let idle = if *ms == 0 {
                    0
                } else {
                    (*ms).max(MIN_IDLE_TIMEOUT_MS)
                };
                action["idle_timeout"] = json!(proto_duration(idle));
            }
            for (key, value) in host_rewrite.iter().flatten() {
                action[key.as_str()] = value.clone();
            }
            out["route"] = action;
        }
        Action::Respond {
            status,
            body,
            content_type,
        } => {
            let mut response = json!({"status": status});
            if let Some(body) = body {
                response["body_format"] = json!({"text_format_source": {"inline_string": body}});
            }
            out["direct_response"] = response;
            if let Some(content_type) = content_type {
                out["response_headers_to_add"] = json!([{
                    "header": {"key": "Content-Type", "value": content_type},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }]);
            }
        }
    }
    if !route.ext_procs.is_empty() || !route.rate_limits.is_empty() {
        let mut per_filter: Map<String, Value> = route
            .ext_procs
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    typed("envoy.config.route.v3.FilterConfig", json!({"config": {}})),
                )
            })
            .collect();
        per_filter.extend(route.rate_limits.clone());
        out["typed_per_filter_config"] = Value::Object(per_filter);
    }
    out
}

/// Routes grouped into virtual hosts in order of first appearance.
pub(super) fn virtual_hosts(listener_name: &str, routes: &[IrRoute]) -> Vec<Value> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_host: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for route in routes {
        let host = route.hostname.as_str();
        if !by_host.contains_key(host) {
            order.push(host);
        }
        by_host.entry(host).or_default().push(route_to_envoy(route));
    }
    order
        .into_iter()
        .map(|host| {
            json!({
                "name": format!("{listener_name}/{}", host.replace('.', "_")),
                "domains": [host],
                "routes": by_host.remove(host).unwrap_or_default(),
            })
        })
        .collect()
}

impl<'a> Emitter<'a> {
    /// The indices of the listeners of `view` an HTTPRoute in the Gateway's namespace attaches
    /// to, as Envoy Gateway decides it.
    pub(super) fn attached_listeners(
        &self,
        gateway: &ObjectId,
        view: &GatewayView,
        route: &Value,
    ) -> Vec<usize> {
        let mut out = BTreeSet::new();
        let hostnames: Vec<String> = items(route, "/spec/hostnames")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        for parent in items(route, "/spec/parentRefs") {
            if text(parent, "/name") != Some(gateway.name.as_str())
                || text(parent, "/namespace").is_some_and(|ns| ns != gateway.namespace)
            {
                continue;
            }
            let section = text(parent, "/sectionName");
            let port = parent.get("port").and_then(Value::as_i64);
            for (i, listener) in view.listeners.iter().enumerate() {
                if section.is_some_and(|s| s != listener.name)
                    || port.is_some_and(|p| p != listener.port)
                    || !matches!(listener.protocol.as_str(), "HTTP" | "HTTPS")
                {
                    continue;
                }
                if let Some(kinds) = &listener.allowed_kinds
                    && !kinds
                        .iter()
                        .any(|(g, k)| g == GATEWAY_GROUP && k == "HTTPRoute")
                {
                    continue;
                }
                let admitted = match &listener.allowed_from {
                    AllowedFrom::Same | AllowedFrom::All => true,
                    AllowedFrom::Selector(selector) => self
                        .find("", "Namespace", "", &gateway.namespace)
                        .and_then(|ns| match &ns.body {
                            Body::Namespace(labels) => {
                                crate::resolve::selector_matches(selector, labels).ok()
                            }
                            _ => None,
                        })
                        .unwrap_or(false),
                };
                if admitted && !compute_hosts(&hostnames, listener, &view.listeners).is_empty() {
                    out.insert(i);
                }
            }
        }
        out.into_iter().collect()
    }

    /// The rules of one HTTPRoute as IR routes (name without the host part), in rule then match
    /// order; registers the clusters they use.
    pub(super) fn translate_rules(
        &mut self,
        instance: &Instance,
        route: &Value,
        filters: &BTreeMap<String, &Value>,
    ) -> Result<Vec<IrRoute>, String> {
        let namespace = text(route, "/metadata/namespace").unwrap_or_default();
        let name = text(route, "/metadata/name").unwrap_or_default();
        let mut out = Vec::new();
        for (i, rule) in items(route, "/spec/rules").iter().enumerate() {
            let RuleFilters {
                host_rewrite,
                respond,
            } = rule_filters(i, rule, filters)?;
            let action = match respond {
                Some(action) => action,
                None => self.forward_action(instance, (namespace, name), i, rule, host_rewrite)?,
            };
            for (j, m) in items(rule, "/matches").iter().enumerate() {
                out.push(IrRoute {
                    name: format!("httproute/{namespace}/{name}/rule/{i}/match/{j}"),
                    hostname: String::new(),
                    path: path_match(i, m)?,
                    headers: header_matches(m),
                    action: action.clone(),
                    ext_procs: Vec::new(),
                    rate_limits: Map::new(),
                });
            }
        }
        Ok(out)
    }

    /// The action of rule `i` of HTTPRoute `route` (namespace, name) that forwards to its
    /// backends: the cluster (one Backend's, or the rule's when Envoy balances its backends by
    /// the selected rule header), the timeout, the host rewrite and the user's retry policy.
    fn forward_action(
        &mut self,
        instance: &Instance,
        (namespace, name): (&str, &str),
        i: usize,
        rule: &Value,
        host_rewrite: Option<Map<String, Value>>,
    ) -> Result<Action, String> {
        let refs = items(rule, "/backendRefs");
        let by_rule = items(rule, "/matches").iter().any(|m| {
            items(m, "/headers")
                .iter()
                .any(|h| text(h, "/name") == Some(SELECTED_RULE_HEADER))
        });
        let cluster = if by_rule {
            self.rule_cluster(instance, &plan::rule_cluster(namespace, name, i), refs)?
        } else {
            let [backend] = refs else {
                return Err(format!("rule {i}: expected one backendRef"));
            };
            self.backend_cluster(instance, backend)?
        };
        self.referenced.insert(cluster.clone());
        let timeout = |field: &str| -> Result<Option<u64>, String> {
            text(rule, field)
                .map(|t| duration_ms(t).ok_or_else(|| format!("rule {i}: duration {t:?}")))
                .transpose()
        };
        Ok(Action::Forward {
            cluster,
            timeout_ms: timeout("/timeouts/backendRequest")?.or(timeout("/timeouts/request")?),
            host_rewrite,
            retry: self.retry_of(namespace, name, &instance.gateway.name),
        })
    }
}

/// What the HTTPRouteFilters of a rule do.
#[derive(Default)]
struct RuleFilters {
    /// The route action's host rewrite fields, from a `urlRewrite`.
    host_rewrite: Option<Map<String, Value>>,
    /// The direct response, from a `directResponse`.
    respond: Option<Action>,
}

/// The HTTPRouteFilters (`ExtensionRef`s, looked up in `filters`) of rule `i`.
fn rule_filters(
    i: usize,
    rule: &Value,
    filters: &BTreeMap<String, &Value>,
) -> Result<RuleFilters, String> {
    let mut out = RuleFilters::default();
    for filter in items(rule, "/filters") {
        if text(filter, "/type") != Some("ExtensionRef")
            || text(filter, "/extensionRef/kind") != Some("HTTPRouteFilter")
        {
            return Err(format!("rule {i}: unsupported filter {filter}"));
        }
        let filter_name = text(filter, "/extensionRef/name").unwrap_or_default();
        let Some(spec) = filters.get(filter_name).and_then(|f| f.get("spec")) else {
            return Err(format!(
                "rule {i}: HTTPRouteFilter {filter_name} not emitted"
            ));
        };
        for key in spec.as_object().map(|m| m.keys()).into_iter().flatten() {
            match key.as_str() {
                "urlRewrite" => out.host_rewrite = Some(host_rewrite(filter_name, spec)?),
                "directResponse" => out.respond = Some(direct_response(filter_name, spec)?),
                other => {
                    return Err(format!(
                        "HTTPRouteFilter {filter_name}: unsupported {other}"
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The route action's host rewrite fields of an HTTPRouteFilter `urlRewrite` (hostname only).
fn host_rewrite(filter_name: &str, spec: &Value) -> Result<Map<String, Value>, String> {
    let unsupported = || format!("HTTPRouteFilter {filter_name}: unsupported urlRewrite");
    let rewrite = &spec["urlRewrite"];
    if rewrite.as_object().is_some_and(|m| {
        m.keys()
            .any(|k| k != "hostname" && k != "appendXForwardedHost")
    }) {
        return Err(unsupported());
    }
    let mut fields = Map::new();
    match text(rewrite, "/hostname/type") {
        Some("Backend") => {
            fields.insert("auto_host_rewrite".into(), json!(true));
        }
        Some("Header") => {
            let header = text(rewrite, "/hostname/header").ok_or_else(unsupported)?;
            fields.insert("host_rewrite_header".into(), json!(header));
        }
        _ => return Err(unsupported()),
    }
    if rewrite.get("appendXForwardedHost").and_then(Value::as_bool) != Some(false) {
        fields.insert("append_x_forwarded_host".into(), json!(true));
    }
    Ok(fields)
}

/// The action of an HTTPRouteFilter `directResponse`.
fn direct_response(filter_name: &str, spec: &Value) -> Result<Action, String> {
    let body = match text(spec, "/directResponse/body/type") {
        None => None,
        Some("Inline") => text(spec, "/directResponse/body/inline").map(str::to_string),
        Some(other) => {
            return Err(format!("HTTPRouteFilter {filter_name}: body type {other}"));
        }
    };
    Ok(Action::Respond {
        status: spec
            .pointer("/directResponse/statusCode")
            .and_then(Value::as_u64)
            .unwrap_or(200),
        body,
        content_type: text(spec, "/directResponse/contentType").map(str::to_string),
    })
}

/// The path condition of match `m` of rule `i`; any condition but path and headers is an
/// error.
fn path_match(i: usize, m: &Value) -> Result<Option<PathMatch>, String> {
    if let Some(key) = m
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "path" && *k != "headers"))
    {
        return Err(format!("rule {i}: unsupported match {key}"));
    }
    Ok(match (text(m, "/path/type"), text(m, "/path/value")) {
        (_, None) => None,
        (Some("Exact"), Some(v)) => Some(PathMatch::Exact(v.into())),
        (Some("RegularExpression"), Some(v)) => Some(PathMatch::Regex(v.into())),
        (_, Some(v)) => Some(PathMatch::Prefix(v.into())),
    })
}

/// The header conditions of match `m`.
fn header_matches(m: &Value) -> Vec<HeaderMatch> {
    items(m, "/headers")
        .iter()
        .map(|h| HeaderMatch {
            name: text(h, "/name").unwrap_or_default().to_string(),
            exact: text(h, "/type") != Some("RegularExpression"),
            value: text(h, "/value").unwrap_or_default().to_string(),
        })
        .collect()
}
