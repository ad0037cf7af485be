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

use aigw_filterconfig::{
    Credential, FilterConfig, METADATA_NAMESPACE, MODEL_HEADER, OidcExchange,
    SELECTED_BACKEND_HEADER, SELECTED_RULE_HEADER,
};
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::diag::{Diagnostic, FieldPath};
use crate::model::{EG_GROUP, GATEWAY_GROUP};
use crate::plan::{self, Instance, Plan};
use crate::validate::{AllowedFrom, Body, GatewayView, Listener, Object, ObjectId, Validated};
use crate::write::FileEntry;

/// The bootstrap's file name.
pub const ENVOY_FILE: &str = "envoy.yaml";
/// Folder of the per-Gateway files.
pub const GATEWAYS_DIR: &str = "gateways";
/// Whether a Kubernetes label selector (`matchLabels`, `matchExpressions` with `In`, `NotIn`,
/// `Exists`, `DoesNotExist`) holds for `labels`.
fn label_selector_matches(selector: &Value, labels: Option<&Value>) -> bool {
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let by_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|wanted| {
            wanted
                .iter()
                .all(|(k, v)| v.as_str().is_some_and(|v| label(k) == Some(v)))
        });
    let by_expressions = items(selector, "/matchExpressions")
        .iter()
        .all(|expression| {
            let key = text(expression, "/key").unwrap_or_default();
            let values: Vec<&str> = items(expression, "/values")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            match text(expression, "/operator") {
                Some("In") => label(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => label(key).is_some(),
                Some("DoesNotExist") => label(key).is_none(),
                _ => false,
            }
        });
    by_labels && by_expressions
}

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
/// Folder of the Secrets inside a Gateway's folder (replaces [`plan::SECRETS_ROOT`]).
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

/// The rate limits of one BackendTrafficPolicy.
#[derive(Debug, Clone, Default)]
struct TrafficLimits {
    global: Vec<super::ratelimit::Rule>,
    local: Option<super::ratelimit::LocalPolicy>,
    /// The policy sets `mergeType`.
    merges: bool,
}

impl TrafficLimits {
    fn is_empty(&self) -> bool {
        self.global.is_empty() && self.local.is_none()
    }
}

/// How a route matches the path.
#[derive(Debug, Clone, PartialEq)]
enum PathMatch {
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
struct HeaderMatch {
    name: String,
    exact: bool,
    value: String,
}

/// What a route does.
#[derive(Debug, Clone, PartialEq)]
enum Action {
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
struct IrRoute {
    name: String,
    hostname: String,
    path: Option<PathMatch>,
    headers: Vec<HeaderMatch>,
    action: Action,
    ext_procs: Vec<String>,
    /// `typed_per_filter_config` entries of the rate-limit filters.
    rate_limits: Map<String, Value>,
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
fn sort_by_precedence(routes: &mut [IrRoute]) {
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
fn compute_hosts(route_hostnames: &[String], listener: &Listener, all: &[Listener]) -> Vec<String> {
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

/// A gRPC service's cluster (HTTP/2) on a Unix socket of this folder.
fn grpc_socket_cluster(name: &str, socket: &str) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "per_connection_buffer_limit_bytes": CLUSTER_BUFFER_LIMIT,
        "typed_extension_protocol_options": {HTTP_PROTOCOL_OPTIONS: typed(HTTP_PROTOCOL_OPTIONS, json!({
            "explicit_http_config": {"http2_protocol_options": {}},
        }))},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket}}}}]}],
        },
    })
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

/// The data of a Secret or ConfigMap document, key by key (`stringData` over `data`, base64
/// decoded for Secrets).
fn object_data(value: &Value, secret: bool) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    if let Some(data) = value.get("data").and_then(Value::as_object) {
        for (key, item) in data {
            let text = item.as_str().unwrap_or_default();
            let bytes = if secret {
                base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|err| format!("data.{key} is not valid base64: {err}"))?
            } else {
                text.as_bytes().to_vec()
            };
            out.insert(key.clone(), bytes);
        }
    }
    if secret && let Some(data) = value.get("stringData").and_then(Value::as_object) {
        for (key, item) in data {
            out.insert(
                key.clone(),
                item.as_str().unwrap_or_default().as_bytes().to_vec(),
            );
        }
    }
    Ok(out)
}

/// A Secret key as a file name: what Kubernetes allows in a key, less `.` and `..`.
fn is_file_name(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The filter config with credential paths relative to the Gateway's folder.
fn relocated(config: &FilterConfig) -> FilterConfig {
    fn relocate(path: &mut String) {
        let root = format!("{}/", plan::SECRETS_ROOT);
        if let Some(rest) = path.strip_prefix(&root) {
            *path = format!("{SECRETS_DIR}/{rest}");
        } else if let Some(rest) = path.strip_prefix(&format!("file:{root}")) {
            *path = format!("file:{SECRETS_DIR}/{rest}");
        }
    }
    fn relocate_oidc(oidc: &mut OidcExchange) {
        relocate(&mut oidc.client_secret_file);
        relocate(&mut oidc.client_id);
    }
    let mut config = config.clone();
    for backend in &mut config.backends {
        let Some(auth) = &mut backend.auth else {
            continue;
        };
        match &mut auth.credential {
            Credential::ApiKey { key_file }
            | Credential::AzureApiKey { key_file }
            | Credential::AnthropicApiKey { key_file } => relocate(key_file),
            Credential::Aws {
                credentials_file,
                oidc_exchange,
                ..
            } => {
                credentials_file.iter_mut().for_each(relocate);
                if let Some(exchange) = oidc_exchange {
                    relocate_oidc(&mut exchange.oidc);
                }
            }
            Credential::Azure {
                client_secret_file,
                oidc_exchange,
                ..
            } => {
                client_secret_file.iter_mut().for_each(relocate);
                oidc_exchange.iter_mut().for_each(relocate_oidc);
            }
            Credential::Gcp {
                credentials_file,
                workload_identity_federation,
                ..
            } => {
                credentials_file.iter_mut().for_each(relocate);
                if let Some(federation) = workload_identity_federation {
                    relocate_oidc(&mut federation.oidc);
                }
            }
        }
    }
    config
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

/// The `ext_proc` filter for one EnvoyExtensionPolicy `extProc` entry, as Envoy Gateway builds
/// it (disabled here, enabled per route).
///
/// The gRPC `:authority` is the backend Service's host, `<name>.<namespace>:<port>`, as Envoy
/// Gateway sets it; without it Envoy would send the cluster name, whose slashes HTTP/2 servers
/// reject.
fn ext_proc_filter(
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

/// The settings Envoy Gateway gives every backend cluster, with `endpoints` (its
/// LocalityLbEndpoints); `dns`: strict DNS, through the cluster extension that replaces the
/// deprecated cluster-level DNS fields, else static addresses.
fn upstream_cluster(name: &str, endpoints: Value, dns: bool) -> Value {
    let mut value = json!({
        "name": name,
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "LEAST_REQUEST",
        "per_connection_buffer_limit_bytes": CLUSTER_BUFFER_LIMIT,
        "ignore_health_on_host_removal": true,
        "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
        "load_assignment": {"cluster_name": name, "endpoints": endpoints},
    });
    if dns {
        value["cluster_type"] = json!({
            "name": "envoy.cluster.dns",
            "typed_config": typed("envoy.extensions.clusters.dns.v3.DnsCluster", json!({
                "dns_lookup_family": "V4_PREFERRED",
                "dns_refresh_rate": DNS_REFRESH_RATE,
                "respect_dns_ttl": true,
            })),
        });
    } else {
        value["type"] = json!("STATIC");
    }
    value
}

/// A BackendTrafficPolicy `retry` as Envoy Gateway v1.8 translates it
/// (`internal/gatewayapi/clustersettings.go` `buildRetry`, `internal/xds/translator/route.go`
/// `buildRetryPolicy`): Envoy Gateway's defaults (`connect-failure,refused-stream,unavailable,
/// cancelled,retriable-status-codes` on 503, 2 retries, other hosts first, 5 host selection
/// attempts), then the policy's fields; triggers are deduplicated and sorted, and given status
/// codes replace 503.
pub fn retry_policy(retry: &Value) -> Result<Value, String> {
    let mut policy = json!({
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "retriable_status_codes": [503],
        "num_retries": 2,
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }],
        "host_selection_retry_max_attempts": 5,
    });
    if let Some(n) = retry.get("numRetries").and_then(Value::as_u64) {
        policy["num_retries"] = json!(n);
    }
    if let Some(n) = retry
        .get("numAttemptsPerPriority")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
    {
        policy["retry_priority"] = json!({
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": n,
            },
        });
    }
    if let Some(on) = retry.get("retryOn") {
        let triggers: BTreeSet<&str> = items(on, "/triggers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if !triggers.is_empty() {
            policy["retry_on"] = json!(triggers.into_iter().collect::<Vec<_>>().join(","));
        }
        let codes: BTreeSet<u64> = items(on, "/httpStatusCodes")
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        policy["retriable_status_codes"] = json!(codes.into_iter().collect::<Vec<_>>());
    }
    if let Some(per_retry) = retry.get("perRetry") {
        if let Some(timeout) = text(per_retry, "/timeout") {
            let ms = duration_ms(timeout)
                .ok_or_else(|| format!("perRetry.timeout {timeout:?} is not a duration"))?;
            policy["per_try_timeout"] = json!(proto_duration(ms));
        }
        if let Some(back_off) = per_retry.get("backOff") {
            let mut out = Map::new();
            let mut intervals = Vec::new();
            for (field, envoy) in [
                ("baseInterval", "base_interval"),
                ("maxInterval", "max_interval"),
            ] {
                if let Some(value) = text(back_off, &format!("/{field}")) {
                    let ms = duration_ms(value).filter(|ms| *ms > 0).ok_or_else(|| {
                        format!("perRetry.backOff.{field} {value:?} must be a positive duration")
                    })?;
                    out.insert(envoy.into(), json!(proto_duration(ms)));
                    intervals.push(ms);
                }
            }
            if let [base, max] = intervals[..]
                && max < base
            {
                return Err("perRetry.backOff.maxInterval is shorter than baseInterval".into());
            }
            policy["retry_back_off"] = Value::Object(out);
        }
    }
    Ok(policy)
}

fn route_to_envoy(route: &IrRoute) -> Value {
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
fn virtual_hosts(listener_name: &str, routes: &[IrRoute]) -> Vec<Value> {
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

    fn instance(&mut self, instance: &Instance) {
        let gateway_name = format!("{}/{}", instance.gateway.namespace, instance.gateway.name);
        let fail =
            |message: String| Diagnostic::error(format!("Gateway {gateway_name}: {message}"));
        let objects = match super::routing::emit(instance) {
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
            match super::ratelimit::global_rules(policy_ns, &name_of(policy), rate_limit) {
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
                .map(super::ratelimit::local_route_config);
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
                            ir.rate_limits = super::ratelimit::route_filter_configs(
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
                            ir.rate_limits
                                .insert(super::ratelimit::LOCAL_FILTER.to_string(), local.clone());
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
                        if filter == super::ratelimit::LOCAL_FILTER {
                            any_local = true;
                            continue;
                        }
                        any_limited = true;
                        if filter != super::ratelimit::FILTER
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
                http_filters.push(super::ratelimit::local_http_filter());
            }
            if any_limited {
                http_filters.extend(super::ratelimit::http_filters(&name, &limited_domains));
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
                    "local_reply_config": super::local_reply::config(),
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
        for policy in super::attempts::policies(instance) {
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

    /// The first BackendSecurityPolicy field that references Secret `namespace/name`.
    fn secret_reference(&self, namespace: &str, name: &str) -> Option<(&'a Object, FieldPath)> {
        fn search(
            value: &Value,
            path: &mut Vec<String>,
            name: &str,
            namespace: &str,
            own: &str,
        ) -> bool {
            let Some(map) = value.as_object() else {
                return false;
            };
            for (key, child) in map {
                path.push(key.clone());
                let reference = matches!(
                    key.as_str(),
                    "secretRef" | "clientSecretRef" | "clientSecret" | "clientIDRef"
                ) && text(child, "/name") == Some(name)
                    && text(child, "/namespace").unwrap_or(own) == namespace;
                if reference || search(child, path, name, namespace, own) {
                    return true;
                }
                path.pop();
            }
            false
        }
        let input: &'a Validated = self.input;
        input.objects.iter().find_map(|object| {
            let Body::SecurityPolicy(policy) = &object.body else {
                return None;
            };
            // The typed spec, as written (serde keeps the CRD's field names): the parsed
            // document keeps only its metadata.
            let spec = serde_json::to_value(&policy.spec).ok()?;
            let mut path = vec!["spec".to_string()];
            search(&spec, &mut path, name, namespace, &object.id.namespace)
                .then(|| (object, FieldPath::parse(&path.join("."))))
        })
    }

    /// The retry policies of the user's BackendTrafficPolicies, by target; a policy with a
    /// retry Envoy Gateway would refuse is an error here too.
    fn collect_retries(&mut self) {
        let input: &'a Validated = self.input;
        for object in &input.objects {
            if object.id.group != EG_GROUP || object.id.kind != "BackendTrafficPolicy" {
                continue;
            }
            let doc = &input.document(object).value;
            let Some(retry) = doc.pointer("/spec/retry") else {
                continue;
            };
            let policy = match retry_policy(retry) {
                Ok(policy) => policy,
                Err(message) => {
                    self.errors.push(input.error_at(
                        object,
                        FieldPath::parse("spec.retry"),
                        message,
                    ));
                    continue;
                }
            };
            let targets = items(doc, "/spec/targetRefs")
                .iter()
                .chain(doc.pointer("/spec/targetRef"));
            for target in targets {
                let kind = match text(target, "/kind") {
                    Some("HTTPRoute") => "HTTPRoute",
                    Some("Gateway") => "Gateway",
                    _ => continue,
                };
                let name = text(target, "/name").unwrap_or_default().to_string();
                self.retries
                    .insert((object.id.namespace.clone(), kind, name), policy.clone());
            }
        }
    }

    /// The global rate-limit rules of the user's BackendTrafficPolicies, by target; a rule
    /// Envoy Gateway would refuse is an error here too. Every policy is recorded, with or
    /// without rate limits: as in Envoy Gateway, a policy on an HTTPRoute replaces the one on
    /// its Gateway (unless it sets `mergeType`).
    fn collect_rate_limits(&mut self) {
        let input: &'a Validated = self.input;
        for object in &input.objects {
            if object.id.group != EG_GROUP || object.id.kind != "BackendTrafficPolicy" {
                continue;
            }
            let doc = &input.document(object).value;
            let mut limits = TrafficLimits {
                merges: doc.pointer("/spec/mergeType").is_some(),
                ..TrafficLimits::default()
            };
            if let Some(rate_limit) = doc.pointer("/spec/rateLimit") {
                let (ns, name) = (&object.id.namespace, &object.id.name);
                let global = super::ratelimit::global_rules(ns, name, rate_limit)
                    .map_err(|m| ("spec.rateLimit.global", m));
                let local = super::ratelimit::local_policy(ns, name, rate_limit)
                    .map_err(|m| ("spec.rateLimit.local", m));
                match global.and_then(|g| local.map(|l| (g, l))) {
                    Ok((global, local)) => {
                        limits.global = global;
                        limits.local = local;
                    }
                    Err((field, message)) => {
                        self.errors
                            .push(input.error_at(object, FieldPath::parse(field), message));
                        continue;
                    }
                }
            }
            let targets = items(doc, "/spec/targetRefs")
                .iter()
                .chain(doc.pointer("/spec/targetRef"));
            for (t, target) in targets.enumerate() {
                let kind = match text(target, "/kind") {
                    Some("HTTPRoute") => "HTTPRoute",
                    Some("Gateway") => "Gateway",
                    _ => continue,
                };
                if text(target, "/sectionName").is_some() && !limits.is_empty() {
                    self.warnings.push(input.warning_at(
                        object,
                        FieldPath::parse("spec.targetRefs").index(t).key("sectionName"),
                        "the standalone Envoy applies rate limits to whole HTTPRoutes and Gateways; this target's rate limits are not applied",
                    ));
                    continue;
                }
                let name = text(target, "/name").unwrap_or_default().to_string();
                if limits.merges && kind == "HTTPRoute" && !limits.is_empty() {
                    self.merged_rate_limits.insert(
                        (object.id.namespace.clone(), name.clone()),
                        object.id.clone(),
                    );
                }
                self.rate_limits
                    .insert((object.id.namespace.clone(), kind, name), limits.clone());
            }
        }
    }

    /// The rate-limit rules of the routes of HTTPRoute `namespace/name` on `gateway`: the
    /// user's BackendTrafficPolicy targeting the HTTPRoute, else (or, with `mergeType`, when
    /// that one has none) the one targeting the Gateway.
    fn rate_limits_of(&self, namespace: &str, name: &str, gateway: &str) -> Option<&TrafficLimits> {
        let on_gateway = || {
            self.rate_limits
                .get(&(namespace.to_string(), "Gateway", gateway.to_string()))
        };
        match self
            .rate_limits
            .get(&(namespace.to_string(), "HTTPRoute", name.to_string()))
        {
            Some(limits) if limits.merges && limits.is_empty() => on_gateway(),
            Some(limits) => Some(limits),
            None => on_gateway(),
        }
    }

    /// The rate-limit service's files and its cluster, when a route is limited.
    fn rate_limit_files(&mut self) -> Option<RateLimitSummary> {
        if self.rate_limit_service.is_empty() {
            return None;
        }
        for (domain, document) in self.rate_limit_service.documents() {
            self.files.push(FileEntry::public(
                format!("{RATELIMIT_DIR}/{}", super::ratelimit::file_name(&domain)),
                crate::render::yaml(&document),
            ));
        }
        let cluster = super::ratelimit::CLUSTER.to_string();
        self.clusters.insert(
            cluster.clone(),
            grpc_socket_cluster(&cluster, RATELIMIT_SOCKET),
        );
        self.referenced.insert(cluster);
        Some(RateLimitSummary {
            config_dir: RATELIMIT_DIR.to_string(),
            socket: RATELIMIT_SOCKET.to_string(),
        })
    }

    /// Warns about input objects that shape traffic on a cluster but that the standalone
    /// Envoy, which carries the AIGatewayRoutes only, does not apply.
    fn not_applied(&mut self, plan: &Plan) {
        const ROUTES: [&str; 5] = ["HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute"];
        const POLICIES: [&str; 5] = [
            "BackendTrafficPolicy",
            "ClientTrafficPolicy",
            "SecurityPolicy",
            "EnvoyExtensionPolicy",
            "EnvoyPatchPolicy",
        ];
        let input: &'a Validated = self.input;
        for &index in &plan.passthrough {
            let object = &input.objects[index];
            let (group, kind) = (object.id.group.as_str(), object.id.kind.as_str());
            let applies = (group == GATEWAY_GROUP && ROUTES.contains(&kind))
                || (group == EG_GROUP && POLICIES.contains(&kind));
            if applies && group == EG_GROUP && kind == "BackendTrafficPolicy" {
                // Retries and rate limits are applied; any other setting is not.
                let spec = input.document(object).value.pointer("/spec").cloned();
                let others: Vec<String> = spec
                    .as_ref()
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .filter(|k| {
                        !matches!(
                            k.as_str(),
                            "targetRef" | "targetRefs" | "retry" | "rateLimit" | "mergeType"
                        )
                    })
                    .cloned()
                    .collect();
                if !others.is_empty() {
                    self.warnings.push(input.warning_at(
                        object,
                        FieldPath::parse("spec"),
                        format!(
                            "the standalone Envoy applies a BackendTrafficPolicy's retry and rateLimit only; {} not applied",
                            others.join(", ")
                        ),
                    ));
                }
                continue;
            }
            if applies {
                self.warnings.push(input.warning_at(
                    object,
                    FieldPath::root(),
                    format!("{kind} is not applied by the standalone Envoy, which serves the AIGatewayRoutes only"),
                ));
            }
        }
    }

    fn secret_files(&mut self, instance: &Instance, gateway: &str, dir: &str, name: &str) {
        let Some(object) = self.find("", "Secret", &instance.namespace, name) else {
            let message = format!(
                "Secret {}/{name} is read by the extproc of Gateway {gateway} but is not in the input; the standalone target takes credentials from the input, so add the Secret to it (and keep that input out of Git)",
                instance.namespace
            );
            let error = match self.secret_reference(&instance.namespace, name) {
                Some((policy, field)) => self.input.error_at(policy, field, message),
                None => Diagnostic::error(message),
            };
            self.errors.push(error);
            return;
        };
        match object_data(self.document(object), true) {
            Ok(data) => {
                for (key, bytes) in data {
                    if !is_file_name(&key) {
                        self.errors.push(self.input.error_at(
                            object,
                            FieldPath::parse("data"),
                            format!("key {key:?} cannot be a file name"),
                        ));
                        continue;
                    }
                    self.files.push(FileEntry {
                        path: format!("{dir}/{SECRETS_DIR}/{name}/{key}"),
                        bytes,
                        private: true,
                    });
                }
            }
            Err(err) => {
                self.errors
                    .push(self.input.error_at(object, FieldPath::parse("data"), err));
            }
        }
    }

    /// The indices of the listeners of `view` an HTTPRoute in the Gateway's namespace attaches
    /// to, as Envoy Gateway decides it.
    fn attached_listeners(
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
    fn translate_rules(
        &mut self,
        instance: &Instance,
        route: &Value,
        filters: &BTreeMap<String, &Value>,
    ) -> Result<Vec<IrRoute>, String> {
        let namespace = text(route, "/metadata/namespace").unwrap_or_default();
        let name = text(route, "/metadata/name").unwrap_or_default();
        let mut out = Vec::new();
        for (i, rule) in items(route, "/spec/rules").iter().enumerate() {
            let mut host_rewrite = None;
            let mut respond = None;
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
                        "urlRewrite" => {
                            let unsupported =
                                || format!("HTTPRouteFilter {filter_name}: unsupported urlRewrite");
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
                                    let header = text(rewrite, "/hostname/header")
                                        .ok_or_else(unsupported)?;
                                    fields.insert("host_rewrite_header".into(), json!(header));
                                }
                                _ => return Err(unsupported()),
                            }
                            if rewrite.get("appendXForwardedHost").and_then(Value::as_bool)
                                != Some(false)
                            {
                                fields.insert("append_x_forwarded_host".into(), json!(true));
                            }
                            host_rewrite = Some(fields);
                        }
                        "directResponse" => {
                            let body = match text(spec, "/directResponse/body/type") {
                                None => None,
                                Some("Inline") => {
                                    text(spec, "/directResponse/body/inline").map(str::to_string)
                                }
                                Some(other) => {
                                    return Err(format!(
                                        "HTTPRouteFilter {filter_name}: body type {other}"
                                    ));
                                }
                            };
                            respond = Some(Action::Respond {
                                status: spec
                                    .pointer("/directResponse/statusCode")
                                    .and_then(Value::as_u64)
                                    .unwrap_or(200),
                                body,
                                content_type: text(spec, "/directResponse/contentType")
                                    .map(str::to_string),
                            });
                        }
                        other => {
                            return Err(format!(
                                "HTTPRouteFilter {filter_name}: unsupported {other}"
                            ));
                        }
                    }
                }
            }
            let action = match respond {
                Some(action) => action,
                None => {
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
                            .map(|t| {
                                duration_ms(t).ok_or_else(|| format!("rule {i}: duration {t:?}"))
                            })
                            .transpose()
                    };
                    Action::Forward {
                        cluster,
                        timeout_ms: timeout("/timeouts/backendRequest")?
                            .or(timeout("/timeouts/request")?),
                        host_rewrite: host_rewrite.clone(),
                        retry: self.retry_of(namespace, name, &instance.gateway.name),
                    }
                }
            };
            for (j, m) in items(rule, "/matches").iter().enumerate() {
                if let Some(key) = m
                    .as_object()
                    .and_then(|o| o.keys().find(|k| *k != "path" && *k != "headers"))
                {
                    return Err(format!("rule {i}: unsupported match {key}"));
                }
                let path = match (text(m, "/path/type"), text(m, "/path/value")) {
                    (_, None) => None,
                    (Some("Exact"), Some(v)) => Some(PathMatch::Exact(v.into())),
                    (Some("RegularExpression"), Some(v)) => Some(PathMatch::Regex(v.into())),
                    (_, Some(v)) => Some(PathMatch::Prefix(v.into())),
                };
                let headers = items(m, "/headers")
                    .iter()
                    .map(|h| HeaderMatch {
                        name: text(h, "/name").unwrap_or_default().to_string(),
                        exact: text(h, "/type") != Some("RegularExpression"),
                        value: text(h, "/value").unwrap_or_default().to_string(),
                    })
                    .collect();
                out.push(IrRoute {
                    name: format!("httproute/{namespace}/{name}/rule/{i}/match/{j}"),
                    hostname: String::new(),
                    path,
                    headers,
                    action: action.clone(),
                    ext_procs: Vec::new(),
                    rate_limits: Map::new(),
                });
            }
        }
        Ok(out)
    }

    /// The cluster of an HTTPRoute rule whose backends Envoy balances, as Envoy Gateway builds
    /// it (`internal/xds/translator/cluster.go`, `buildXdsClusterLoadAssignment` with
    /// `buildWeightedLocalities`): one locality per backendRef, `region`
    /// `<cluster>/backend/<k>`, weighted by the backendRef's weight, with locality-weighted
    /// balancing; the endpoints and settings of each Backend as [`Self::backend_cluster`] makes
    /// them. Backends with different TLS settings keep theirs through transport socket matches
    /// on endpoint metadata.
    fn rule_cluster(
        &mut self,
        instance: &Instance,
        cluster: &str,
        refs: &[Value],
    ) -> Result<String, String> {
        // (backendRef index, the Backend's own cluster, weight).
        let mut parts = Vec::new();
        for (k, backend_ref) in refs.iter().enumerate() {
            let name = self.backend_cluster(instance, backend_ref)?;
            // A Backend found wanting is reported already.
            if let Some(backend) = self.clusters.get(&name).filter(|v| !v.is_null()) {
                let weight = backend_ref
                    .get("weight")
                    .and_then(Value::as_u64)
                    .unwrap_or(1);
                parts.push((k, backend.clone(), weight));
            }
        }
        let kinds: BTreeSet<bool> = parts
            .iter()
            .map(|(_, b, _)| b.get("cluster_type").is_some())
            .collect();
        if kinds.len() > 1 {
            return Err(format!(
                "cluster {cluster} mixes Backends with DNS names and addresses"
            ));
        }
        let sockets: Vec<(usize, Option<&Value>)> = parts
            .iter()
            .map(|(k, b, _)| (*k, b.get("transport_socket")))
            .collect();
        let distinct: BTreeSet<String> = sockets
            .iter()
            .map(|(_, s)| s.map(Value::to_string).unwrap_or_default())
            .collect();
        // Backends with different TLS settings keep theirs through socket matches.
        let by_match = distinct.len() > 1;
        let localities: Vec<Value> = parts
            .iter()
            .map(|(k, backend, weight)| {
                let mut lb_endpoints = backend
                    .pointer("/load_assignment/endpoints/0/lb_endpoints")
                    .cloned()
                    .unwrap_or(json!([]));
                if by_match && let Some(list) = lb_endpoints.as_array_mut() {
                    for endpoint in list {
                        endpoint["metadata"] = json!({"filter_metadata": {"envoy.transport_socket_match": {"aigw.backend": k.to_string()}}});
                    }
                }
                json!({
                    "locality": {"region": format!("{cluster}/backend/{k}")},
                    "lb_endpoints": lb_endpoints,
                    "load_balancing_weight": weight,
                })
            })
            .collect();
        let mut value = upstream_cluster(cluster, json!(localities), kinds.contains(&true));
        value["common_lb_config"] = json!({"locality_weighted_lb_config": {}});
        // As Envoy Gateway: ALPN when every backend has TLS, HTTP/2 when one speaks it.
        let h2 = parts.iter().find_map(|(_, b, _)| {
            b.pointer(&format!(
                "/typed_extension_protocol_options/{HTTP_PROTOCOL_OPTIONS}"
            ))
            .filter(|p| p.get("explicit_http_config").is_some())
        });
        let all_tls = !sockets.is_empty() && sockets.iter().all(|(_, s)| s.is_some());
        let protocol = match (h2, all_tls) {
            (Some(h2), _) => Some(h2.clone()),
            (None, true) => Some(typed(
                HTTP_PROTOCOL_OPTIONS,
                json!({"auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}),
            )),
            (None, false) => None,
        };
        if let Some(protocol) = protocol {
            value["typed_extension_protocol_options"] = json!({HTTP_PROTOCOL_OPTIONS: protocol});
        }
        // One socket for all; with matches, the default negotiates ALPN too when every
        // backend has TLS.
        if (!by_match || all_tls)
            && let Some((_, Some(socket))) = sockets.first()
        {
            value["transport_socket"] = (*socket).clone();
        }
        if by_match {
            let matches: Vec<Value> = sockets
                .iter()
                .filter_map(|(k, socket)| {
                    Some(json!({
                        "name": format!("backend/{k}"),
                        "match": {"aigw.backend": k.to_string()},
                        "transport_socket": (*socket)?,
                    }))
                })
                .collect();
            value["transport_socket_matches"] = json!(matches);
        }
        self.clusters.insert(cluster.to_string(), value);
        Ok(cluster.to_string())
    }

    /// Applies one EnvoyPatchPolicy patch to the resource it names: a cluster (or its load
    /// assignment, which Envoy Gateway sends as a ClusterLoadAssignment for EDS clusters), or
    /// the route configuration of a listener from `listeners_from` on.
    fn apply_patch(&mut self, patch: &Value, listeners_from: usize) -> Result<(), String> {
        let name = text(patch, "/name").unwrap_or_default();
        let kind = text(patch, "/type").unwrap_or_default();
        let operation = patch
            .get("operation")
            .ok_or_else(|| "a patch has no operation".to_string())?;
        let missing = || format!("{kind} {name} does not exist");
        let resource = match kind.rsplit('.').next().unwrap_or_default() {
            "Cluster" => self.clusters.get_mut(name).ok_or_else(missing)?,
            "ClusterLoadAssignment" => self
                .clusters
                .get_mut(name)
                .and_then(|c| c.get_mut("load_assignment"))
                .ok_or_else(missing)?,
            "RouteConfiguration" => {
                const ROUTE_CONFIG: &str =
                    "/default_filter_chain/filters/0/typed_config/route_config";
                let position = self.listeners[listeners_from..]
                    .iter()
                    .position(|l| {
                        l.pointer(ROUTE_CONFIG)
                            .and_then(|rc| rc.get("name"))
                            .and_then(Value::as_str)
                            == Some(name)
                    })
                    .ok_or_else(missing)?;
                self.listeners[listeners_from + position]
                    .pointer_mut(ROUTE_CONFIG)
                    .ok_or_else(missing)?
            }
            "Listener" => {
                let position = self.listeners[listeners_from..]
                    .iter()
                    .position(|l| l.get("name").and_then(Value::as_str) == Some(name))
                    .ok_or_else(missing)?;
                &mut self.listeners[listeners_from + position]
            }
            _ => {
                return Err(format!(
                    "patches of {kind} are not applied by the standalone target"
                ));
            }
        };
        super::jsonpatch::apply(resource, operation)
    }

    /// The retry policy of the routes of HTTPRoute `namespace/name`: from the user's
    /// BackendTrafficPolicy targeting the HTTPRoute, else the one targeting its Gateway.
    fn retry_of(&self, namespace: &str, name: &str, gateway: &str) -> Option<Value> {
        self.retries
            .get(&(namespace.to_string(), "HTTPRoute", name.to_string()))
            .or_else(|| {
                self.retries
                    .get(&(namespace.to_string(), "Gateway", gateway.to_string()))
            })
            .cloned()
    }

    /// The cluster of an HTTPRoute backendRef (an Envoy Gateway Backend); builds it once.
    fn backend_cluster(
        &mut self,
        instance: &Instance,
        backend_ref: &Value,
    ) -> Result<String, String> {
        let group = text(backend_ref, "/group").unwrap_or_default();
        let kind = text(backend_ref, "/kind").unwrap_or("Service");
        let name = text(backend_ref, "/name").unwrap_or_default();
        let namespace = text(backend_ref, "/namespace").unwrap_or(&instance.namespace);
        let cluster = format!("backend/{namespace}/{name}");
        if self.clusters.contains_key(&cluster) {
            return Ok(cluster);
        }
        let Some(object) = (group == EG_GROUP && kind == "Backend")
            .then(|| self.find(EG_GROUP, "Backend", namespace, name))
            .flatten()
        else {
            // Reported once per target: Kubernetes Services are not reachable from a laptop.
            self.clusters.insert(cluster.clone(), Value::Null);
            self.errors.push(Diagnostic::error(format!(
                "Gateway {}/{}: an AIServiceBackend targets {kind} {namespace}/{name}, which the standalone Envoy cannot reach; point the AIServiceBackend at an Envoy Gateway Backend (gateway.envoyproxy.io/Backend) with fqdn, ip or unix endpoints",
                instance.gateway.namespace, instance.gateway.name
            )));
            return Ok(cluster);
        };
        let value = self.build_backend_cluster(&cluster, object);
        self.clusters.insert(cluster.clone(), value);
        Ok(cluster)
    }

    fn build_backend_cluster(&mut self, cluster: &str, object: &'a Object) -> Value {
        let doc = self.document(object).clone();
        let mut endpoints = Vec::new();
        let mut kinds = BTreeSet::new();
        for (i, endpoint) in items(&doc, "/spec/endpoints").iter().enumerate() {
            let port = |p: &str| {
                endpoint
                    .pointer(p)
                    .and_then(Value::as_u64)
                    .and_then(|p| u32::try_from(p).ok())
            };
            let address = if let Some(host) = text(endpoint, "/fqdn/hostname") {
                kinds.insert("fqdn");
                port("/fqdn/port").map(|p| socket_address(host, p))
            } else if let Some(ip) = text(endpoint, "/ip/address") {
                kinds.insert("ip");
                port("/ip/port").map(|p| socket_address(ip, p))
            } else if let Some(path) = text(endpoint, "/unix/path") {
                kinds.insert("unix");
                Some(json!({"pipe": {"path": path}}))
            } else {
                None
            };
            match address {
                Some(address) => endpoints.push(json!({"endpoint": {"address": address}})),
                None => self.errors.push(self.input.error_at(
                    object,
                    FieldPath::parse("spec.endpoints").index(i),
                    "the standalone target needs an fqdn, ip or unix endpoint with its port",
                )),
            }
        }
        if endpoints.is_empty() {
            self.errors.push(self.input.error_at(
                object,
                FieldPath::parse("spec.endpoints"),
                "the standalone target needs at least one endpoint",
            ));
        }
        if kinds.len() > 1 {
            self.errors.push(self.input.error_at(
                object,
                FieldPath::parse("spec.endpoints"),
                "endpoints mix address types (fqdn, ip, unix), which Envoy Gateway does not allow in one Backend",
            ));
        }
        for field in ["tls", "fallback"] {
            if doc.pointer(&format!("/spec/{field}")).is_some() {
                self.errors.push(self.input.error_at(
                    object,
                    FieldPath::parse("spec").key(field),
                    format!(
                        "spec.{field} is not supported by the standalone target yet; use a BackendTLSPolicy for TLS"
                    ),
                ));
            }
        }
        if text(&doc, "/spec/type").is_some_and(|t| t != "Endpoints") {
            self.errors.push(self.input.error_at(
                object,
                FieldPath::parse("spec.type"),
                "only Endpoints Backends are supported by the standalone target",
            ));
        }
        let mut value = upstream_cluster(
            cluster,
            json!([{"lb_endpoints": endpoints}]),
            kinds.contains("fqdn"),
        );
        let h2c = items(&doc, "/spec/appProtocols")
            .iter()
            .any(|p| p.as_str() == Some(H2C));
        let tls = self.tls_socket(object);
        let protocol = match (h2c, tls.is_some()) {
            (true, _) => Some(json!({"explicit_http_config": {"http2_protocol_options": {}}})),
            (false, true) => Some(
                json!({"auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}),
            ),
            (false, false) => None,
        };
        if let Some(protocol) = protocol {
            value["typed_extension_protocol_options"] =
                json!({HTTP_PROTOCOL_OPTIONS: typed(HTTP_PROTOCOL_OPTIONS, protocol)});
        }
        if let Some(tls) = tls {
            value["transport_socket"] = tls;
        }
        value
    }

    /// The TLS transport socket from the BackendTLSPolicy targeting `backend`, if any.
    fn tls_socket(&mut self, backend: &Object) -> Option<Value> {
        let input: &'a Validated = self.input;
        let policies: Vec<&'a Object> = input
            .objects
            .iter()
            .filter(|o| {
                o.id.group == GATEWAY_GROUP
                    && o.id.kind == "BackendTLSPolicy"
                    && o.id.namespace == backend.id.namespace
            })
            .filter(|o| {
                items(&input.document(o).value, "/spec/targetRefs")
                    .iter()
                    .any(|t| {
                        text(t, "/group") == Some(EG_GROUP)
                            && text(t, "/kind") == Some("Backend")
                            && text(t, "/name") == Some(backend.id.name.as_str())
                    })
            })
            .collect();
        let policy = *policies.first()?;
        if policies.len() > 1 {
            self.errors.push(self.input.error_at(
                policies[1],
                FieldPath::parse("spec.targetRefs"),
                format!(
                    "{} also targets Backend {}/{}; Envoy Gateway applies only one BackendTLSPolicy per Backend",
                    policy.id, backend.id.namespace, backend.id.name
                ),
            ));
        }
        let doc = self.document(policy).clone();
        let hostname = text(&doc, "/spec/validation/hostname").unwrap_or_default();
        let trusted_ca = if text(&doc, "/spec/validation/wellKnownCACertificates") == Some("System")
        {
            SYSTEM_CA_BUNDLE.to_string()
        } else {
            self.ca_bundle(policy, &doc)
        };
        let sans: Vec<Value> = items(&doc, "/spec/validation/subjectAltNames")
            .iter()
            .map(|san| match text(san, "/type") {
                Some("URI") => json!({"san_type": "URI", "matcher": {"exact": text(san, "/uri")}}),
                _ => json!({"san_type": "DNS", "matcher": {"exact": text(san, "/hostname")}}),
            })
            .collect();
        let sans = if sans.is_empty() {
            vec![json!({"san_type": "DNS", "matcher": {"exact": hostname}})]
        } else {
            sans
        };
        Some(json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", json!({
                "sni": hostname,
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": trusted_ca},
                    "match_typed_subject_alt_names": sans,
                }},
            })),
        }))
    }

    /// Writes the CA bundle of a BackendTLSPolicy's `caCertificateRefs`; returns its path.
    fn ca_bundle(&mut self, policy: &'a Object, doc: &Value) -> String {
        let path = format!(
            "ca/{}/{}",
            policy.id.namespace,
            crate::write::bounded_file_name(&policy.id.name, ".crt")
        );
        if self.files.iter().any(|f| f.path == path) {
            return path;
        }
        let mut bundle = String::new();
        let field = FieldPath::parse("spec.validation.caCertificateRefs");
        for (i, reference) in items(doc, "/spec/validation/caCertificateRefs")
            .iter()
            .enumerate()
        {
            let kind = text(reference, "/kind").unwrap_or_default();
            let name = text(reference, "/name").unwrap_or_default();
            let secret = match kind {
                "ConfigMap" => false,
                "Secret" => true,
                other => {
                    self.errors.push(self.input.error_at(
                        policy,
                        field.index(i),
                        format!("{other} CA references are not supported by the standalone target; use a ConfigMap"),
                    ));
                    continue;
                }
            };
            let Some(object) = self.find("", kind, &policy.id.namespace, name) else {
                self.errors.push(self.input.error_at(
                    policy,
                    field.index(i),
                    format!(
                        "{kind} {}/{name} is not in the input; the standalone target writes the CA bundle from it, so add it to the input",
                        policy.id.namespace
                    ),
                ));
                continue;
            };
            let data = match object_data(self.document(object), secret) {
                Ok(data) => data,
                Err(err) => {
                    self.errors
                        .push(self.input.error_at(object, FieldPath::parse("data"), err));
                    continue;
                }
            };
            let certificate = data
                .get("ca.crt")
                .or_else(|| (data.len() == 1).then(|| data.values().next()).flatten());
            let Some(certificate) = certificate else {
                self.errors.push(self.input.error_at(
                    object,
                    FieldPath::parse("data"),
                    "no CA certificate found: expected the key ca.crt (or a single key)",
                ));
                continue;
            };
            if !bundle.is_empty() {
                bundle.push('\n');
            }
            bundle.push_str(&String::from_utf8_lossy(certificate));
        }
        self.files.push(FileEntry::public(path.clone(), bundle));
        path
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod retry_tests;
