//! Listeners: the Envoy listeners of a Gateway, one per port its HTTP listeners use, each with
//! its HTTP connection manager (filters, route configuration, access log) as Envoy Gateway
//! builds it.

use std::collections::BTreeSet;

use aigw_filterconfig::{
    METADATA_NAMESPACE, MODEL_HEADER, SELECTED_BACKEND_HEADER, SELECTED_RULE_HEADER,
};
use serde_json::{Map, Value, json};

use super::gateway::{GatewayContext, metadata_keys};
use super::route::{IrRoute, sort_by_precedence, virtual_hosts};
use super::{ACCESS_LOG, Emitter, ListenerSummary, items, socket_address, text, typed};
use crate::diag::FieldPath;
use crate::emit::ratelimit;
use crate::validate::Listener;

/// What the Gateway listeners sharing one port put on its Envoy listener.
#[derive(Default)]
struct PortRoutes {
    /// Virtual hosts, listener by listener.
    hosts: Vec<Value>,
    /// A listener on the port has routes.
    any_routes: bool,
    /// Domains of the shared rate-limit rules, which get filters of their own.
    limited_domains: BTreeSet<String>,
    /// A route is globally rate limited.
    any_limited: bool,
    /// A route is locally rate limited.
    any_local: bool,
}

impl PortRoutes {
    /// The HTTP filters of the port's connection manager, named `name`: the ext_proc filters
    /// when it has routes, then the rate-limit filters, then the router.
    fn http_filters(&self, name: &str, ext_filters: &[Value]) -> Vec<Value> {
        let mut http_filters: Vec<Value> = if self.any_routes {
            ext_filters.to_vec()
        } else {
            Vec::new()
        };
        // Envoy Gateway orders the rate-limit filters after ext_proc, local before global,
        // before the router, so they see the route the extproc chose (`httpfilters.go`).
        if self.any_local {
            http_filters.push(ratelimit::local_http_filter());
        }
        if self.any_limited {
            http_filters.extend(ratelimit::http_filters(name, &self.limited_domains));
        }
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": typed("envoy.extensions.filters.http.router.v3.Router", json!({"suppress_envoy_headers": true})),
        }));
        http_filters
    }

    /// Notes the rate limits of `routes`. The shared rules' domains get filters of their own;
    /// the listener's filter serves every listener on the port (each route names its own
    /// domain).
    fn note_rate_limits(&mut self, routes: &[IrRoute]) {
        for route in routes {
            for (filter, config) in &route.rate_limits {
                if filter == ratelimit::LOCAL_FILTER {
                    self.any_local = true;
                    continue;
                }
                self.any_limited = true;
                if filter != ratelimit::FILTER
                    && let Some(domain) = text(config, "/domain")
                {
                    self.limited_domains.insert(domain.to_string());
                }
            }
        }
    }
}

impl Emitter<'_> {
    /// The Envoy listeners of a Gateway, from its IR routes per Gateway listener: Gateway
    /// listeners sharing a port share one. Returns the listeners this target leaves out, as
    /// Envoy Gateway names them (patches of them are Envoy Gateway's to apply); `None` when the
    /// request body limit does not fit the connection buffers.
    pub(super) fn envoy_listeners(
        &mut self,
        gateway: &GatewayContext,
        mut per_listener: Vec<Vec<IrRoute>>,
        ext_filters: &[Value],
    ) -> Option<BTreeSet<String>> {
        let instance = gateway.instance;
        let keys = metadata_keys(instance);
        let buffer_limit = instance
            .config
            .max_request_body_bytes
            .checked_mul(2)
            .and_then(|b| u32::try_from(b).ok());
        let Some(buffer_limit) = buffer_limit else {
            self.errors.push(gateway.fail(format!(
                "the request body limit ({} bytes) is too large for the standalone Envoy, whose connection buffers must hold twice that in at most 4 GiB; lower --max-request-body-bytes",
                instance.config.max_request_body_bytes
            )));
            return None;
        };
        let view = gateway.view;
        let mut left_out = BTreeSet::new();
        let mut done = vec![false; view.listeners.len()];
        for (i, listener) in view.listeners.iter().enumerate() {
            if done[i] {
                continue;
            }
            let field = FieldPath::parse("spec.listeners").index(i);
            if !self.serves(gateway, listener, &field, !per_listener[i].is_empty()) {
                left_out.insert(gateway.listener_name(&listener.name));
                continue;
            }
            let Some(port) = self.claim_port(gateway, listener, &field) else {
                continue;
            };
            let name = gateway.listener_name(&listener.name);
            let shared = self.port_routes(gateway, i, port, &mut per_listener, &mut done);
            self.check_distinct_domains(gateway, &field, port, &shared.hosts);
            let http_filters = shared.http_filters(&name, ext_filters);
            let hcm = http_connection_manager(
                port,
                &keys,
                http_filters,
                &self.request_timeout,
                &name,
                shared.hosts,
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
        Some(left_out)
    }

    /// Whether the standalone Envoy serves a Gateway listener: HTTP ones only. An HTTPS
    /// listener with routes is an error, any other left out with a warning.
    fn serves(
        &mut self,
        gateway: &GatewayContext,
        listener: &Listener,
        field: &FieldPath,
        has_routes: bool,
    ) -> bool {
        match listener.protocol.as_str() {
            "HTTP" => true,
            "HTTPS" if has_routes => {
                self.errors.push(self.input.error_at(
                    gateway.object,
                    field.clone(),
                    format!(
                        "listener {:?} is HTTPS, which the standalone target does not serve yet; attach the AIGatewayRoutes to an HTTP listener to try them locally",
                        listener.name
                    ),
                ));
                false
            }
            other => {
                self.warnings.push(self.input.warning_at(
                    gateway.object,
                    field.clone(),
                    format!(
                        "listener {:?} ({other}) is left out of the standalone Envoy, which serves HTTP listeners only",
                        listener.name
                    ),
                ));
                false
            }
        }
    }

    /// The port of a Gateway listener, taken for it; `None` when it is not a port or (an
    /// error) another listener or the admin interface took it.
    fn claim_port(
        &mut self,
        gateway: &GatewayContext,
        listener: &Listener,
        field: &FieldPath,
    ) -> Option<u16> {
        let port = u16::try_from(listener.port).ok()?;
        let name = gateway.listener_name(&listener.name);
        if let Some(previous) = self.ports.get(&port) {
            self.errors.push(self.input.error_at(
                gateway.object,
                field.clone(),
                format!(
                    "listener {:?} uses port {port}, which {previous} also uses; the standalone Envoy serves every Gateway from one process on 127.0.0.1, so give them different ports",
                    listener.name
                ),
            ));
            return None;
        }
        self.ports.insert(port, format!("listener {name}"));
        Some(port)
    }

    /// The routes of the HTTP listeners on `port` from listener `first` on, sorted by
    /// precedence into virtual hosts, listener by listener; marks those listeners `done`.
    fn port_routes(
        &mut self,
        gateway: &GatewayContext,
        first: usize,
        port: u16,
        per_listener: &mut [Vec<IrRoute>],
        done: &mut [bool],
    ) -> PortRoutes {
        let view = gateway.view;
        let mut out = PortRoutes::default();
        for (j, other) in view.listeners.iter().enumerate().skip(first) {
            if other.port != view.listeners[first].port || other.protocol != "HTTP" {
                continue;
            }
            done[j] = true;
            let mut routes = std::mem::take(&mut per_listener[j]);
            out.any_routes |= !routes.is_empty();
            out.note_rate_limits(&routes);
            sort_by_precedence(&mut routes);
            out.hosts
                .extend(virtual_hosts(&gateway.listener_name(&other.name), &routes));
            self.summaries.push(ListenerSummary {
                port,
                gateway: gateway.name.clone(),
                listener: other.name.clone(),
            });
        }
        out
    }

    /// An error for every hostname two listeners on `port` both serve.
    fn check_distinct_domains(
        &mut self,
        gateway: &GatewayContext,
        field: &FieldPath,
        port: u16,
        hosts: &[Value],
    ) {
        let mut domains = BTreeSet::new();
        for host in hosts {
            for domain in items(host, "/domains").iter().filter_map(Value::as_str) {
                if !domains.insert(domain.to_string()) {
                    self.errors.push(self.input.error_at(
                        gateway.object,
                        field.clone(),
                        format!(
                            "two listeners on port {port} serve hostname {domain:?}; give them distinct hostnames"
                        ),
                    ));
                }
            }
        }
    }
}

/// The HTTP connection manager of the Envoy listener `name` on `port`, with Envoy Gateway's
/// defaults.
fn http_connection_manager(
    port: u16,
    keys: &BTreeSet<String>,
    http_filters: Vec<Value>,
    request_timeout: &str,
    name: &str,
    hosts: Vec<Value>,
) -> Value {
    typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        json!({
            "stat_prefix": format!("http-{port}"),
            "codec_type": "AUTO",
            "access_log": access_log(keys),
            "http_filters": http_filters,
            // The generated ClientTrafficPolicy's requestReceivedTimeout, as EG
            // translates it.
            "request_timeout": request_timeout,
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
    )
}

/// The access log of every listener: Envoy Gateway's default JSON fields, the AI Gateway
/// headers, and the dynamic metadata the extproc writes (`keys`).
fn access_log(keys: &BTreeSet<String>) -> Value {
    let mut format = Map::new();
    for (field, operator) in [
        ("start_time", "%START_TIME%"),
        ("method", "%REQ(:METHOD)%"),
        ("x-envoy-origin-path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
        ("protocol", "%PROTOCOL%"),
        ("response_code", "%RESPONSE_CODE%"),
        ("response_flags", "%RESPONSE_FLAGS%"),
        ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
        ("bytes_received", "%BYTES_RECEIVED%"),
        ("bytes_sent", "%BYTES_SENT%"),
        ("duration", "%DURATION%"),
        (
            "x-envoy-upstream-service-time",
            "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        ),
        ("user-agent", "%REQ(USER-AGENT)%"),
        ("x-request-id", "%REQ(X-REQUEST-ID)%"),
        (":authority", "%REQ(:AUTHORITY)%"),
        ("upstream_host", "%UPSTREAM_HOST%"),
        ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
        (
            "upstream_transport_failure_reason",
            "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
        ),
        ("route_name", "%ROUTE_NAME%"),
    ] {
        format.insert(field.into(), json!(operator));
    }
    for header in [MODEL_HEADER, SELECTED_BACKEND_HEADER, SELECTED_RULE_HEADER] {
        format.insert(
            header.into(),
            json!(format!("%REQ({})%", header.to_ascii_uppercase())),
        );
    }
    let metadata: Map<String, Value> = keys
        .iter()
        .map(|key| {
            (
                key.clone(),
                json!(format!("%DYNAMIC_METADATA({METADATA_NAMESPACE}:{key})%")),
            )
        })
        .collect();
    format.insert(METADATA_NAMESPACE.into(), Value::Object(metadata));
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": typed("envoy.extensions.access_loggers.file.v3.FileAccessLog", json!({
            "path": ACCESS_LOG,
            "log_format": {"json_format": format},
        })),
    }])
}
