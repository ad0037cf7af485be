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

use aigw_filterconfig::{
    self as fc, ApiSchema, BackendAuth, BodyField, BodyMutation, Credential, CredentialOverride,
    FilterConfig, HeaderMutation, HeaderValue, LlmRequestCost, Model,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, FieldPath};
use crate::model::{
    self, AiGatewayRoute, AiServiceBackend, BackendSecurityPolicy, EG_GROUP, GatewayConfig,
    HeaderMatchType, HttpBodyMutation, HttpHeaderMutation, ParentReference, QuotaDuration,
    SecurityPolicyType,
};
use crate::resolve::{Key, Resolved};
use crate::validate::{Body, Object, ObjectId, Validated};

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

/// An HTTPRoute rule with its first target.
fn http_rule(
    name: String,
    selection: Selection,
    source_rule: usize,
    id: String,
    target: RuleTarget,
    rule: &model::AiGatewayRouteRule,
    upstream_prefix: Option<String>,
) -> BackendRule {
    let timeouts = rule.timeouts.as_ref();
    BackendRule {
        name,
        selection,
        selector: id.clone(),
        source_rule,
        backend_ids: vec![id],
        targets: vec![target],
        request_timeout: timeouts
            .and_then(|t| t.request.clone())
            .unwrap_or_else(|| "60s".into()),
        backend_request_timeout: timeouts.and_then(|t| t.backend_request.clone()),
        stream_idle_timeout: rule.stream_idle_timeout.clone(),
        upstream_prefix,
    }
}

/// The Envoy cluster Envoy Gateway makes of rule `index` of HTTPRoute `namespace/name`.
pub fn rule_cluster(namespace: &str, name: &str, index: usize) -> String {
    format!("httproute/{namespace}/{name}/rule/{index}")
}

use aigw_filterconfig::RULE_HOST_DOMAIN;

/// The hostname of the generated HTTPRoute `name` in `namespace` whose rules Envoy balances
/// (`<name>.<namespace>.aigw.internal`; the name hashed when that is no valid hostname): the
/// router sets it as `:authority`, so Envoy finds the rules by virtual host.
pub fn rule_authority(namespace: &str, name: &str) -> String {
    let host = format!("{name}.{namespace}.{RULE_HOST_DOMAIN}");
    if host.len() <= 253 && host.split('.').all(|label| label.len() <= 63) {
        return host;
    }
    let digest = hex(&Sha256::digest(name.as_bytes()));
    format!("r-{}.{namespace}.{RULE_HOST_DOMAIN}", &digest[..16])
}

/// The path prefix of the upstream requests of a backend schema (what the extproc rewrites
/// `:path` to), when it is not one of [`AI_PATH_PREFIXES`].
/// A `/` prefix (endpoints at the root, whose first segment differs per endpoint) matches the
/// whole path space of the backend's rule.
pub fn upstream_prefix(schema: &model::VersionedApiSchema) -> Option<String> {
    let prefix = fc::BackendSchema {
        name: schema.name,
        version: schema.version.clone(),
        prefix: schema.prefix.clone(),
    }
    .upstream_prefix();
    (!AI_PATH_PREFIXES.contains(&prefix.as_str())).then_some(prefix)
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
                    planner.diags.push(input.warning_at(
                        object,
                        FieldPath::root(),
                        format!("{SECRET_NOT_WRITTEN} (its data stays out of rendered manifests); create it in the cluster another way, or pass --include-secrets"),
                    ));
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

    fn instance(&mut self, attached: &crate::resolve::AttachedGateway) -> Instance {
        let gateway = self.object(attached.gateway).id.clone();
        let namespace = gateway.namespace.clone();
        let name = bounded_name(&format!("aigw-extproc-{}", dns_label(&gateway.name)), 63);
        let config_object = attached.config.map(|i| (i, self.object(i).clone()));
        let gateway_config = config_object.as_ref().and_then(|(_, o)| match &o.body {
            Body::GatewayConfig(c) => Some((**c).clone()),
            _ => None,
        });

        let mut config = FilterConfig::new(self.options.max_request_body_bytes);
        let mut routes = Vec::new();
        let mut secrets: BTreeSet<MountedSecret> = BTreeSet::new();
        let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut quota_rules: Vec<RateLimitRule> = Vec::new();
        let mut quota_targets = BTreeSet::new();
        let mut quota_sources = BTreeSet::new();
        let mut route_names = BTreeSet::new();

        for &route_index in &attached.routes {
            let route_object = self.object(route_index).clone();
            let Body::Route(route) = &route_object.body else {
                continue;
            };
            let (fc_route, backends, rules) =
                self.route(&route_object, route, &gateway, &mut secrets);
            config.routes.push(fc_route);
            config.backends.extend(backends);
            for target in rules.iter().flat_map(|r| &r.targets) {
                if target.target_namespace != namespace {
                    grants
                        .entry(target.target_namespace.clone())
                        .or_default()
                        .insert(target.target.name.clone());
                }
            }
            let rule_hosts = self.listeners_serve_any_host(attached.gateway, route, &route_object);
            let parts = self.http_routes(&route_object, route, &gateway, rules, rule_hosts);
            // A rule Envoy balances is named by its cluster, known now that the HTTPRoutes
            // are cut.
            if let Some(fc_route) = config.routes.last_mut() {
                for part in &parts {
                    for rule in &part.rules {
                        let Some(fc_rule) = fc_route.rules.get_mut(rule.source_rule) else {
                            continue;
                        };
                        if rule.selection == Selection::Rule {
                            fc_rule.cluster = Some(rule.selector.clone());
                        }
                        fc_rule.authority = part.rule_authority.clone();
                    }
                }
            }
            // A catch-all shared by several routes is written once.
            let parts: Vec<HttpRoutePlan> = parts
                .into_iter()
                .filter(|part| route_names.insert(part.name.clone()))
                .collect();
            let (mut rules, targets, sources, costs) = self.quotas(&route_object, route, &parts);
            if let Some(last) = config.routes.last_mut() {
                last.costs.extend(costs);
            }
            quota_rules.append(&mut rules);
            quota_targets.extend(targets);
            quota_sources.extend(sources);
            routes.extend(parts);
        }
        config.backends.sort_by(|a, b| a.name.cmp(&b.name));

        if let Some(gc) = &gateway_config {
            config.global_costs = gc.spec.global_llm_request_costs.iter().map(cost).collect();
            if gc.spec.forward_proxy.is_some()
                && let Some((_, object)) = &config_object
            {
                self.diags.push(self.input.error_at(
                        object,
                        FieldPath::parse("spec.forwardProxy"),
                        "forwardProxy is not yet supported by aigw: upstream connections would bypass the proxy",
                    ));
            }
        }
        let client_traffic = self.client_traffic(&gateway, &name);
        let local_replies = self.local_replies(attached.gateway, &name);
        let listeners = self.listeners(attached.gateway);
        let workload = self.workload(
            config_object.as_ref().map(|(_, o)| o),
            gateway_config.as_ref(),
        );
        if let Err(err) = config.check() {
            self.diags.push(Diagnostic::error(format!(
                "internal error: generated filter config for Gateway {}/{} is inconsistent: {err}",
                gateway.namespace, gateway.name
            )));
        }

        let reference_grants = grants
            .into_iter()
            .flat_map(|(ns, backends)| {
                let backends: Vec<String> = backends.into_iter().collect();
                let base = format!("aigw-{}-{}", namespace, dns_label(&gateway.name));
                backends
                    .chunks(16)
                    .enumerate()
                    .map(|(i, chunk)| ReferenceGrantPlan {
                        namespace: ns.clone(),
                        name: bounded_name(
                            &if i == 0 {
                                base.clone()
                            } else {
                                format!("{base}-{}", i + 1)
                            },
                            253,
                        ),
                        backends: chunk.to_vec(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();

        let rate_limit = (!quota_rules.is_empty()).then(|| RateLimitPlan {
            name: bounded_name(&format!("aigw-quota-{}", dns_label(&gateway.name)), 253),
            targets: quota_targets.into_iter().collect(),
            rules: quota_rules,
            sources: quota_sources.into_iter().collect(),
        });

        Instance {
            extension_policy: ExtensionPolicyPlan {
                name: name.clone(),
                targets: route_names.into_iter().collect(),
                merged: BTreeMap::new(),
            },
            gateway,
            namespace,
            name,
            config,
            secrets: secrets.into_iter().collect(),
            workload,
            routes,
            reference_grants,
            rate_limit,
            client_traffic,
            local_replies,
            listeners,
        }
    }

    /// The filter-config view of one route, its backends, and the HTTPRoute rules it needs.
    fn route(
        &mut self,
        object: &Object,
        route: &AiGatewayRoute,
        gateway: &ObjectId,
        secrets: &mut BTreeSet<MountedSecret>,
    ) -> (fc::Route, Vec<fc::Backend>, Vec<BackendRule>) {
        let route_name = format!("{}/{}", object.id.namespace, object.id.name);
        let mut fc_rules = Vec::new();
        let mut backends = Vec::new();
        let mut http_rules: Vec<BackendRule> = Vec::new();
        let mut models: BTreeMap<String, Model> = BTreeMap::new();
        let default_created = object
            .document_meta_created(self.input)
            .and_then(|t| crate::validate::rules::parse_rfc3339(&t))
            .unwrap_or(0);
        for (i, rule) in route.spec.rules.iter().enumerate() {
            let rule_path = FieldPath::parse("spec.rules").index(i);
            let created = rule
                .models_created_at
                .as_deref()
                .and_then(crate::validate::rules::parse_rfc3339)
                .unwrap_or(default_created);
            let matches: Vec<fc::RuleMatch> = rule
                .matches
                .iter()
                .map(|m| fc::RuleMatch {
                    headers: m
                        .headers
                        .iter()
                        .map(|h| fc::HeaderMatch {
                            name: h.name.to_ascii_lowercase(),
                            match_type: match h.match_type {
                                HeaderMatchType::Exact => fc::HeaderMatchType::Exact,
                                HeaderMatchType::RegularExpression => {
                                    fc::HeaderMatchType::RegularExpression
                                }
                            },
                            value: h.value.clone(),
                        })
                        .collect(),
                })
                .collect();
            for header in rule.matches.iter().flat_map(|m| &m.headers) {
                if header.name.eq_ignore_ascii_case(fc::MODEL_HEADER)
                    && header.match_type == HeaderMatchType::Exact
                {
                    models.entry(header.value.clone()).or_insert_with(|| Model {
                        id: header.value.clone(),
                        owned_by: rule.models_owned_by.clone(),
                        created,
                    });
                }
                if header.match_type == HeaderMatchType::RegularExpression
                    && let Err(err) = regex::Regex::new(&format!("^(?:{})$", header.value))
                {
                    self.diags.push(self.input.error_at(
                        object,
                        rule_path.key("matches"),
                        format!(
                            "header {:?}: invalid regular expression: {}",
                            header.name,
                            err.to_string().lines().last().unwrap_or_default()
                        ),
                    ));
                }
            }
            let mut weighted = Vec::new();
            let mut targets = Vec::new();
            let mut has_priority = false;
            for (j, backend_ref) in rule.backend_refs.iter().enumerate() {
                let ns = backend_ref
                    .namespace
                    .clone()
                    .unwrap_or_else(|| object.id.namespace.clone());
                let key: Key = (ns.clone(), backend_ref.name.clone());
                let Some(&backend_index) = self.resolved.service_backends.get(&key) else {
                    continue;
                };
                let backend_object = self.object(backend_index).clone();
                let Body::ServiceBackend(service_backend) = &backend_object.body else {
                    continue;
                };
                let id = format!(
                    "{ns}/{}/route/{route_name}/rule/{i}/ref/{j}",
                    backend_ref.name
                );
                let weight = u32::try_from(backend_ref.weight).unwrap_or(u32::MAX);
                let priority = u32::try_from(backend_ref.priority).unwrap_or(u32::MAX);
                has_priority |= priority > 0;
                weighted.push(fc::WeightedBackend {
                    backend: id.clone(),
                    weight,
                    priority,
                });
                let auth = self.auth(&key, gateway, secrets);
                if self.reported_backends.insert(backend_index) {
                    self.check_cloud_credential(&backend_object, service_backend, auth.as_ref());
                }
                backends.push(fc::Backend {
                    name: id.clone(),
                    service_backend: format!("{ns}/{}", backend_ref.name),
                    schema: schema(&service_backend.spec.schema),
                    model_name_override: backend_ref
                        .model_name_override
                        .clone()
                        .filter(|m| !m.is_empty()),
                    upstream_host: self.upstream_host(service_backend, &ns),
                    header_mutation: header_mutation(
                        service_backend.spec.header_mutation.as_ref(),
                        backend_ref.header_mutation.as_ref(),
                        auth.as_ref().and_then(|a| a.credential_override.as_ref()),
                    ),
                    body_mutation: body_mutation(
                        service_backend.spec.body_mutation.as_ref(),
                        backend_ref.body_mutation.as_ref(),
                    ),
                    auth,
                });
                if weight > 0 {
                    let target = &service_backend.spec.backend_ref;
                    let target_namespace = target.namespace.clone().unwrap_or_else(|| ns.clone());
                    let facts = self.target_facts(target, &target_namespace);
                    let rule_target = RuleTarget {
                        target: target.clone(),
                        target_namespace,
                        weight,
                        priority,
                        facts,
                    };
                    targets.push((
                        j,
                        id,
                        rule_target,
                        upstream_prefix(&service_backend.spec.schema),
                    ));
                }
            }
            // Envoy Gateway makes one cluster of the rule, whose localities Envoy balances and
            // falls back between, unless address types mix (then a cluster per backend).
            let mixed =
                targets.iter().any(|t| t.2.facts.dns) && targets.iter().any(|t| !t.2.facts.dns);
            // Only a rule Envoy has to choose in gets the extproc on each attempt: one backend
            // is processed on the router (one round trip less; and Envoy 1.39 and 1.40 crash
            // with an upstream ext_proc filter on HTTP/1.1 clusters under concurrency, see
            // docs/routing.md).
            let choice = targets.len() > 1 || has_priority || rule.stream_idle_timeout.is_some();
            let by_rule = self.options.envoy_patch_policies && !mixed && choice;
            if by_rule
                && let Some((j, ..)) = targets
                    .iter()
                    .find(|t| !t.2.facts.tls && !t.2.facts.http_protocol)
            {
                self.diags.push(self.input.warning_at(
                    object,
                    rule_path.key("backendRefs").index(*j),
                    "this rule sends each attempt through the extproc in its Envoy cluster, and this backend speaks HTTP/1.1 without TLS: Envoy 1.39 and 1.40 crash with that filter on HTTP/1.1 clusters under concurrency (docs/routing.md); give the Backend `appProtocols: [gateway.envoyproxy.io/h2c]` if the server speaks HTTP/2, or build with --no-envoy-patch-policy".to_string(),
                ));
            }
            if by_rule {
                let mut rest = targets.into_iter();
                if let Some((_, id, first, _)) = rest.next() {
                    let mut http = http_rule(
                        format!("rule-{i}"),
                        Selection::Rule,
                        i,
                        id,
                        first,
                        rule,
                        None,
                    );
                    for (_, id, target, _) in rest {
                        http.backend_ids.push(id);
                        http.targets.push(target);
                    }
                    http_rules.push(http);
                }
            } else {
                for (j, id, target, prefix) in targets {
                    http_rules.push(http_rule(
                        format!("rule-{i}-ref-{j}"),
                        Selection::Backend,
                        i,
                        id,
                        target,
                        rule,
                        prefix,
                    ));
                }
            }
            if !by_rule && (mixed || !self.options.envoy_patch_policies) {
                let reason = if mixed {
                    "its Backends mix endpoints by DNS name with IP addresses or Services, for which Envoy Gateway makes a cluster per backend"
                } else {
                    "EnvoyPatchPolicies are turned off (--no-envoy-patch-policy)"
                };
                if has_priority {
                    self.diags.push(self.input.warning_at(
                        object,
                        rule_path.key("backendRefs"),
                        format!("priority fallback needs one cluster for the rule, and {reason}: backends with priority > 0 are picked only when no priority-0 backend has weight"),
                    ));
                }
                if rule.stream_idle_timeout.is_some() {
                    self.diags.push(self.input.warning_at(
                        object,
                        rule_path.key("streamIdleTimeout"),
                        format!("streamIdleTimeout is not applied: it needs one cluster for the rule, and {reason}; streamed responses use Envoy's default stream idle timeout"),
                    ));
                }
            }
            fc_rules.push(fc::RouteRule {
                name: rule.name.clone(),
                matches,
                backends: weighted,
                cluster: None,
                authority: None,
            });
        }
        let fc_route = fc::Route {
            name: route_name,
            hostnames: route.spec.hostnames.clone(),
            rules: fc_rules,
            costs: route.spec.llm_request_costs.iter().map(cost).collect(),
            models: models.into_values().collect(),
        };
        (fc_route, backends, http_rules)
    }

    /// Vertex AI paths are relative to the project and region of a GCP credential, so a GCP
    /// schema without one cannot work (error); a Bedrock schema without AWS credentials sends
    /// unsigned requests (warning).
    fn check_cloud_credential(
        &mut self,
        object: &Object,
        backend: &AiServiceBackend,
        auth: Option<&BackendAuth>,
    ) {
        let credential = auth.map(|a| &a.credential);
        let schema = backend.spec.schema.name;
        let field = FieldPath::parse("spec.schema.name");
        match schema {
            ApiSchema::GCPVertexAI | ApiSchema::GCPAnthropic
                if !matches!(credential, Some(Credential::Gcp { .. })) =>
            {
                self.diags.push(self.input.error_at(
                    object,
                    field,
                    format!(
                        "schema {} needs a BackendSecurityPolicy of type GCPCredentials targeting this AIServiceBackend: Vertex AI paths name the project and region it sets",
                        schema.as_str()
                    ),
                ));
            }
            ApiSchema::AWSBedrock | ApiSchema::AWSAnthropic
                if !matches!(credential, Some(Credential::Aws { .. })) =>
            {
                self.diags.push(self.input.warning_at(
                    object,
                    field,
                    format!(
                        "schema {} without a BackendSecurityPolicy of type AWSCredentials: requests are sent unsigned, which AWS refuses",
                        schema.as_str()
                    ),
                ));
            }
            _ => {}
        }
    }

    /// How Envoy Gateway builds the cluster part of a backendRef to `target` (in `ns`).
    fn target_facts(&self, target: &model::BackendObjectReference, ns: &str) -> TargetFacts {
        if target.group != EG_GROUP || target.kind != "Backend" {
            return TargetFacts::default();
        }
        let key = (ns.to_string(), target.name.clone());
        let Some(&index) = self.resolved.eg_backends.get(&key) else {
            return TargetFacts::default();
        };
        let doc = &self.input.document(self.object(index)).value;
        let endpoints = doc
            .pointer("/spec/endpoints")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let dns = endpoints.iter().any(|e| e.get("fqdn").is_some());
        let http_protocol = doc
            .pointer("/spec/appProtocols")
            .and_then(Value::as_array)
            .is_some_and(|protocols| {
                protocols.iter().filter_map(Value::as_str).any(|p| {
                    matches!(
                        p,
                        "gateway.envoyproxy.io/h2c"
                            | "gateway.envoyproxy.io/ws"
                            | "gateway.envoyproxy.io/wss"
                    )
                })
            });
        let tls = doc.pointer("/spec/tls").is_some() || self.tls_backends.contains(&key);
        TargetFacts {
            dns,
            tls,
            http_protocol,
        }
    }

    fn upstream_host(&self, backend: &AiServiceBackend, ns: &str) -> Option<String> {
        let target = &backend.spec.backend_ref;
        if target.group != EG_GROUP || target.kind != "Backend" {
            return None;
        }
        let key = (
            target.namespace.clone().unwrap_or_else(|| ns.to_string()),
            target.name.clone(),
        );
        let index = self.resolved.eg_backends.get(&key)?;
        let doc = self.input.document(self.object(*index));
        doc.value
            .pointer("/spec/endpoints")?
            .as_array()?
            .iter()
            .find_map(|e| e.pointer("/fqdn/hostname").and_then(Value::as_str))
            .map(str::to_string)
    }

    /// The auth of the AIServiceBackend `key`, with its Secrets checked for mountability and
    /// recorded as mounts.
    fn auth(
        &mut self,
        key: &Key,
        gateway: &ObjectId,
        secrets: &mut BTreeSet<MountedSecret>,
    ) -> Option<BackendAuth> {
        let policy_index = *self.resolved.security_policy_of.get(key)?;
        let object = self.object(policy_index).clone();
        let Body::SecurityPolicy(policy) = &object.body else {
            return None;
        };
        let namespaces = self
            .gateway_namespaces
            .get(key)
            .cloned()
            .unwrap_or_default();
        let needs_secret = self
            .resolved
            .secrets_of_policy
            .get(&policy_index)
            .is_some_and(|u| !u.is_empty());
        if needs_secret && namespaces.len() > 1 {
            if self.reported_policies.insert(policy_index) {
                let list: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                self.diags.push(self.input.error_at(
                    &object,
                    FieldPath::parse("spec"),
                    format!(
                        "AIServiceBackend {}/{} is used through Gateways in namespaces {}, but an extproc can only mount Secrets of its own namespace, so one Secret cannot serve them all; use one AIServiceBackend (with its own BackendSecurityPolicy and Secret) per Gateway namespace",
                        key.0,
                        key.1,
                        list.join(", ")
                    ),
                ));
            }
            return None;
        }
        let uses = self
            .resolved
            .secrets_of_policy
            .get(&policy_index)
            .cloned()
            .unwrap_or_default();
        let mut file_of = BTreeMap::new();
        for secret in &uses {
            if secret.namespace != gateway.namespace {
                self.diags.push(self.input.error_at(
                    &object,
                    secret.field.clone(),
                    format!(
                        "Secret {}/{} cannot be mounted by the extproc of Gateway {}/{}, which runs in namespace {:?}; create the Secret in {:?} and set secretRef.namespace: {}{}",
                        secret.namespace,
                        secret.name,
                        gateway.namespace,
                        gateway.name,
                        gateway.namespace,
                        gateway.namespace,
                        gateway.namespace,
                        if object.id.namespace != gateway.namespace {
                            format!(
                                ", with a ReferenceGrant in {:?} from aigateway.envoyproxy.io/BackendSecurityPolicy in {:?} to Secret",
                                gateway.namespace, object.id.namespace
                            )
                        } else {
                            String::new()
                        }
                    ),
                ));
                continue;
            }
            let mount = mounted_secret(&secret.name);
            file_of.insert(
                secret.field.clone(),
                format!("{}/{}", mount.mount_path, secret.key),
            );
            secrets.insert(mount);
        }
        Some(build_auth(policy, &file_of))
    }

    fn http_routes(
        &mut self,
        object: &Object,
        route: &AiGatewayRoute,
        gateway: &ObjectId,
        rules: Vec<BackendRule>,
        rule_hosts: bool,
    ) -> Vec<HttpRoutePlan> {
        let base = if object.id.namespace == gateway.namespace {
            object.id.name.clone()
        } else {
            format!("{}-{}", object.id.namespace, object.id.name)
        };
        let base = bounded_name(&base, 253);
        let parent_refs: Vec<ParentReference> = route
            .spec
            .parent_refs
            .iter()
            .filter(|p| {
                p.name == gateway.name
                    && p.namespace
                        .clone()
                        .unwrap_or_else(|| object.id.namespace.clone())
                        == gateway.namespace
            })
            .map(|p| ParentReference {
                namespace: Some(gateway.namespace.clone()),
                ..p.clone()
            })
            .collect();
        let mut labels = self
            .input
            .document(object)
            .value
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default();
        labels.remove("app.kubernetes.io/instance");
        // Rules are packed 16 per HTTPRoute; the catch-all goes last, in the last part.
        let total = rules.len() + 1;
        let parts = total.div_ceil(MAX_RULES_PER_ROUTE);
        let mut out = Vec::new();
        let mut remaining = rules.into_iter();
        for part in 0..parts {
            let capacity = if part + 1 == parts {
                MAX_RULES_PER_ROUTE - 1
            } else {
                MAX_RULES_PER_ROUTE
            };
            let mut chunk: Vec<BackendRule> = remaining.by_ref().take(capacity).collect();
            let name = if part == 0 {
                base.clone()
            } else {
                bounded_name(&format!("{base}-{}", part + 1), 253)
            };
            for (index, rule) in chunk.iter_mut().enumerate() {
                if rule.selection == Selection::Rule {
                    rule.selector = rule_cluster(&gateway.namespace, &name, index);
                }
            }
            out.push(HttpRoutePlan {
                name,
                source: object.id.clone(),
                parent_refs: parent_refs.clone(),
                hostnames: route.spec.hostnames.clone(),
                labels: labels.clone(),
                rules: chunk,
                catch_all: part + 1 == parts,
                rule_authority: None,
                host_rewrite_filter: bounded_name(&format!("ai-eg-host-rewrite-{base}"), 253),
                client_host_filter: bounded_name(&format!("aigw-client-host-{base}"), 253),
                not_found_filter: bounded_name(
                    &format!("ai-eg-route-not-found-response-{base}"),
                    253,
                ),
            });
        }
        let by_host = rule_hosts
            && self.options.envoy_patch_policies
            && out.iter().any(|p| !p.rules.is_empty());
        if by_host {
            // Envoy tries a virtual host's routes one by one, and twice per AI request: the
            // HTTPRoutes of an AIGatewayRoute get a virtual host of their own, found by hash,
            // and the catch-all that sends the first match to the extproc stays on the
            // client's hostnames, in an HTTPRoute shared by the Gateway's routes.
            let authority = rule_authority(&gateway.namespace, &base);
            for part in &mut out {
                part.hostnames = vec![authority.clone()];
                part.rule_authority = Some(authority.clone());
                part.catch_all = false;
            }
            out.push(self.shared_catch_all(gateway, &parent_refs, &route.spec.hostnames));
        }
        out
    }

    /// Rate-limit rules, targeted HTTPRoutes, sources and filter-config costs from the
    /// QuotaPolicies of the backends this route uses.
    fn quotas(
        &mut self,
        object: &Object,
        route: &AiGatewayRoute,
        parts: &[HttpRoutePlan],
    ) -> (
        Vec<RateLimitRule>,
        Vec<String>,
        Vec<ObjectId>,
        Vec<LlmRequestCost>,
    ) {
        let mut rules = Vec::new();
        let mut targets = Vec::new();
        let mut sources = Vec::new();
        let mut costs = Vec::new();
        let mut by_backend_model: BTreeMap<(Key, String), Vec<String>> = BTreeMap::new();
        // Rules of several backends with a quota on one: the limit counts on the rule.
        let mut shared_rules = BTreeSet::new();
        for (i, rule) in route.spec.rules.iter().enumerate() {
            for (j, backend_ref) in rule.backend_refs.iter().enumerate() {
                let ns = backend_ref
                    .namespace
                    .clone()
                    .unwrap_or_else(|| object.id.namespace.clone());
                let Some(model) = &backend_ref.model_name_override else {
                    continue;
                };
                if backend_ref.weight == 0 {
                    continue;
                }
                let id = format!(
                    "{ns}/{}/route/{}/{}/rule/{i}/ref/{j}",
                    backend_ref.name, object.id.namespace, object.id.name
                );
                by_backend_model
                    .entry(((ns, backend_ref.name.clone()), model.clone()))
                    .or_default()
                    .push(id);
            }
        }
        for ((key, model), ids) in by_backend_model {
            let Some(policies) = self.resolved.quotas_of.get(&key) else {
                continue;
            };
            for &policy_index in policies {
                let policy_object = self.object(policy_index).clone();
                let Body::QuotaPolicy(policy) = &policy_object.body else {
                    continue;
                };
                for quota in policy
                    .spec
                    .per_model_quotas
                    .iter()
                    .filter(|q| q.model_name == model)
                {
                    sources.push(policy_object.id.clone());
                    costs.push(LlmRequestCost {
                        metadata_key: QUOTA_COST_KEY.into(),
                        cost_type: fc::CostType::CEL,
                        cel: Some(
                            quota
                                .quota
                                .cost_expression
                                .clone()
                                .unwrap_or_else(|| "total_tokens".into()),
                        ),
                        service_backend: Some(format!("{}/{}", key.0, key.1)),
                        model: Some(model.clone()),
                    });
                    let mut selectors = Vec::new();
                    let mut selector_header = fc::SELECTED_BACKEND_HEADER;
                    for part in parts {
                        let mut used = false;
                        for rule in &part.rules {
                            if !rule.backend_ids.iter().any(|b| ids.contains(b)) {
                                continue;
                            }
                            used = true;
                            selector_header = rule.selector_header();
                            if !selectors.contains(&rule.selector) {
                                selectors.push(rule.selector.clone());
                            }
                            if rule.selection == Selection::Rule && rule.backend_ids.len() > 1 {
                                shared_rules.insert(rule.source_rule);
                            }
                        }
                        if used {
                            targets.push(part.name.clone());
                        }
                    }
                    for bucket in &quota.quota.bucket_rules {
                        rules.push(RateLimitRule {
                            selector_header,
                            selectors: selectors.clone(),
                            client_selectors: bucket.client_selectors.clone(),
                            limit: bucket.quota.limit,
                            unit: unit(bucket.quota.duration),
                            shadow_mode: bucket.shadow_mode,
                        });
                    }
                    // As upstream, a default bucket with limit 0 is no default bucket.
                    if let Some(default) =
                        quota.quota.default_bucket.as_ref().filter(|d| d.limit > 0)
                    {
                        // The default bucket takes the requests no bucket rule selects: each
                        // rule's condition, inverted, joins the default's selector.
                        match default_bucket_selectors(&quota.quota.bucket_rules) {
                            Ok(client_selectors) => rules.push(RateLimitRule {
                                selector_header,
                                selectors: selectors.clone(),
                                client_selectors,
                                limit: default.limit,
                                unit: unit(default.duration),
                                shadow_mode: None,
                            }),
                            Err(reason) => {
                                let q = policy
                                    .spec
                                    .per_model_quotas
                                    .iter()
                                    .position(|p| std::ptr::eq(p, quota))
                                    .unwrap_or(0);
                                self.diags.push(
                                    self.input.error_at(
                                        &policy_object,
                                        FieldPath::parse("spec.perModelQuotas")
                                            .index(q)
                                            .key("quota")
                                            .key("defaultBucket"),
                                        reason,
                                    ),
                                );
                            }
                        }
                    }
                }
                if policy.spec.service_quota.is_some() {
                    self.diags.push(self.input.warning_at(
                        &policy_object,
                        FieldPath::parse("spec.serviceQuota"),
                        "serviceQuota is not enforced (upstream does not enforce it either); use perModelQuotas",
                    ));
                }
                for (q, quota) in policy.spec.per_model_quotas.iter().enumerate() {
                    let field = FieldPath::parse("spec.perModelQuotas")
                        .index(q)
                        .key("quota");
                    for (b, bucket) in quota.quota.bucket_rules.iter().enumerate() {
                        let limit = bucket.quota.limit;
                        if limit == 0 || limit > u64::from(u32::MAX) {
                            self.diags.push(self.input.error_at(
                                &policy_object,
                                field.clone().key("bucketRules").index(b).key("quota").key("limit"),
                                format!("a quota limit of {limit} cannot be enforced by Envoy Gateway, whose rate limits go from 1 to 4294967295"),
                            ));
                        }
                    }
                    let default = quota.quota.default_bucket.as_ref().filter(|d| d.limit > 0);
                    if let Some(limit) = default
                        .map(|d| d.limit)
                        .filter(|l| *l > u64::from(u32::MAX))
                    {
                        self.diags.push(self.input.error_at(
                            &policy_object,
                            field.clone().key("defaultBucket").key("limit"),
                            format!("a quota limit of {limit} cannot be enforced by Envoy Gateway, whose rate limits go from 1 to 4294967295"),
                        ));
                    }
                    if default.is_some() && !quota.quota.bucket_rules.is_empty() {
                        self.diags.push(self.input.warning_at(
                            &policy_object,
                            field.key("defaultBucket"),
                            "each request is charged to the bucket rules that select it, or to the default bucket when none does, and is refused once one of them is spent (Envoy Gateway's rate limits); upstream charges the default bucket too and refuses only when every bucket of the request is spent",
                        ));
                    }
                }
            }
        }
        costs.dedup();
        for i in shared_rules {
            self.diags.push(self.input.warning_at(
                object,
                FieldPath::parse("spec.rules").index(i).key("backendRefs"),
                "a QuotaPolicy limits a backend of this rule, which has several: the rate limit is checked before Envoy picks the backend, so every request of the rule counts against it (costs are charged only for the backend that answers)",
            ));
        }
        (rules, targets, sources, costs)
    }

    fn workload(
        &mut self,
        config_object: Option<&Object>,
        config: Option<&GatewayConfig>,
    ) -> Workload {
        let k8s = config
            .and_then(|c| c.spec.ext_proc.as_ref())
            .and_then(|e| e.kubernetes.clone())
            .unwrap_or_default();
        let image = match (&k8s.image, &k8s.image_repository) {
            (Some(image), _) => image.clone(),
            (None, Some(repository)) => {
                let tag = default_tag(&self.options.extproc_image);
                format!("{repository}{tag}")
            }
            (None, None) => self.options.extproc_image.clone(),
        };
        let mut service_account_annotations = BTreeMap::new();
        if let Some(object) = config_object {
            let doc = self.input.document(object);
            if let Some(text) = doc
                .value
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(SERVICE_ACCOUNT_ANNOTATIONS))
                .and_then(Value::as_str)
            {
                match serde_saphyr::from_str::<BTreeMap<String, String>>(text) {
                    Ok(map) => service_account_annotations = map,
                    Err(err) => self.diags.push(self.input.error_at(
                        object,
                        FieldPath::parse("metadata.annotations"),
                        format!(
                            "annotation {SERVICE_ACCOUNT_ANNOTATIONS} must be a YAML or JSON map of strings: {}",
                            err.to_string().lines().next().unwrap_or_default()
                        ),
                    )),
                }
            }
        }
        Workload {
            image,
            replicas: self.options.replicas,
            env: k8s.env,
            resources: k8s.resources.unwrap_or_else(default_resources),
            security_context: k8s
                .security_context
                .unwrap_or_else(default_security_context),
            volume_mounts: k8s.volume_mounts,
            service_account_annotations,
        }
    }

    fn merge_extension_policies(
        &mut self,
        instances: &mut [Instance],
        merged: &mut BTreeSet<usize>,
    ) {
        for (i, object) in self.input.objects.iter().enumerate() {
            if !matches!(object.body, Body::ExtensionPolicy) {
                continue;
            }
            let doc = self.input.document(object);
            let mut targets: Vec<(usize, String)> = Vec::new();
            let refs = doc
                .value
                .pointer("/spec/targetRefs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let single = doc.value.pointer("/spec/targetRef").cloned();
            for target in refs.iter().chain(single.iter()) {
                if target.get("kind").and_then(Value::as_str) != Some("HTTPRoute") {
                    continue;
                }
                let name = target
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let Some(pos) = instances.iter().position(|inst| {
                    inst.namespace == object.id.namespace
                        && inst.extension_policy.targets.iter().any(|t| t == name)
                }) {
                    targets.push((pos, name.to_string()));
                }
            }
            if targets.is_empty() {
                continue;
            }
            let total = refs.len() + usize::from(single.is_some());
            let first = targets[0].0;
            if targets.len() != total
                || targets.iter().any(|(pos, _)| *pos != first)
                || doc.value.pointer("/spec/targetSelectors").is_some()
            {
                self.diags.push(self.input.error_at(
                    object,
                    FieldPath::parse("spec"),
                    "this EnvoyExtensionPolicy targets generated HTTPRoutes together with other objects; Envoy Gateway allows one policy per route, so aigw merges it into the generated one, which needs it to target only routes of one Gateway's AIGatewayRoutes",
                ));
                continue;
            }
            let instance = &mut instances[first];
            for list in ["extProc", "wasm", "lua", "dynamicModule"] {
                if let Some(items) = doc
                    .value
                    .pointer(&format!("/spec/{list}"))
                    .and_then(Value::as_array)
                {
                    instance
                        .extension_policy
                        .merged
                        .entry(list.to_string())
                        .or_default()
                        .extend(items.iter().cloned());
                }
            }
            if instance
                .extension_policy
                .merged
                .get("extProc")
                .map_or(0, Vec::len)
                + 1
                > 16
            {
                self.diags.push(self.input.error_at(
                    object,
                    FieldPath::parse("spec.extProc"),
                    "merged EnvoyExtensionPolicy would have more than 16 extProc filters",
                ));
            }
            let mut warning = self.input.warning_at(
                object,
                FieldPath::root(),
                format!(
                    "merged into the generated EnvoyExtensionPolicy {}/{} (Envoy Gateway applies one policy per route); its filters run before aigw's extproc and see the client's request, and it is not written separately",
                    instance.namespace, instance.extension_policy.name
                ),
            );
            warning.severity = crate::diag::Severity::Warning;
            self.diags.push(warning);
            merged.insert(i);
        }
    }

    /// Every object the plan generates must have a name of its own: not shared by two
    /// generated objects, nor by an input object (which would be passed through next to it).
    fn check_collisions(&mut self, instances: &[Instance], merged: &BTreeSet<usize>) {
        let mut generated: BTreeMap<(&str, &str, String, String), String> = BTreeMap::new();
        for instance in instances {
            let ns = instance.namespace.clone();
            let gateway = instance.gateway.to_string();
            let mut names: Vec<(&str, &str, String, String, String)> = Vec::new();
            for kind in ["ServiceAccount", "ConfigMap", "Service"] {
                names.push(("", kind, ns.clone(), instance.name.clone(), gateway.clone()));
            }
            names.push((
                "apps",
                "Deployment",
                ns.clone(),
                instance.name.clone(),
                gateway.clone(),
            ));
            if instance.workload.replicas > 1 {
                names.push((
                    "policy",
                    "PodDisruptionBudget",
                    ns.clone(),
                    instance.name.clone(),
                    gateway.clone(),
                ));
            }
            names.push((
                EG_GROUP,
                "EnvoyExtensionPolicy",
                ns.clone(),
                instance.extension_policy.name.clone(),
                gateway.clone(),
            ));
            if let Some(local_replies) = &instance.local_replies {
                names.push((
                    EG_GROUP,
                    "EnvoyPatchPolicy",
                    ns.clone(),
                    local_replies.name.clone(),
                    gateway.clone(),
                ));
            }
            if let Some(rate_limit) = &instance.rate_limit {
                names.push((
                    EG_GROUP,
                    "BackendTrafficPolicy",
                    ns.clone(),
                    rate_limit.name.clone(),
                    gateway.clone(),
                ));
            }
            for grant in &instance.reference_grants {
                names.push((
                    model::GATEWAY_GROUP,
                    "ReferenceGrant",
                    grant.namespace.clone(),
                    grant.name.clone(),
                    gateway.clone(),
                ));
            }
            let mut filters = BTreeSet::new();
            for route in &instance.routes {
                names.push((
                    model::GATEWAY_GROUP,
                    "HTTPRoute",
                    ns.clone(),
                    route.name.clone(),
                    route.source.to_string(),
                ));
                // The filters as routing.rs writes them: once each, where used.
                let used = route
                    .rules
                    .iter()
                    .map(|r| route.host_filter(r))
                    .chain(route.catch_all.then_some(route.not_found_filter.as_str()));
                for filter in used {
                    if filters.insert(filter.to_string()) {
                        names.push((
                            EG_GROUP,
                            "HTTPRouteFilter",
                            ns.clone(),
                            filter.to_string(),
                            route.source.to_string(),
                        ));
                    }
                }
            }
            for (group, kind, ns, name, source) in names {
                if let Some(previous) =
                    generated.insert((group, kind, ns.clone(), name.clone()), source.clone())
                {
                    self.diags.push(Diagnostic::error(format!(
                        "{kind} {ns}/{name} would be generated twice (for {previous} and for {source}); rename one of the AIGatewayRoutes or Gateways"
                    )));
                }
            }
        }
        for (i, object) in self.input.objects.iter().enumerate() {
            if merged.contains(&i) {
                continue;
            }
            let key = (
                object.id.group.as_str(),
                object.id.kind.as_str(),
                object.id.namespace.clone(),
                object.id.name.clone(),
            );
            if let Some(source) = generated.get(&key) {
                self.diags.push(self.input.error_at(
                    object,
                    FieldPath::root(),
                    format!("the input defines {}, which aigw generates for {source}; rename or remove it", object.id),
                ));
            }
        }
    }
}

/// Parses a Kubernetes quantity (bytes) such as `32768`, `64Mi`, `1G`.
fn quantity_bytes(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let text = value.as_str()?.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Bytes as a quantity, in MiB when exact.
fn bytes_quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}Mi", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

/// Envoy Gateway's buffer limit when a ClientTrafficPolicy sets none.
pub const EG_DEFAULT_BUFFER_LIMIT: u64 = 32 * 1024;

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

impl Planner<'_> {
    /// The catch-all HTTPRoute of the AIGatewayRoutes of a Gateway that attach the same way
    /// (parent references and hostnames): it sends the first match of every AI request to the
    /// extproc, and answers 404 when no rule matches. One per group instead of one per route,
    /// since Envoy tries the routes of a virtual host in turn: `aigw-route-not-found-<gateway>`,
    /// with a hash of the parent references and hostnames when they narrow it.
    fn shared_catch_all(
        &self,
        gateway: &ObjectId,
        parent_refs: &[ParentReference],
        hostnames: &[String],
    ) -> HttpRoutePlan {
        let narrowed = parent_refs
            .iter()
            .any(|p| p.section_name.is_some() || p.port.is_some())
            || !hostnames.is_empty();
        let base = format!("aigw-route-not-found-{}", gateway.name);
        let name = if narrowed {
            let key = serde_json::to_string(&(parent_refs, hostnames)).unwrap_or_default();
            let digest = hex(&Sha256::digest(key.as_bytes()));
            bounded_name(
                &format!("{}-{}", bounded_name(&base, 244), &digest[..8]),
                253,
            )
        } else {
            bounded_name(&base, 253)
        };
        HttpRoutePlan {
            not_found_filter: bounded_name(&base, 253),
            host_rewrite_filter: String::new(),
            client_host_filter: String::new(),
            name,
            source: gateway.clone(),
            parent_refs: parent_refs.to_vec(),
            hostnames: hostnames.to_vec(),
            labels: BTreeMap::new(),
            rules: Vec::new(),
            catch_all: true,
            rule_authority: None,
        }
    }

    /// Whether every listener of the Gateway the route attaches to serves any hostname, so
    /// that the route's own HTTPRoutes may take a hostname of their own ([`rule_authority`]):
    /// an HTTPRoute hostname must intersect its listener's.
    fn listeners_serve_any_host(
        &self,
        gateway: usize,
        route: &AiGatewayRoute,
        object: &Object,
    ) -> bool {
        let gateway_object = self.object(gateway);
        let Body::Gateway(view) = &gateway_object.body else {
            return false;
        };
        let refs: Vec<&ParentReference> = route
            .spec
            .parent_refs
            .iter()
            .filter(|p| {
                p.name == gateway_object.id.name
                    && p.namespace.as_deref().unwrap_or(&object.id.namespace)
                        == gateway_object.id.namespace
            })
            .collect();
        view.listeners
            .iter()
            .filter(|l| {
                refs.iter().any(|p| {
                    p.section_name.as_ref().is_none_or(|s| *s == l.name)
                        && p.port.is_none_or(|port| i64::from(port) == l.port)
                })
            })
            .all(|l| l.hostname.is_none())
    }

    /// The local-reply EnvoyPatchPolicy of a Gateway: its HTTP and HTTPS listeners, the first
    /// of each port. None when EnvoyPatchPolicies are off or no listener speaks HTTP.
    fn listeners(&self, gateway: usize) -> Vec<ListenerPlan> {
        let object = self.object(gateway);
        let Body::Gateway(view) = &object.body else {
            return Vec::new();
        };
        let xds_name =
            |listener: &str| format!("{}/{}/{listener}", object.id.namespace, object.id.name);
        view.listeners
            .iter()
            .filter(|l| matches!(l.protocol.as_str(), "HTTP" | "HTTPS"))
            .map(|l| {
                let first = view
                    .listeners
                    .iter()
                    .find(|f| f.protocol == "HTTP" && f.port == l.port)
                    .filter(|_| l.protocol == "HTTP")
                    .unwrap_or(l);
                ListenerPlan {
                    name: l.name.clone(),
                    port: l.port,
                    route_config: xds_name(&first.name),
                }
            })
            .collect()
    }

    fn local_replies(&self, gateway: usize, name: &str) -> Option<LocalRepliesPlan> {
        if !self.options.envoy_patch_policies {
            return None;
        }
        let object = self.object(gateway);
        let Body::Gateway(view) = &object.body else {
            return None;
        };
        let mut ports = BTreeSet::new();
        let listeners: Vec<String> = view
            .listeners
            .iter()
            .filter(|l| matches!(l.protocol.as_str(), "HTTP" | "HTTPS"))
            .filter(|l| ports.insert(l.port))
            .map(|l| format!("{}/{}/{}", object.id.namespace, object.id.name, l.name))
            .collect();
        (!listeners.is_empty()).then(|| LocalRepliesPlan {
            name: bounded_name(&format!("{name}-local-replies"), 253),
            listeners,
        })
    }

    /// Envoy buffers the whole request body for the extproc (and responses it reads), up to the
    /// listener's buffer limit: 32 KiB in Envoy Gateway unless a ClientTrafficPolicy says
    /// otherwise. Without a user policy for the Gateway, aigw generates one allowing twice the
    /// extproc's body limit (so the extproc, not Envoy, answers oversized requests); with one,
    /// it warns when that policy's limit is too small.
    fn client_traffic(&mut self, gateway: &ObjectId, name: &str) -> Option<ClientTrafficPlan> {
        let wanted = self.options.max_request_body_bytes;
        let mut found = false;
        for object in &self.input.objects {
            if object.id.group != EG_GROUP
                || object.id.kind != "ClientTrafficPolicy"
                || object.id.namespace != gateway.namespace
            {
                continue;
            }
            let doc = self.input.document(object);
            let targets = doc
                .value
                .pointer("/spec/targetRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .chain(doc.value.pointer("/spec/targetRef"))
                .any(|t| {
                    t.get("kind").and_then(Value::as_str) == Some("Gateway")
                        && t.get("name").and_then(Value::as_str) == Some(&gateway.name)
                });
            if !targets {
                continue;
            }
            found = true;
            if doc
                .value
                .pointer("/spec/timeout/http/requestReceivedTimeout")
                .is_none()
            {
                self.diags.push(self.input.warning_at(
                    object,
                    FieldPath::parse("spec.timeout.http.requestReceivedTimeout"),
                    format!(
                        "unset, so a client may take forever to send a request to the AI routes, holding a connection all that time; set it (aigw's own policy uses {}s, --request-receive-timeout)",
                        self.options.request_receive_timeout_secs
                    ),
                ));
            }
            let limit = doc.value.pointer("/spec/connection/bufferLimit");
            let bytes = limit.map_or(Some(EG_DEFAULT_BUFFER_LIMIT), quantity_bytes);
            if bytes.is_none_or(|b| b < wanted) {
                self.diags.push(self.input.warning_at(
                    object,
                    FieldPath::parse("spec.connection.bufferLimit"),
                    format!(
                        "{}: Envoy rejects request and response bodies above it before aigw-extproc sees them (413 for requests, a reset for responses); set it to at least {} (the extproc's request body limit) or lower --max-request-body-bytes",
                        match (limit, bytes) {
                            (None, _) => "unset, so Envoy Gateway's default of 32 KiB applies".to_string(),
                            (Some(v), Some(b)) => format!("{v} is {b} bytes"),
                            (Some(v), None) => format!("{v} is not a quantity aigw can read"),
                        },
                        bytes_quantity(wanted)
                    ),
                ));
            }
        }
        (!found).then(|| ClientTrafficPlan {
            name: name.to_string(),
            buffer_limit: bytes_quantity(wanted.saturating_mul(2)),
            request_received_timeout: format!("{}s", self.options.request_receive_timeout_secs),
        })
    }

    /// Envoy Gateway honours one BackendTrafficPolicy per route: a user policy on a route that
    /// also gets the generated rate-limit policy would silently lose to one of them.
    fn check_traffic_policies(&mut self, instances: &[Instance]) {
        for object in &self.input.objects {
            if object.id.group != EG_GROUP || object.id.kind != "BackendTrafficPolicy" {
                continue;
            }
            let doc = self.input.document(object);
            let targets = target_names(&doc.value, "HTTPRoute");
            let gateways = target_names(&doc.value, "Gateway");
            for instance in instances.iter().filter(|i| {
                i.gateway.namespace == object.id.namespace
                    && gateways.contains(&i.gateway.name.as_str())
            }) {
                if let Some(rate_limit) = &instance.rate_limit {
                    self.diags.push(self.input.warning_at(
                        object,
                        FieldPath::parse("spec"),
                        format!(
                            "does not apply to HTTPRoutes {}: Envoy Gateway applies a route's own BackendTrafficPolicy instead of its Gateway's, and the generated {} (from QuotaPolicy) targets them",
                            rate_limit.targets.join(", "),
                            rate_limit.name
                        ),
                    ));
                }
            }
            for instance in instances
                .iter()
                .filter(|i| i.namespace == object.id.namespace)
            {
                let Some(rate_limit) = &instance.rate_limit else {
                    continue;
                };
                if let Some(shared) = targets
                    .iter()
                    .find(|t| rate_limit.targets.iter().any(|r| r == *t))
                {
                    self.diags.push(self.input.error_at(
                        object,
                        FieldPath::parse("spec"),
                        format!(
                            "targets HTTPRoute {shared}, which also gets the generated BackendTrafficPolicy {} (from QuotaPolicy); Envoy Gateway applies only one BackendTrafficPolicy per route, so one would be ignored: target other routes, or drop the QuotaPolicy",
                            rate_limit.name
                        ),
                    ));
                }
            }
        }
    }

    /// A per-model quota counts only requests whose backendRef overrides the model to its
    /// `modelName`; one that no route produces would never count anything.
    fn check_quota_models(&mut self) {
        let mut used: BTreeSet<(String, String, String)> = BTreeSet::new();
        for object in &self.input.objects {
            let Body::Route(route) = &object.body else {
                continue;
            };
            for backend_ref in route.spec.rules.iter().flat_map(|r| &r.backend_refs) {
                if let Some(model) = &backend_ref.model_name_override {
                    let ns = backend_ref
                        .namespace
                        .clone()
                        .unwrap_or_else(|| object.id.namespace.clone());
                    used.insert((ns, backend_ref.name.clone(), model.clone()));
                }
            }
        }
        for object in &self.input.objects {
            let Body::QuotaPolicy(policy) = &object.body else {
                continue;
            };
            for (q, quota) in policy.spec.per_model_quotas.iter().enumerate() {
                let applies = policy.spec.target_refs.iter().any(|t| {
                    used.contains(&(
                        object.id.namespace.clone(),
                        t.name.clone(),
                        quota.model_name.clone(),
                    ))
                });
                if !applies {
                    self.diags.push(self.input.warning_at(
                        object,
                        FieldPath::parse("spec.perModelQuotas").index(q).key("modelName"),
                        format!(
                            "no AIGatewayRoute backendRef to the targeted backends sets modelNameOverride: {:?}, so this quota never counts a request",
                            quota.model_name
                        ),
                    ));
                }
            }
        }
    }
}

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

/// The names of a policy's targets (`targetRefs` and the older `targetRef`) of `kind`.
fn target_names<'v>(doc: &'v Value, kind: &str) -> Vec<&'v str> {
    doc.pointer("/spec/targetRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(doc.pointer("/spec/targetRef"))
        .filter(|t| t.get("kind").and_then(Value::as_str) == Some(kind))
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect()
}

/// Selectors for a default bucket that excludes what the bucket rules select. Envoy Gateway ANDs
/// the conditions of a selector, so this works when each bucket rule selects by one header.
fn default_bucket_selectors(
    buckets: &[model::QuotaBucketRule],
) -> Result<Vec<serde_json::Map<String, Value>>, String> {
    let mut inverted = Vec::new();
    for (b, bucket) in buckets.iter().enumerate() {
        let single = match bucket.client_selectors.as_slice() {
            [selector] if selector.len() == 1 => selector
                .get("headers")
                .and_then(Value::as_array)
                .filter(|h| h.len() == 1),
            _ => None,
        };
        let Some([header]) = single.map(Vec::as_slice) else {
            return Err(format!(
                "bucketRules[{b}] selects clients by more than one condition, so the requests the default bucket takes (those no rule selects) cannot be expressed as an Envoy Gateway rate limit; give each bucket rule one header condition"
            ));
        };
        let mut header = header.clone();
        if header.get("type").and_then(Value::as_str) == Some("Distinct") {
            return Err(format!(
                "bucketRules[{b}] uses a Distinct header match, which cannot be excluded from the default bucket"
            ));
        }
        let invert = header
            .get("invert")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        header["invert"] = Value::Bool(!invert);
        if header.get("type").is_none() {
            header["type"] = Value::String("Exact".into());
        }
        inverted.push(header);
    }
    if inverted.is_empty() {
        return Ok(Vec::new());
    }
    let mut selector = serde_json::Map::new();
    selector.insert("headers".into(), Value::Array(inverted));
    Ok(vec![selector])
}

fn unit(duration: QuotaDuration) -> &'static str {
    match duration {
        QuotaDuration::Second => "Second",
        QuotaDuration::Minute => "Minute",
        QuotaDuration::Hour => "Hour",
        QuotaDuration::Day => "Day",
    }
}

fn default_tag(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let tag = last
        .split_once(':')
        .map(|(_, t)| format!(":{t}"))
        .unwrap_or_default();
    let digest = image
        .split_once('@')
        .map(|(_, d)| format!("@{d}"))
        .unwrap_or_default();
    format!("{tag}{digest}")
}

fn default_resources() -> Value {
    serde_json::json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}})
}

fn default_security_context() -> Value {
    serde_json::json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "runAsGroup": 65532,
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

/// The mount of one Secret.
pub fn mounted_secret(secret: &str) -> MountedSecret {
    MountedSecret {
        secret: secret.to_string(),
        volume: bounded_name(&format!("secret-{}", dns_label(secret)), 63),
        mount_path: format!("{SECRETS_ROOT}/{secret}"),
    }
}

fn cost(cost: &model::LlmRequestCost) -> LlmRequestCost {
    LlmRequestCost {
        metadata_key: cost.metadata_key.clone(),
        cost_type: cost.cost_type,
        cel: if cost.cost_type == fc::CostType::CEL {
            cost.cel.clone()
        } else {
            None
        },
        service_backend: None,
        model: None,
    }
}

fn schema(schema: &model::VersionedApiSchema) -> fc::BackendSchema {
    match schema.name {
        ApiSchema::OpenAI | ApiSchema::Anthropic => fc::BackendSchema {
            name: schema.name,
            version: None,
            prefix: Some(
                schema
                    .prefix
                    .as_deref()
                    .map(|p| p.trim_matches('/').to_string())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "v1".into()),
            ),
        },
        _ => fc::BackendSchema {
            name: schema.name,
            version: schema.version.clone(),
            prefix: None,
        },
    }
}

/// Backend-level then route-level: route-level `set` wins per (lower-cased) name; `remove` is
/// the union. Headers a credential override reads are removed so they never reach the provider.
fn header_mutation(
    backend: Option<&HttpHeaderMutation>,
    route: Option<&HttpHeaderMutation>,
    credential_override: Option<&CredentialOverride>,
) -> Option<HeaderMutation> {
    let mut set = BTreeMap::new();
    let mut remove = BTreeSet::new();
    for mutation in [backend, route].into_iter().flatten() {
        for header in &mutation.set {
            set.insert(header.name.to_ascii_lowercase(), header.value.clone());
        }
        remove.extend(mutation.remove.iter().map(|h| h.to_ascii_lowercase()));
    }
    if let Some(header) = credential_override.and_then(|o| o.header_name.as_ref()) {
        if header.ends_with('-') {
            for suffix in ["access-key-id", "secret-access-key", "session-token"] {
                remove.insert(format!("{header}{suffix}"));
            }
        } else {
            remove.insert(header.clone());
        }
    }
    let mutation = HeaderMutation {
        set: set
            .into_iter()
            .map(|(name, value)| HeaderValue { name, value })
            .collect(),
        remove: remove.into_iter().collect(),
    };
    (!mutation.set.is_empty() || !mutation.remove.is_empty()).then_some(mutation)
}

fn body_mutation(
    backend: Option<&HttpBodyMutation>,
    route: Option<&HttpBodyMutation>,
) -> Option<BodyMutation> {
    let mut set = BTreeMap::new();
    let mut remove = BTreeSet::new();
    for mutation in [backend, route].into_iter().flatten() {
        for field in &mutation.set {
            set.insert(field.path.clone(), field.value.clone());
        }
        remove.extend(mutation.remove.iter().cloned());
    }
    let mutation = BodyMutation {
        set: set
            .into_iter()
            .map(|(path, value)| BodyField { path, value })
            .collect(),
        remove: remove.into_iter().collect(),
    };
    (!mutation.set.is_empty() || !mutation.remove.is_empty()).then_some(mutation)
}

/// Builds the filter-config auth of a policy; `files` maps each secretRef field to its file.
fn build_auth(policy: &BackendSecurityPolicy, files: &BTreeMap<FieldPath, String>) -> BackendAuth {
    let spec = &policy.spec;
    let file = |path: &str| {
        files
            .get(&FieldPath::parse(path))
            .cloned()
            .unwrap_or_default()
    };
    let oidc = |o: &model::Oidc, path: &str, grant_type: &Option<String>, aud: &Option<String>| {
        fc::OidcExchange {
            issuer: o.provider.issuer.clone(),
            token_endpoint: o.provider.token_endpoint.clone(),
            client_id: o.client_id.clone().unwrap_or_else(|| {
                files
                    .get(&FieldPath::parse(&format!("{path}.clientIDRef")))
                    .map(|f| format!("file:{f}"))
                    .unwrap_or_default()
            }),
            client_secret_file: files
                .get(&FieldPath::parse(&format!("{path}.clientSecret")))
                .cloned()
                .unwrap_or_default(),
            scopes: o.scopes.clone(),
            grant_type: grant_type.clone(),
            aud: aud.clone(),
        }
    };
    let credential = match spec.policy_type {
        SecurityPolicyType::ApiKey => Credential::ApiKey {
            key_file: file("spec.apiKey.secretRef"),
        },
        SecurityPolicyType::AzureApiKey => Credential::AzureApiKey {
            key_file: file("spec.azureAPIKey.secretRef"),
        },
        SecurityPolicyType::AnthropicApiKey => Credential::AnthropicApiKey {
            key_file: file("spec.anthropicAPIKey.secretRef"),
        },
        SecurityPolicyType::AwsCredentials => {
            let aws = spec.aws_credentials.as_ref();
            Credential::Aws {
                region: aws.map(|a| a.region.clone()).unwrap_or_default(),
                credentials_file: aws
                    .and_then(|a| a.credentials_file.as_ref())
                    .map(|_| file("spec.awsCredentials.credentialsFile.secretRef")),
                profile: aws
                    .and_then(|a| a.credentials_file.as_ref())
                    .map(|f| f.profile.clone()),
                oidc_exchange: aws.and_then(|a| a.oidc_exchange_token.as_ref()).map(|e| {
                    fc::AwsOidcExchange {
                        oidc: oidc(
                            &e.oidc,
                            "spec.awsCredentials.oidcExchangeToken.oidc",
                            &e.grant_type,
                            &e.aud,
                        ),
                        aws_role_arn: e.aws_role_arn.clone(),
                    }
                }),
            }
        }
        SecurityPolicyType::AzureCredentials => {
            let azure = spec.azure_credentials.as_ref();
            Credential::Azure {
                client_id: azure.map(|a| a.client_id.clone()).unwrap_or_default(),
                tenant_id: azure.map(|a| a.tenant_id.clone()).unwrap_or_default(),
                client_secret_file: azure
                    .and_then(|a| a.client_secret_ref.as_ref())
                    .map(|_| file("spec.azureCredentials.clientSecretRef")),
                oidc_exchange: azure.and_then(|a| a.oidc_exchange_token.as_ref()).map(|e| {
                    oidc(
                        &e.oidc,
                        "spec.azureCredentials.oidcExchangeToken.oidc",
                        &e.grant_type,
                        &e.aud,
                    )
                }),
            }
        }
        SecurityPolicyType::GcpCredentials => {
            let gcp = spec.gcp_credentials.as_ref();
            Credential::Gcp {
                project_name: gcp.map(|g| g.project_name.clone()).unwrap_or_default(),
                region: gcp.map(|g| g.region.clone()).unwrap_or_default(),
                credentials_file: gcp.and_then(|g| g.credentials_file.as_ref()).map(|_| file("spec.gcpCredentials.credentialsFile.secretRef")),
                workload_identity_federation: gcp.and_then(|g| g.workload_identity_federation_config.as_ref()).map(|w| {
                    fc::GcpWorkloadIdentityFederation {
                        project_id: w.project_id.clone(),
                        workload_identity_pool_name: w.workload_identity_pool_name.clone(),
                        workload_identity_provider_name: w.workload_identity_provider_name.clone(),
                        service_account_name: w.service_account_impersonation.as_ref().map(|s| s.service_account_name.clone()),
                        oidc: oidc(
                            &w.oidc_exchange_token.oidc,
                            "spec.gcpCredentials.workloadIdentityFederationConfig.oidcExchangeToken.oidc",
                            &w.oidc_exchange_token.grant_type,
                            &w.oidc_exchange_token.aud,
                        ),
                    }
                }),
            }
        }
    };
    let default_header = match spec.policy_type {
        SecurityPolicyType::ApiKey => "x-aigw-api-key",
        SecurityPolicyType::AnthropicApiKey => "x-aigw-anthropic-api-key",
        SecurityPolicyType::AzureApiKey => "x-aigw-azure-api-key",
        SecurityPolicyType::AzureCredentials => "x-aigw-azure-access-token",
        SecurityPolicyType::GcpCredentials => "x-aigw-gcp-access-token",
        SecurityPolicyType::AwsCredentials => "x-aigw-aws-",
    };
    let credential_override = spec.credential_override.as_ref().map(|o| {
        match (&o.from_request_headers, &o.from_dynamic_metadata) {
            (Some(headers), _) => CredentialOverride {
                header_name: Some(
                    headers
                        .header
                        .clone()
                        .unwrap_or_else(|| default_header.into())
                        .to_ascii_lowercase(),
                ),
                metadata_namespace: None,
                metadata_key: None,
                fallback_to_configured: headers.fallback_to_configured,
            },
            (None, Some(metadata)) => CredentialOverride {
                header_name: None,
                metadata_namespace: Some(metadata.namespace.clone()),
                metadata_key: Some(metadata.key.clone().unwrap_or_else(|| {
                    if spec.policy_type == SecurityPolicyType::AwsCredentials {
                        "x-aigw-aws-credentials".into()
                    } else {
                        default_header.into()
                    }
                })),
                fallback_to_configured: metadata.fallback_to_configured,
            },
            (None, None) => CredentialOverride {
                header_name: None,
                metadata_namespace: None,
                metadata_key: None,
                fallback_to_configured: true,
            },
        }
    });
    BackendAuth {
        credential,
        credential_override,
    }
}

#[cfg(test)]
mod tests;
