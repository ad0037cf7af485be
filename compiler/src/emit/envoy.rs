//! The standalone target (`aigw build --target envoy`, `aigw run`): the [`Plan`] in, a folder for
//! one local Envoy plus one `aigw-extproc` per Gateway out.
//!
//! ```text
//! envoy.yaml                                   Envoy v3 bootstrap, static resources only
//! gateways/<ns>-<gateway>/filter-config.yaml   the extproc's config, credential paths relative
//! gateways/<ns>-<gateway>/secrets/<name>/<key> Secret data the extproc reads (mode 0600)
//! gateways/<ns>-<gateway>/extproc.sock         (at run time) the extproc's gRPC socket
//! ca/<ns>/<BackendTLSPolicy>.crt               CA bundles from caCertificateRefs
//! access.log                                   (at run time) JSON lines, one per request
//! ```
//!
//! Every path in `envoy.yaml` is relative: Envoy runs with its working directory set to the
//! folder, so the folder can move and several can run side by side.
//!
//! # Same routing as on a cluster
//!
//! This module does not re-derive routes from the plan. It takes the very objects the Kubernetes
//! target emits for each Gateway ([`super::routing::emit`]: HTTPRoutes, HTTPRouteFilters, the
//! EnvoyExtensionPolicy) and translates them the way Envoy Gateway v1.8 does, so a route tried
//! locally behaves as it will behind Envoy Gateway. What is mirrored, and from which file of
//! envoyproxy/gateway v1.8.3:
//!
//! - `internal/gatewayapi/route.go` (`processHTTPRouteRule`, `processHTTPRouteParentRefListener`,
//!   `processRouteTimeout`) and `internal/gatewayapi/helpers.go` (`computeHosts`,
//!   `irRouteName`): one route per (hostname, rule, match), named
//!   `httproute/<ns>/<name>/rule/<i>/match/<j>/<host with . as _>`; the hostnames of a route on
//!   a listener are the intersection of the route's and the listener's (the listener's, or `*`,
//!   when the route has none), less the hostnames of the other listeners on the same port;
//!   `timeouts.request` is the route timeout, and `timeouts.backendRequest` replaces it (there
//!   are no retries).
//! - `internal/gatewayapi/sort.go` (`XdsIRRoutes.Less`, `sortXdsIRMap`): Gateway API precedence
//!   as Envoy Gateway orders it, a stable sort, descending, of every route of a listener: Exact
//!   before RegularExpression before PathPrefix paths, longer paths first, then more header
//!   matches, then more Exact header matches; ties keep the HTTPRoute order (creation time, then
//!   namespace and name; generated HTTPRoutes are created together, so namespace and name).
//! - `internal/xds/translator/translator.go` (`addRouteToRouteConfig`): one virtual host per
//!   hostname, in the order of its first route after sorting, named `<listener>/<host>`, in a
//!   route configuration with `ignore_port_in_host_matching`.
//! - `internal/xds/translator/route.go`: a PathPrefix becomes `path_separated_prefix` (trailing
//!   `/` trimmed; `/` stays a `prefix`), header matches become `string_match.exact` or
//!   `safe_regex`; the route `idle_timeout` is the request timeout but at least one hour (0 when
//!   the timeout is 0); websocket upgrades allowed; the HTTPRouteFilter `urlRewrite.hostname`
//!   type `Backend` becomes `auto_host_rewrite`, type `Header` `host_rewrite_header`, with
//!   `append_x_forwarded_host` unless `appendXForwardedHost: false`; a
//!   `directResponse` becomes a `direct_response` whose body is a text format source, with the
//!   content type added as a `Content-Type` response header (`internal/gatewayapi/filters.go`).
//!   The body is written as `inline_string` where Envoy Gateway writes the same bytes as
//!   `inline_bytes`, so that the golden files stay readable.
//! - `internal/xds/translator/extproc.go` and `internal/gatewayapi/envoyextensionpolicy.go`
//!   (`buildExtProc`): each ext_proc filter goes on the HTTP connection manager `disabled`, named
//!   `envoy.filters.http.ext_proc/envoyextensionpolicy/<ns>/<name>/extproc/<index>`, and every
//!   route of a targeted HTTPRoute enables it with an empty `FilterConfig` in
//!   `typed_per_filter_config`; headers are sent when `processingMode.request` / `.response` is
//!   set, body modes as given, trailers skipped; `failOpen` is `failure_mode_allow`,
//!   `messageTimeout` is `message_timeout`, `metadata.writableNamespaces` are the receiving
//!   namespaces and `accessibleNamespaces` the forwarding ones, `allowModeOverride` as given; the
//!   gRPC service has a 10 s timeout (`utils.go`, `defaultExtServiceRequestTimeout`). Its cluster
//!   (named `envoyextensionpolicy/<ns>/<name>/extproc/<index>`, `ext_service.go`) speaks HTTP/2,
//!   here to the extproc's Unix socket instead of its Service.
//! - `internal/xds/translator/listener.go` (`addHCMToXDSListener`): the HTTP connection manager
//!   defaults (`use_remote_address`, `normalize_path`, `merge_slashes`, escaped slashes
//!   unescaped and redirected, headers with underscores rejected, `Server` passed through, HTTP/2
//!   window sizes), the router with `suppress_envoy_headers`; Gateway listeners that share a port
//!   share one Envoy listener and route configuration, named after the first.
//! - `internal/xds/translator/cluster.go`: Backend clusters with a 10 s connect timeout,
//!   `V4_PREFERRED` DNS, 30 s DNS refresh respecting TTLs, least-request balancing, 32 KiB
//!   connection buffers, `max_retries` 1024, HTTP/2 for the `h2c` app protocol and ALPN-chosen
//!   HTTP/1.1 or HTTP/2 over TLS; `translator.go` (`buildValidationContext`): a
//!   BackendTLSPolicy's `hostname` is the SNI and, unless `subjectAltNames` are given, the DNS
//!   SAN the certificate must carry; several `caCertificateRefs` are joined into one bundle
//!   (`backendtlspolicy.go`, key `ca.crt`, or the only key).
//! - `internal/xds/bootstrap/bootstrap.yaml.tpl`: the overload manager's limit of 50,000
//!   downstream connections.
//! - `internal/xds/translator/accesslog.go`: the fields of Envoy Gateway's default JSON access
//!   log, plus the AI Gateway headers and dynamic metadata.
//!
//! Deliberate differences: one cluster per Envoy Gateway Backend instead of one per HTTPRoute
//! rule (the same endpoints and settings, fewer connection pools); static endpoints instead of
//! EDS; DNS settings through the `envoy.cluster.dns` extension rather than the cluster fields
//! that Envoy 1.40 deprecates; the listener is bound to 127.0.0.1 on the Gateway listener's own port; its
//! `per_connection_buffer_limit_bytes` is twice the extproc's body limit, so that bodies up to
//! that limit reach the extproc, which answers larger ones 413 in the OpenAI error shape.
//!
//! BackendTrafficPolicy rate limits (the user's and the QuotaPolicy one) are translated in
//! [`super::ratelimit`], which says what was mirrored.
//!
//! Anything Envoy Gateway would do that this target cannot (HTTPS listeners, Kubernetes Service
//! backends, user ext_proc filters merged into the generated policy) is an error or a warning,
//! never dropped silently.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::diag::Diagnostic;
use crate::plan::Plan;
use crate::validate::{Object, ObjectId, Validated};
use crate::write::FileEntry;

mod cluster;
mod ext_proc;
mod files;
mod gateway;
mod listener;
mod patch;
mod policy;
mod route;

use policy::TrafficLimits;
pub use policy::retry_policy;

/// The bootstrap's file name.
pub const ENVOY_FILE: &str = "envoy.yaml";
/// Folder of the per-Gateway files.
pub const GATEWAYS_DIR: &str = "gateways";

/// Longest name of a Gateway's folder: the extproc's socket path
/// (`gateways/<folder>/extproc.sock`, relative to the output folder, where `aigw run` starts the
/// processes) must stay within the 107 bytes a Unix socket address holds.
const GATEWAY_DIR_MAX: usize = 80;

/// `<namespace>-<gateway>`, shortened with a hash when long.
fn gateway_dir_name(namespace: &str, gateway: &str) -> String {
    crate::plan::bounded_name(&format!("{namespace}-{gateway}"), GATEWAY_DIR_MAX)
}

/// The extproc's Unix socket, inside its Gateway's folder.
pub const EXTPROC_SOCKET: &str = "extproc.sock";
/// The access log, relative to the folder.
pub const ACCESS_LOG: &str = "access.log";
/// CA bundle used for `wellKnownCACertificates: System`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Default port of Envoy's admin interface.
pub const DEFAULT_ADMIN_PORT: u16 = 9901;
/// Folder of the Secrets inside a Gateway's folder (replaces [`crate::plan::SECRETS_ROOT`]).
pub const SECRETS_DIR: &str = "secrets";

/// Envoy Gateway's defaults (see the module docs for their sources).
const CONNECT_TIMEOUT: &str = "10s";
const EXT_SERVICE_TIMEOUT: &str = "10s";
const CLUSTER_BUFFER_LIMIT: u32 = 32768;
const DNS_REFRESH_RATE: &str = "30s";
const MIN_IDLE_TIMEOUT_MS: u64 = 3_600_000;
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const EXT_PROC_FILTER: &str = "envoy.filters.http.ext_proc";
const H2C: &str = "gateway.envoyproxy.io/h2c";
const MAX_DOWNSTREAM_CONNECTIONS: u64 = 50_000;

/// Settings of the standalone target.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// Port of Envoy's admin interface (on 127.0.0.1).
    pub admin_port: u16,
    /// Seconds a client has to send a whole request (the listeners' `request_timeout`).
    pub request_receive_timeout_secs: u32,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            admin_port: DEFAULT_ADMIN_PORT,
            request_receive_timeout_secs: crate::plan::DEFAULT_REQUEST_RECEIVE_TIMEOUT_SECS,
        }
    }
}

/// A Gateway listener as served by the standalone Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSummary {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// `<namespace>/<name>` of the Gateway.
    pub gateway: String,
    /// Listener name.
    pub listener: String,
}

/// The files of one Gateway's extproc, relative to the output folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySummary {
    /// `<namespace>/<name>` of the Gateway.
    pub gateway: String,
    /// Its folder (`gateways/<ns>-<name>`).
    pub dir: String,
    /// Its filter config.
    pub config: String,
    /// The socket its extproc listens on.
    pub socket: String,
}

/// The rate-limit service of a standalone build, relative to the output folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSummary {
    /// The folder of its configuration files, one per domain.
    pub config_dir: String,
    /// The socket it listens on (the `ratelimit_cluster` endpoint).
    pub socket: String,
}

/// Folder of the rate-limit service's configuration.
pub const RATELIMIT_DIR: &str = "ratelimit";
/// Socket of the rate-limit service.
pub const RATELIMIT_SOCKET: &str = "ratelimit.sock";

/// A standalone build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standalone {
    /// Every file, sorted by path (without the manifest, see [`crate::write::tree_files`]).
    pub files: Vec<FileEntry>,
    /// Listeners, in Gateway then listener order.
    pub listeners: Vec<ListenerSummary>,
    /// One extproc per Gateway.
    pub gateways: Vec<GatewaySummary>,
    /// The rate-limit service, when a route is rate limited.
    pub rate_limit: Option<RateLimitSummary>,
    /// Admin port.
    pub admin_port: u16,
}

/// Emits the standalone folder; returns it with its warnings, or every error.
pub fn emit(
    input: &Validated,
    plan: &Plan,
    options: &EnvoyOptions,
) -> Result<(Standalone, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut out = Emitter {
        input,
        index: input
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.id.clone(), i))
            .collect(),
        errors: Vec::new(),
        warnings: Vec::new(),
        clusters: BTreeMap::new(),
        files: Vec::new(),
        listeners: Vec::new(),
        summaries: Vec::new(),
        gateways: Vec::new(),
        ports: BTreeMap::from([(
            options.admin_port,
            "Envoy's admin interface (--envoy-admin-port)".to_string(),
        )]),
        request_timeout: format!("{}s", options.request_receive_timeout_secs),
        retries: BTreeMap::new(),
        rate_limits: BTreeMap::new(),
        merged_rate_limits: BTreeMap::new(),
        rate_limit_service: super::ratelimit::ServiceConfig::default(),
        referenced: BTreeSet::new(),
    };
    out.collect_retries();
    out.collect_rate_limits();
    for instance in &plan.instances {
        out.instance(instance);
    }
    out.not_applied(plan);
    let rate_limit = out.rate_limit_files();
    let bootstrap = json!({
        "admin": {"address": socket_address("127.0.0.1", u32::from(options.admin_port))},
        "overload_manager": {
            "refresh_interval": "0.25s",
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": typed(
                    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    json!({"max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS}),
                ),
            }],
        },
        "static_resources": {
            "listeners": out.listeners,
            "clusters": out
                .clusters
                .iter()
                .filter(|(name, _)| out.referenced.contains(*name))
                .map(|(_, cluster)| cluster.clone())
                .collect::<Vec<_>>(),
        },
    });
    if !out.errors.is_empty() {
        return Err(out.errors);
    }
    out.files.push(FileEntry::public(
        ENVOY_FILE,
        crate::render::yaml(&bootstrap),
    ));
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((
        Standalone {
            files: out.files,
            listeners: out.summaries,
            gateways: out.gateways,
            rate_limit,
            admin_port: options.admin_port,
        },
        out.warnings,
    ))
}

struct Emitter<'a> {
    input: &'a Validated,
    index: BTreeMap<ObjectId, usize>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    clusters: BTreeMap<String, Value>,
    files: Vec<FileEntry>,
    listeners: Vec<Value>,
    summaries: Vec<ListenerSummary>,
    gateways: Vec<GatewaySummary>,
    /// Ports taken, with what took them.
    ports: BTreeMap<u16, String>,
    /// The listeners' `request_timeout`.
    request_timeout: String,
    /// Route retry policies from the user's BackendTrafficPolicies, by (namespace, target
    /// kind, target name).
    retries: BTreeMap<(String, &'static str, String), Value>,
    /// Global rate-limit rules from the user's BackendTrafficPolicies, by (namespace, target
    /// kind, target name).
    rate_limits: BTreeMap<(String, &'static str, String), TrafficLimits>,
    /// HTTPRoutes whose policy sets `mergeType` and rate limits, with that policy.
    merged_rate_limits: BTreeMap<(String, String), ObjectId>,
    /// The rate-limit service's descriptors.
    rate_limit_service: super::ratelimit::ServiceConfig,
    /// Clusters that routes or filters use (a Backend's own cluster is only a part of its
    /// rule's cluster when Envoy balances the rule).
    referenced: BTreeSet<String>,
}

/// Parses a Gateway API duration (`1h30m`, `500ms`, `120s`) into milliseconds.
pub fn duration_ms(text: &str) -> Option<u64> {
    crate::validate::rules::parse_duration_ms(text)
}

/// A protobuf JSON duration (`90s`, `0.500s`).
pub fn proto_duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

fn socket_address(address: &str, port: u32) -> Value {
    json!({"socket_address": {"address": address, "port_value": port}})
}

/// `body` with its protobuf type, as Envoy's JSON config names it.
pub(super) fn typed(type_name: &str, mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "@type".into(),
            Value::String(format!("type.googleapis.com/{type_name}")),
        );
    }
    body
}

pub(super) fn text<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

pub(super) fn items<'v>(value: &'v Value, pointer: &str) -> &'v [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// `metadata.name` of a generated object.
fn name_of(value: &Value) -> String {
    text(value, "/metadata/name")
        .unwrap_or_default()
        .to_string()
}

/// The generated objects of one kind.
fn of_kind<'o>(objects: &'o [Value], kind: &'o str) -> impl Iterator<Item = &'o Value> {
    objects
        .iter()
        .filter(move |o| text(o, "/kind").unwrap_or_default() == kind)
}

impl<'a> Emitter<'a> {
    fn find(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<&'a Object> {
        let input: &'a Validated = self.input;
        let id = ObjectId {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        self.index.get(&id).map(|&i| &input.objects[i])
    }

    fn document(&self, object: &'a Object) -> &'a Value {
        let input: &'a Validated = self.input;
        &input.document(object).value
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod retry_tests;
