//! Stage 4, plan: resolved objects in, one typed [`Plan`] of what will exist out.
//!
//! For each Gateway with AIGatewayRoutes the plan holds one extproc [`Instance`]: its filter
//! configuration (the contract of `aigw-extproc`), the Secrets it mounts, its workload settings
//! (from GatewayConfig and the CLI), the HTTPRoutes that carry the attached routes (one per
//! AIGatewayRoute, split past Gateway API's 16-rule limit), the ReferenceGrants those need, the
//! EnvoyExtensionPolicy (with user ext_proc filters for the same routes merged in) and the
//! rate-limit policy compiled from QuotaPolicies. Every name is decided here, once; the emit
//! stage only shapes objects.

use std::collections::{BTreeMap, BTreeSet};

use aigw_filterconfig::{self as fc, FilterConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, DiagnosticKind, FieldPath};
use crate::model::{self, EG_GROUP, ParentReference};
use crate::resolve::{Key, Resolved};
use crate::validate::{Body, Object, ObjectId, Validated};

mod auth;
mod checks;
mod extension;
mod gateway;
mod http_routes;
mod instance;
mod quota;
mod route;
mod workload;

pub use auth::mounted_secret;
pub use gateway::EG_DEFAULT_BUFFER_LIMIT;
pub use route::{rule_authority, rule_cluster, upstream_prefix};

/// Default extproc image; pin your own with `--extproc-image` or GatewayConfig.
pub const DEFAULT_EXTPROC_IMAGE: &str =
    concat!("ghcr.io/aigw/aigw-extproc:v", env!("CARGO_PKG_VERSION"));
/// Where Secrets are mounted in the extproc container.
pub const SECRETS_ROOT: &str = "/etc/aigw/secrets";
/// Where the filter config is mounted.
pub const CONFIG_DIR: &str = "/etc/aigw/config";
/// File name of the filter config inside the ConfigMap.
pub const CONFIG_FILE: &str = "filter-config.yaml";
/// gRPC port of the extproc.
pub const GRPC_PORT: i32 = 1063;
/// Admin (metrics, health) port of the extproc.
pub const ADMIN_PORT: i32 = 1064;
/// Path prefixes of the AI endpoints: only these are routed to the extproc (the contract's
/// list, which the extproc's endpoints are checked against).
pub use aigw_filterconfig::AI_PATH_PREFIXES;
/// Gateway API's limit of rules per HTTPRoute.
pub const MAX_RULES_PER_ROUTE: usize = 16;
/// Annotation on GatewayConfig carrying extproc ServiceAccount annotations (a YAML or JSON map).
pub const SERVICE_ACCOUNT_ANNOTATIONS: &str = "aigw.envoyproxy.io/service-account-annotations";
/// Metadata key of QuotaPolicy costs (as upstream).
pub const QUOTA_COST_KEY: &str = "quota_cost";
/// Start of the warning about an input Secret left out of the Kubernetes output.
pub const SECRET_NOT_WRITTEN: &str = "Secret not written to the output";
/// ConfigMaps above this size are refused by the API server.
pub const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Extproc image when GatewayConfig sets none.
    pub extproc_image: String,
    /// Request body limit written to the filter config.
    pub max_request_body_bytes: u64,
    /// Replicas of each extproc Deployment.
    pub replicas: i32,
    /// Seconds a client has to send a whole request.
    pub request_receive_timeout_secs: u32,
    /// Emit EnvoyPatchPolicies (Envoy Gateway must run with
    /// `extensionApis.enableEnvoyPatchPolicy`).
    pub envoy_patch_policies: bool,
}

/// Seconds a client has to send a whole request when `--request-receive-timeout` is not given:
/// long enough for the largest body on a slow link, short enough that a client sending nothing
/// does not hold a connection for long.
pub const DEFAULT_REQUEST_RECEIVE_TIMEOUT_SECS: u32 = 120;

/// A Secret mounted into an extproc.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MountedSecret {
    /// Secret name (in the instance's namespace).
    pub secret: String,
    /// Pod volume name.
    pub volume: String,
    /// Directory it is mounted at.
    pub mount_path: String,
}

/// One backendRef of an HTTPRoute rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTarget {
    /// The AIServiceBackend's `backendRef`, namespace resolved.
    pub target: model::BackendObjectReference,
    /// Namespace of the target.
    pub target_namespace: String,
    /// Share of traffic within its priority (> 0).
    pub weight: u32,
    /// Fallback tier (0 = primary).
    pub priority: u32,
    /// How Envoy Gateway builds the cluster part of this target.
    pub facts: TargetFacts,
}

/// What decides the shape of the cluster Envoy Gateway makes for a backendRef.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetFacts {
    /// Endpoints by DNS name (a `STRICT_DNS` cluster with its endpoints inline), rather than
    /// IP addresses or a Service (EDS: endpoints in a separate ClusterLoadAssignment).
    pub dns: bool,
    /// Upstream TLS (a BackendTLSPolicy targets it, or `spec.tls`).
    pub tls: bool,
    /// HTTP/2 or WebSocket application protocol.
    pub http_protocol: bool,
}

impl BackendRule {
    /// Whether Envoy Gateway gives the rule's cluster an `HttpProtocolOptions` entry
    /// (`internal/xds/translator/cluster.go`, `buildTypedExtensionProtocolOptions`): when every
    /// backend has TLS (ALPN), or one speaks HTTP/2 or WebSocket.
    pub fn has_protocol_options(&self) -> bool {
        self.targets.iter().all(|t| t.facts.tls)
            || self.targets.iter().any(|t| t.facts.http_protocol)
    }
}

/// How the extproc on the router tells Envoy which HTTPRoute rule a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// By backend (`x-ai-eg-selected-backend`): one HTTPRoute rule per backendRef, the request
    /// translated on the router; no fallback between backends.
    Backend,
    /// By rule (`x-aigw-rule`, the value being the rule's cluster name): one HTTPRoute rule per
    /// AIGatewayRoute rule listing its backends; Envoy balances, retries and falls back between
    /// them, and the extproc in the cluster translates each attempt (EnvoyPatchPolicies).
    Rule,
}

/// An HTTPRoute rule carrying AI requests.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendRule {
    /// Rule name.
    pub name: String,
    /// How the rule is selected.
    pub selection: Selection,
    /// The header value the rule matches: the backend id, or the rule's cluster name (set when
    /// the HTTPRoutes are cut, as it names the HTTPRoute and the rule's index in it).
    pub selector: String,
    /// Index of the AIGatewayRoute rule it comes from.
    pub source_rule: usize,
    /// The filter-config backends it carries.
    pub backend_ids: Vec<String>,
    /// Its backendRefs, in order (the order of Envoy Gateway's localities).
    pub targets: Vec<RuleTarget>,
    /// Rule timeouts (request always set).
    pub request_timeout: String,
    /// Per-attempt timeout.
    pub backend_request_timeout: Option<String>,
    /// `streamIdleTimeout`: an attempt that receives no byte for this long is abandoned.
    pub stream_idle_timeout: Option<String>,
    /// Path prefix of the requests the extproc sends this backend, when the AI prefixes do not
    /// cover it: Envoy re-matches routes after the extproc on the router rewrote `:path`
    /// ([`Selection::Backend`] only).
    pub upstream_prefix: Option<String>,
}

impl BackendRule {
    /// The header the rule matches.
    pub fn selector_header(&self) -> &'static str {
        match self.selection {
            Selection::Backend => fc::SELECTED_BACKEND_HEADER,
            Selection::Rule => fc::SELECTED_RULE_HEADER,
        }
    }
}

/// One generated HTTPRoute.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRoutePlan {
    /// Name.
    pub name: String,
    /// The AIGatewayRoute it comes from.
    pub source: ObjectId,
    /// Parent references to the Gateway (namespace resolved).
    pub parent_refs: Vec<ParentReference>,
    /// Hostnames.
    pub hostnames: Vec<String>,
    /// Labels copied from the AIGatewayRoute.
    pub labels: BTreeMap<String, String>,
    /// Backend rules.
    pub rules: Vec<BackendRule>,
    /// Whether this part carries the catch-all rule.
    pub catch_all: bool,
    /// The hostname the router sets for this part's rules ([`rule_authority`]), its only
    /// hostname then; the catch-all goes to an HTTPRoute of its own on the client's hostnames.
    pub rule_authority: Option<String>,
    /// Host rewrite HTTPRouteFilter.
    pub host_rewrite_filter: String,
    /// The HTTPRouteFilter that gives a backend without a hostname the client's Host back
    /// (from [`aigw_filterconfig::CLIENT_AUTHORITY_HEADER`]), for the rules the router
    /// processes in a route with a [`rule_authority`](Self::rule_authority).
    pub client_host_filter: String,
    /// Not-found HTTPRouteFilter.
    pub not_found_filter: String,
}

impl HttpRoutePlan {
    /// Whether `rule` takes the client's Host back from the router's header: processed on the
    /// router in a route Envoy finds by [`rule_authority`](Self::rule_authority), towards a
    /// Backend without a hostname (Envoy's automatic host rewrite would leave the rule's).
    pub fn client_host(&self, rule: &BackendRule) -> bool {
        self.rule_authority.is_some()
            && rule.selection == Selection::Backend
            && rule.targets.iter().all(|t| !t.facts.dns)
    }

    /// The host rewrite HTTPRouteFilter of `rule`.
    pub fn host_filter(&self, rule: &BackendRule) -> &str {
        if self.client_host(rule) {
            &self.client_host_filter
        } else {
            &self.host_rewrite_filter
        }
    }
}

/// A ReferenceGrant letting the generated HTTPRoutes reach Backends in another namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceGrantPlan {
    /// Namespace of the Backends.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Backend names (at most 16).
    pub backends: Vec<String>,
}

/// A rate-limit rule compiled from a QuotaPolicy bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitRule {
    /// The header naming what the request was routed to.
    pub selector_header: &'static str,
    /// Its values for the requests that count against the bucket.
    pub selectors: Vec<String>,
    /// Extra client selectors of the bucket (Envoy Gateway RateLimitSelectCondition).
    pub client_selectors: Vec<serde_json::Map<String, Value>>,
    /// Tokens (cost units) per unit.
    pub limit: u64,
    /// Unit.
    pub unit: &'static str,
    /// Count without enforcing.
    pub shadow_mode: Option<bool>,
}

/// The BackendTrafficPolicy compiled from QuotaPolicies.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPlan {
    /// Name.
    pub name: String,
    /// HTTPRoutes it targets.
    pub targets: Vec<String>,
    /// Rules.
    pub rules: Vec<RateLimitRule>,
    /// QuotaPolicies it comes from.
    pub sources: Vec<ObjectId>,
}

/// The EnvoyExtensionPolicy of an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtensionPolicyPlan {
    /// Name.
    pub name: String,
    /// HTTPRoutes it targets.
    pub targets: Vec<String>,
    /// Filter lists of user EnvoyExtensionPolicies merged in (`extProc`, `wasm`, `lua`, `dynamicModule`).
    pub merged: BTreeMap<String, Vec<Value>>,
}

/// Workload settings of an extproc.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Image.
    pub image: String,
    /// Replicas.
    pub replicas: i32,
    /// Extra environment (core/v1 EnvVar).
    pub env: Vec<Value>,
    /// Resources (core/v1 ResourceRequirements).
    pub resources: Value,
    /// Container security context.
    pub security_context: Value,
    /// Extra volume mounts.
    pub volume_mounts: Vec<Value>,
    /// ServiceAccount annotations (workload identity).
    pub service_account_annotations: BTreeMap<String, String>,
}

/// One extproc instance and everything generated for its Gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The Gateway.
    pub gateway: ObjectId,
    /// Namespace of everything below (the Gateway's).
    pub namespace: String,
    /// Name of the ServiceAccount, ConfigMap, Deployment, Service and policies.
    pub name: String,
    /// The filter config.
    pub config: FilterConfig,
    /// Secrets mounted.
    pub secrets: Vec<MountedSecret>,
    /// Workload settings.
    pub workload: Workload,
    /// HTTPRoutes.
    pub routes: Vec<HttpRoutePlan>,
    /// ReferenceGrants.
    pub reference_grants: Vec<ReferenceGrantPlan>,
    /// EnvoyExtensionPolicy.
    pub extension_policy: ExtensionPolicyPlan,
    /// BackendTrafficPolicy from QuotaPolicies.
    pub rate_limit: Option<RateLimitPlan>,
    /// A ClientTrafficPolicy raising the Gateway's buffer limit, when the input has none.
    pub client_traffic: Option<ClientTrafficPlan>,
    /// The EnvoyPatchPolicy giving Envoy's own replies the client's API shape.
    pub local_replies: Option<LocalRepliesPlan>,
    /// The Gateway's HTTP and HTTPS listeners.
    pub listeners: Vec<ListenerPlan>,
}

/// A Gateway listener, with the xDS route configuration serving it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerPlan {
    /// Listener name.
    pub name: String,
    /// Port.
    pub port: i64,
    /// The route configuration Envoy Gateway v1.8 serves it from: named after the first HTTP
    /// listener on its port (`<namespace>/<gateway>/<listener>`), or after itself for HTTPS.
    pub route_config: String,
}

/// The EnvoyPatchPolicy that puts [`crate::emit::local_reply::config`] into the HTTP connection
/// managers of a Gateway's listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRepliesPlan {
    /// Name.
    pub name: String,
    /// The xDS listeners to patch, named as Envoy Gateway v1.8 names them by default
    /// (`<namespace>/<gateway>/<listener>`): one per port, after the Gateway's first HTTP or
    /// HTTPS listener on it, since Envoy Gateway serves the listeners sharing a port from one
    /// Envoy listener named after the first.
    pub listeners: Vec<String>,
}

/// The generated ClientTrafficPolicy of a Gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTrafficPlan {
    /// Name.
    pub name: String,
    /// `connection.bufferLimit`, as a Kubernetes quantity.
    pub buffer_limit: String,
    /// `timeout.http.requestReceivedTimeout`, as a Gateway API duration.
    pub request_received_timeout: String,
}

/// Output of the stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// One instance per Gateway with routes.
    pub instances: Vec<Instance>,
    /// Input objects passed through (object indices).
    pub passthrough: Vec<usize>,
    /// Input Secrets written because the user asked (object indices).
    pub secrets: Vec<usize>,
}

/// Makes `name` fit in `max` characters: long names keep a prefix and gain a hash suffix, so
/// two long names stay distinct.
pub fn bounded_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let digest = hex(&Sha256::digest(name.as_bytes()));
    let keep = max.saturating_sub(9);
    let prefix: String = name.chars().take(keep).collect();
    format!("{}-{}", prefix.trim_end_matches(['-', '.']), &digest[..8])
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `name` as part of a DNS label: dots become dashes, and a short hash of the original is
/// added when that changed it, so `a.b` and `a-b` stay distinct.
fn dns_label(name: &str) -> String {
    if !name.contains('.') {
        return name.to_string();
    }
    let digest = hex(&Sha256::digest(name.as_bytes()));
    format!("{}-{}", name.replace('.', "-"), &digest[..8])
}

struct Planner<'a> {
    input: &'a Validated,
    resolved: &'a Resolved,
    options: &'a PlanOptions,
    diags: Vec<Diagnostic>,
    /// Namespaces of the Gateways through which each AIServiceBackend is used.
    gateway_namespaces: BTreeMap<Key, BTreeSet<String>>,
    /// BackendSecurityPolicies already reported as unmountable everywhere.
    reported_policies: BTreeSet<usize>,
    /// AIServiceBackends already reported for a credential their schema cannot use.
    reported_backends: BTreeSet<usize>,
    /// Envoy Gateway Backends a BackendTLSPolicy targets.
    tls_backends: BTreeSet<Key>,
}

/// The Envoy Gateway Backends that BackendTLSPolicies target, by (namespace, name).
fn tls_backends(input: &Validated) -> BTreeSet<Key> {
    let mut out = BTreeSet::new();
    for o in &input.objects {
        if o.id.group != crate::model::GATEWAY_GROUP || o.id.kind != "BackendTLSPolicy" {
            continue;
        }
        let refs = input
            .document(o)
            .value
            .pointer("/spec/targetRefs")
            .and_then(Value::as_array);
        for r in refs.into_iter().flatten() {
            if r.get("group").and_then(Value::as_str) == Some(EG_GROUP)
                && r.get("kind").and_then(Value::as_str) == Some("Backend")
                && let Some(name) = r.get("name").and_then(Value::as_str)
            {
                out.insert((o.id.namespace.clone(), name.to_string()));
            }
        }
    }
    out
}

/// Plans every instance; returns the plan and every problem found.
pub fn plan(
    input: &Validated,
    resolved: &Resolved,
    options: &PlanOptions,
    include_secrets: bool,
) -> (Plan, Vec<Diagnostic>) {
    let mut planner = Planner {
        input,
        resolved,
        options,
        diags: Vec::new(),
        gateway_namespaces: gateway_namespaces(input, resolved),
        tls_backends: tls_backends(input),
        reported_policies: BTreeSet::new(),
        reported_backends: BTreeSet::new(),
    };
    let mut instances = Vec::new();
    for gateway in &resolved.gateways {
        instances.push(planner.instance(gateway));
    }
    let mut merged_policies = BTreeSet::new();
    planner.merge_extension_policies(&mut instances, &mut merged_policies);
    planner.check_collisions(&instances, &merged_policies);
    planner.check_traffic_policies(&instances);
    planner.check_quota_models();

    let mut passthrough = Vec::new();
    let mut secrets = Vec::new();
    for (i, object) in input.objects.iter().enumerate() {
        match &object.body {
            Body::Route(_)
            | Body::ServiceBackend(_)
            | Body::SecurityPolicy(_)
            | Body::GatewayConfig(_)
            | Body::QuotaPolicy(_) => {}
            Body::Secret(_) => {
                let encrypted = crate::validate::is_sops_encrypted(&input.document(object).value);
                if include_secrets && encrypted {
                    // The namespace the validate stage filled in is not in the bytes written.
                    let written: Option<Value> =
                        serde_saphyr::from_str(&input.document(object).source_text()).ok();
                    if written
                        .as_ref()
                        .and_then(|v| v.pointer("/metadata/namespace"))
                        .is_none()
                    {
                        planner.diags.push(input.warning_at(
                            object,
                            FieldPath::parse("metadata"),
                            "Secret encrypted with SOPS has no metadata.namespace and is written byte for byte, so it lands in the namespace it is applied to; give it one in the input",
                        ));
                    }
                    secrets.push(i);
                } else if include_secrets {
                    planner.diags.push(input.warning_at(
                        object,
                        FieldPath::root(),
                        "Secret written to the output with its data because --include-secrets is set; keep the output out of Git, or encrypt the Secret with SOPS (passed through byte for byte)",
                    ));
                    secrets.push(i);
                } else {
                    planner.diags.push(
                        input
                            .warning_at(
                                object,
                                FieldPath::root(),
                                format!("{SECRET_NOT_WRITTEN} (its data stays out of rendered manifests); create it in the cluster another way, or pass --include-secrets"),
                            )
                            .kind(DiagnosticKind::SecretNotWritten),
                    );
                }
            }
            Body::ExtensionPolicy if merged_policies.contains(&i) => {}
            _ => passthrough.push(i),
        }
    }
    (
        Plan {
            instances,
            passthrough,
            secrets,
        },
        planner.diags,
    )
}

impl Planner<'_> {
    fn object(&self, index: usize) -> &Object {
        &self.input.objects[index]
    }
}

/// For each AIServiceBackend, the namespaces of the Gateways whose routes use it.
fn gateway_namespaces(input: &Validated, resolved: &Resolved) -> BTreeMap<Key, BTreeSet<String>> {
    let mut out: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for gateway in &resolved.gateways {
        let gateway_ns = &input.objects[gateway.gateway].id.namespace;
        for &route_index in &gateway.routes {
            let object = &input.objects[route_index];
            let Body::Route(route) = &object.body else {
                continue;
            };
            for backend_ref in route.spec.rules.iter().flat_map(|r| &r.backend_refs) {
                let ns = backend_ref
                    .namespace
                    .clone()
                    .unwrap_or_else(|| object.id.namespace.clone());
                out.entry((ns, backend_ref.name.clone()))
                    .or_default()
                    .insert(gateway_ns.clone());
            }
        }
    }
    out
}

impl Planner<'_> {}

impl Object {
    fn document_meta_created(&self, input: &Validated) -> Option<String> {
        input
            .document(self)
            .value
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests;
