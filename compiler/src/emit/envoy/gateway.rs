//! One Gateway of the standalone target: [`Emitter::instance`] takes the objects the Kubernetes
//! target emits for it and runs the steps of the other modules over them, in order: rate limits
//! of aigw's own BackendTrafficPolicy, the EnvoyExtensionPolicy's filters, IR routes per Gateway
//! listener, Envoy listeners, aigw's own EnvoyPatchPolicies, and the extproc's files.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::cluster::grpc_socket_cluster;
use super::ext_proc::{ext_proc_filter, label_selector_matches};
use super::files::relocated;
use super::listener::access_log;
use super::policy::TrafficLimits;
use super::route::{Action, IrRoute, compute_hosts, sort_by_precedence, virtual_hosts};
use super::{
    EXT_PROC_FILTER, EXTPROC_SOCKET, Emitter, GATEWAYS_DIR, GatewaySummary, ListenerSummary,
    gateway_dir_name, items, socket_address, text, typed,
};
use crate::diag::{Diagnostic, FieldPath};
use crate::model::GATEWAY_GROUP;
use crate::plan::{self, Instance};
use crate::validate::{Body, Validated};
use crate::write::FileEntry;

impl<'a> Emitter<'a> {
    pub(super) fn instance(&mut self, instance: &Instance) {
        let gateway_name = format!("{}/{}", instance.gateway.namespace, instance.gateway.name);
        let fail =
            |message: String| Diagnostic::error(format!("Gateway {gateway_name}: {message}"));
        let objects = match crate::emit::routing::emit(instance) {
            Ok(objects) => objects,
            Err(mut errors) => {
                self.errors.append(&mut errors);
                return;
            }
        };
        let input: &'a Validated = self.input;
        let Some(gateway) = self
            .index
            .get(&instance.gateway)
            .map(|&i| &input.objects[i])
        else {
            self.errors.push(fail(
                "internal error: the Gateway is not in the input".into(),
            ));
            return;
        };
        let Body::Gateway(view) = &gateway.body else {
            return;
        };
        let dir = format!(
            "{GATEWAYS_DIR}/{}",
            gateway_dir_name(&instance.gateway.namespace, &instance.gateway.name)
        );
        if let Some(other) = self.gateways.iter().find(|g| g.dir == dir) {
            self.errors.push(fail(format!(
                "its folder {dir} is also the folder of Gateway {}; rename one of them for the standalone target",
                other.gateway
            )));
            return;
        }
        let socket = format!("{dir}/{EXTPROC_SOCKET}");

        let kind_of = |v: &Value| text(v, "/kind").unwrap_or_default().to_string();
        let name_of = |v: &Value| text(v, "/metadata/name").unwrap_or_default().to_string();
        let mut routes: Vec<&Value> = objects
            .iter()
            .filter(|o| kind_of(o) == "HTTPRoute")
            .collect();
        routes.sort_by_key(|o| name_of(o));
        let filters: BTreeMap<String, &Value> = objects
            .iter()
            .filter(|o| kind_of(o) == "HTTPRouteFilter")
            .map(|o| (name_of(o), o))
            .collect();
        // aigw's own BackendTrafficPolicy (from QuotaPolicies) targets generated HTTPRoutes.
        let mut generated_limits: BTreeMap<String, TrafficLimits> = BTreeMap::new();
        for policy in objects
            .iter()
            .filter(|o| kind_of(o) == "BackendTrafficPolicy")
        {
            let policy_ns = text(policy, "/metadata/namespace").unwrap_or_default();
            let Some(rate_limit) = policy.pointer("/spec/rateLimit") else {
                continue;
            };
            match crate::emit::ratelimit::global_rules(policy_ns, &name_of(policy), rate_limit) {
                Ok(rules) => {
                    for target in items(policy, "/spec/targetRefs") {
                        generated_limits.insert(
                            text(target, "/name").unwrap_or_default().to_string(),
                            TrafficLimits {
                                global: rules.clone(),
                                ..TrafficLimits::default()
                            },
                        );
                    }
                }
                Err(err) => self.errors.push(fail(format!(
                    "internal error: BackendTrafficPolicy {}: {err}",
                    name_of(policy)
                ))),
            }
        }

        // The extension policy, translated filter by filter.
        let mut ext_filters: Vec<Value> = Vec::new();
        let mut ext_targets: BTreeSet<String> = BTreeSet::new();
        let mut ext_names: Vec<String> = Vec::new();
        for policy in objects
            .iter()
            .filter(|o| kind_of(o) == "EnvoyExtensionPolicy")
        {
            let policy_ns = text(policy, "/metadata/namespace").unwrap_or_default();
            let policy_name = name_of(policy);
            for list in ["wasm", "lua", "dynamicModule"] {
                if !items(policy, &format!("/spec/{list}")).is_empty() {
                    self.errors.push(fail(format!(
                        "EnvoyExtensionPolicy {policy_ns}/{policy_name} carries {list} filters merged from the input, which the standalone target cannot run; leave them out of the input for `--target envoy`"
                    )));
                }
            }
            let entries = items(policy, "/spec/extProc");
            if entries.len() > 1 {
                self.errors.push(fail(format!(
                    "EnvoyExtensionPolicy {policy_ns}/{policy_name} carries ext_proc filters merged from the input, whose Kubernetes Services the standalone target cannot reach; leave them out of the input for `--target envoy`"
                )));
                continue;
            }
            for (i, entry) in entries.iter().enumerate() {
                let config_name =
                    format!("envoyextensionpolicy/{policy_ns}/{policy_name}/extproc/{i}");
                let filter_name = format!("{EXT_PROC_FILTER}/{config_name}");
                match ext_proc_filter(&filter_name, &config_name, policy_ns, entry) {
                    Ok(filter) => ext_filters.push(filter),
                    Err(err) => {
                        self.errors
                            .push(fail(format!("internal error: EnvoyExtensionPolicy: {err}")));
                        continue;
                    }
                }
                self.clusters.insert(
                    config_name.clone(),
                    grpc_socket_cluster(&config_name, &socket),
                );
                self.referenced.insert(config_name.clone());
                ext_names.push(filter_name);
            }
            for target in items(policy, "/spec/targetRefs") {
                if text(target, "/kind") == Some("HTTPRoute") {
                    ext_targets.insert(text(target, "/name").unwrap_or_default().to_string());
                }
            }
            // As Envoy Gateway resolves targetSelectors: the HTTPRoutes of the policy's
            // namespace (all of `routes` are) whose labels the selector matches.
            for selector in items(policy, "/spec/targetSelectors") {
                let group = text(selector, "/group").unwrap_or(GATEWAY_GROUP);
                if text(selector, "/kind") != Some("HTTPRoute") || group != GATEWAY_GROUP {
                    continue;
                }
                for route in &routes {
                    if label_selector_matches(selector, route.pointer("/metadata/labels")) {
                        ext_targets.insert(name_of(route));
                    }
                }
            }
        }

        // IR routes per Gateway listener.
        let mut per_listener: Vec<Vec<IrRoute>> = vec![Vec::new(); view.listeners.len()];
        for route in &routes {
            let route_name = name_of(route);
            let hostnames: Vec<String> = items(route, "/spec/hostnames")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            let translated = match self.translate_rules(instance, route, &filters) {
                Ok(rules) => rules,
                Err(err) => {
                    self.errors.push(fail(format!(
                        "internal error: HTTPRoute {route_name}: {err}"
                    )));
                    continue;
                }
            };
            let procs: Vec<String> = if ext_targets.contains(&route_name) {
                ext_names.clone()
            } else {
                Vec::new()
            };
            let gateway_limited = self
                .rate_limits
                .get(&(
                    instance.namespace.clone(),
                    "Gateway",
                    instance.gateway.name.clone(),
                ))
                .is_some_and(|limits| !limits.is_empty());
            if gateway_limited
                && let Some(policy) = self
                    .merged_rate_limits
                    .get(&(instance.namespace.clone(), route_name.clone()))
                    .and_then(|id| self.index.get(id))
            {
                self.errors.push(input.error_at(
                    &input.objects[*policy],
                    FieldPath::parse("spec.mergeType"),
                    format!(
                        "its rate limits would be merged with those of the BackendTrafficPolicy on Gateway {gateway_name}, which the standalone target does not do; put the rules in one policy"
                    ),
                ));
            }
            let limits = generated_limits
                .get(&route_name)
                .or_else(|| {
                    self.rate_limits_of(&instance.namespace, &route_name, &instance.gateway.name)
                })
                .cloned()
                .unwrap_or_default();
            // The same for every Envoy route of the HTTPRoute: built once.
            let local_config = limits
                .local
                .as_ref()
                .map(crate::emit::ratelimit::local_route_config);
            for listener in self.attached_listeners(&instance.gateway, view, route) {
                let hosts = compute_hosts(&hostnames, &view.listeners[listener], &view.listeners);
                let listener_name = format!("{gateway_name}/{}", view.listeners[listener].name);
                for host in hosts {
                    for rule in &translated {
                        let mut ir = rule.clone();
                        ir.name = format!("{}/{}", ir.name, host.replace('.', "_"));
                        ir.hostname = host.clone();
                        ir.ext_procs = procs.clone();
                        // As Envoy Gateway: only routes that forward are limited.
                        if !limits.global.is_empty() && matches!(ir.action, Action::Forward { .. })
                        {
                            ir.rate_limits = crate::emit::ratelimit::route_filter_configs(
                                &listener_name,
                                &ir.name,
                                &limits.global,
                            );
                            self.rate_limit_service
                                .add(&listener_name, &ir.name, &limits.global);
                        }
                        if let Some(local) = &local_config
                            && matches!(ir.action, Action::Forward { .. })
                        {
                            ir.rate_limits.insert(
                                crate::emit::ratelimit::LOCAL_FILTER.to_string(),
                                local.clone(),
                            );
                        }
                        per_listener[listener].push(ir);
                    }
                }
            }
        }

        // Envoy listeners: Gateway listeners sharing a port share one.
        let keys: BTreeSet<String> = instance
            .config
            .routes
            .iter()
            .flat_map(|r| r.costs.iter())
            .chain(&instance.config.global_costs)
            .map(|c| c.metadata_key.clone())
            .chain(
                [
                    "backend_name",
                    "model_name_override",
                    "route_name",
                    "response_model",
                ]
                .map(String::from),
            )
            .collect();
        let buffer_limit = instance
            .config
            .max_request_body_bytes
            .checked_mul(2)
            .and_then(|b| u32::try_from(b).ok());
        let Some(buffer_limit) = buffer_limit else {
            self.errors.push(fail(format!(
                "the request body limit ({} bytes) is too large for the standalone Envoy, whose connection buffers must hold twice that in at most 4 GiB; lower --max-request-body-bytes",
                instance.config.max_request_body_bytes
            )));
            return;
        };
        let first_listener = self.listeners.len();
        // The listeners this target leaves out, as Envoy Gateway names them: patches of them
        // are Envoy Gateway's to apply.
        let mut left_out = BTreeSet::new();
        let mut done = vec![false; view.listeners.len()];
        for (i, listener) in view.listeners.iter().enumerate() {
            if done[i] {
                continue;
            }
            let field = FieldPath::parse("spec.listeners").index(i);
            let has_routes = !per_listener[i].is_empty();
            match listener.protocol.as_str() {
                "HTTP" => {}
                "HTTPS" if has_routes => {
                    self.errors.push(self.input.error_at(
                        gateway,
                        field,
                        format!(
                            "listener {:?} is HTTPS, which the standalone target does not serve yet; attach the AIGatewayRoutes to an HTTP listener to try them locally",
                            listener.name
                        ),
                    ));
                    left_out.insert(format!("{gateway_name}/{}", listener.name));
                    continue;
                }
                other => {
                    self.warnings.push(self.input.warning_at(
                        gateway,
                        field,
                        format!(
                            "listener {:?} ({other}) is left out of the standalone Envoy, which serves HTTP listeners only",
                            listener.name
                        ),
                    ));
                    left_out.insert(format!("{gateway_name}/{}", listener.name));
                    continue;
                }
            }
            let Ok(port) = u16::try_from(listener.port) else {
                continue;
            };
            let name = format!("{gateway_name}/{}", listener.name);
            if let Some(previous) = self.ports.get(&port) {
                self.errors.push(self.input.error_at(
                    gateway,
                    field,
                    format!(
                        "listener {:?} uses port {port}, which {previous} also uses; the standalone Envoy serves every Gateway from one process on 127.0.0.1, so give them different ports",
                        listener.name
                    ),
                ));
                continue;
            }
            self.ports.insert(port, format!("listener {name}"));
            let mut hosts = Vec::new();
            let mut any_routes = false;
            let mut limited_domains = BTreeSet::new();
            let mut any_limited = false;
            let mut any_local = false;
            for (j, other) in view.listeners.iter().enumerate().skip(i) {
                if other.port != listener.port || other.protocol != "HTTP" {
                    continue;
                }
                done[j] = true;
                let mut routes = std::mem::take(&mut per_listener[j]);
                any_routes |= !routes.is_empty();
                // The shared rules' domains get filters of their own; the listener's filter
                // serves every listener on the port (each route names its own domain).
                for route in &routes {
                    for (filter, config) in &route.rate_limits {
                        if filter == crate::emit::ratelimit::LOCAL_FILTER {
                            any_local = true;
                            continue;
                        }
                        any_limited = true;
                        if filter != crate::emit::ratelimit::FILTER
                            && let Some(domain) = text(config, "/domain")
                        {
                            limited_domains.insert(domain.to_string());
                        }
                    }
                }
                sort_by_precedence(&mut routes);
                hosts.extend(virtual_hosts(
                    &format!("{gateway_name}/{}", other.name),
                    &routes,
                ));
                self.summaries.push(ListenerSummary {
                    port,
                    gateway: gateway_name.clone(),
                    listener: other.name.clone(),
                });
            }
            let mut domains = BTreeSet::new();
            for host in &hosts {
                for domain in items(host, "/domains").iter().filter_map(Value::as_str) {
                    if !domains.insert(domain.to_string()) {
                        self.errors.push(self.input.error_at(
                            gateway,
                            field.clone(),
                            format!(
                                "two listeners on port {port} serve hostname {domain:?}; give them distinct hostnames"
                            ),
                        ));
                    }
                }
            }
            let mut http_filters: Vec<Value> = if any_routes {
                ext_filters.clone()
            } else {
                Vec::new()
            };
            // Envoy Gateway orders the rate-limit filters after ext_proc, local before global,
            // before the router, so they see the route the extproc chose (`httpfilters.go`).
            if any_local {
                http_filters.push(crate::emit::ratelimit::local_http_filter());
            }
            if any_limited {
                http_filters.extend(crate::emit::ratelimit::http_filters(
                    &name,
                    &limited_domains,
                ));
            }
            http_filters.push(json!({
                "name": "envoy.filters.http.router",
                "typed_config": typed("envoy.extensions.filters.http.router.v3.Router", json!({"suppress_envoy_headers": true})),
            }));
            let hcm = typed(
                "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                json!({
                    "stat_prefix": format!("http-{port}"),
                    "codec_type": "AUTO",
                    "access_log": access_log(&keys),
                    "http_filters": http_filters,
                    // The generated ClientTrafficPolicy's requestReceivedTimeout, as EG
                    // translates it.
                    "request_timeout": self.request_timeout,
                    "local_reply_config": crate::emit::local_reply::config(),
                    "route_config": {
                        "name": name,
                        "ignore_port_in_host_matching": true,
                        "virtual_hosts": hosts,
                    },
                    "server_header_transformation": "PASS_THROUGH",
                    "use_remote_address": true,
                    "normalize_path": true,
                    "merge_slashes": true,
                    "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
                    "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
                    "http2_protocol_options": {
                        "initial_connection_window_size": 1_048_576,
                        "initial_stream_window_size": 65_536,
                        "max_concurrent_streams": 100,
                    },
                }),
            );
            self.listeners.push(json!({
                "name": name,
                "address": socket_address("127.0.0.1", u32::from(port)),
                "per_connection_buffer_limit_bytes": buffer_limit,
                "default_filter_chain": {"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]},
            }));
        }

        // aigw's own EnvoyPatchPolicies, applied as Envoy Gateway applies them.
        for policy in crate::emit::attempts::policies(instance) {
            let policy_name = text(&policy, "/metadata/name")
                .unwrap_or_default()
                .to_string();
            for patch in items(&policy, "/spec/jsonPatches") {
                let kind = text(patch, "/type").unwrap_or_default();
                if kind.ends_with(".Listener")
                    && left_out.contains(text(patch, "/name").unwrap_or_default())
                {
                    continue;
                }
                if let Err(err) = self.apply_patch(patch, first_listener) {
                    self.errors.push(fail(format!(
                        "internal error: EnvoyPatchPolicy {policy_name}: {err}"
                    )));
                }
            }
        }

        // The extproc's files.
        let config = relocated(&instance.config);
        match serde_json::to_value(&config) {
            Ok(value) => self.files.push(FileEntry::public(
                format!("{dir}/{}", plan::CONFIG_FILE),
                crate::render::yaml(&value),
            )),
            Err(err) => self
                .errors
                .push(fail(format!("internal error: filter config: {err}"))),
        }
        for mounted in &instance.secrets {
            self.secret_files(instance, &gateway_name, &dir, &mounted.secret);
        }
        self.gateways.push(GatewaySummary {
            gateway: gateway_name,
            config: format!("{dir}/{}", plan::CONFIG_FILE),
            socket,
            dir,
        });
    }
}
