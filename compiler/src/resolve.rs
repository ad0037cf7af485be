//! Stage 3, resolve: validated objects in, a [`Resolved`] set of links out.
//!
//! Follows every reference between objects and checks what only the whole set can tell:
//! AIGatewayRoute → Gateway (listener attachment as Gateway API defines it: section name, port,
//! protocol, allowed kinds, allowed namespaces, hostnames), AIGatewayRoute → AIServiceBackend →
//! Envoy Gateway Backend, BackendSecurityPolicy → AIServiceBackend and → Secret (with the keys
//! each credential needs), Gateway → GatewayConfig, QuotaPolicy → AIServiceBackend.
//! Cross-namespace references need a ReferenceGrant in the target namespace, as in Gateway API.
//!
//! Mountability of Secrets depends on which extproc instance reads them, so it is checked by
//! [`crate::plan`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::diag::{Diagnostic, FieldPath};
use crate::model::{
    AIGW_GROUP, AiGatewayRoute, AiServiceBackend, BackendSecurityPolicy, EG_GROUP, GATEWAY_GROUP,
    Oidc, SecretObjectReference, SecurityPolicyType,
};
use crate::validate::{
    AllowedFrom, Body, GatewayView, Object, ObjectId, ReferenceGrantView, Validated,
};

/// `(namespace, name)`.
pub type Key = (String, String);

/// A Secret some credential needs: where it is referenced and which key must be in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretUse {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key the credential reads.
    pub key: String,
    /// Field of the BackendSecurityPolicy that references it.
    pub field: FieldPath,
}

/// A Gateway with the AIGatewayRoutes attached to it.
#[derive(Debug, Clone)]
pub struct AttachedGateway {
    /// Index of the Gateway in [`Validated::objects`].
    pub gateway: usize,
    /// Routes attached, as object indices, ordered by namespace then name.
    pub routes: Vec<usize>,
    /// GatewayConfig object index, when the Gateway names one.
    pub config: Option<usize>,
}

/// Output of the stage.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Gateways that have AIGatewayRoutes, ordered by namespace then name.
    pub gateways: Vec<AttachedGateway>,
    /// AIServiceBackends by key.
    pub service_backends: BTreeMap<Key, usize>,
    /// Envoy Gateway Backends by key.
    pub eg_backends: BTreeMap<Key, usize>,
    /// The BackendSecurityPolicy of each AIServiceBackend that has one.
    pub security_policy_of: BTreeMap<Key, usize>,
    /// Secrets each BackendSecurityPolicy reads.
    pub secrets_of_policy: BTreeMap<usize, Vec<SecretUse>>,
    /// QuotaPolicies by the AIServiceBackend they target.
    pub quotas_of: BTreeMap<Key, Vec<usize>>,
    /// Secrets present in the input.
    pub secrets: BTreeMap<Key, usize>,
}

struct Index<'a> {
    input: &'a Validated,
    by_id: BTreeMap<(&'a str, &'a str, &'a str, &'a str), usize>,
    grants: BTreeMap<&'a str, Vec<&'a ReferenceGrantView>>,
}

impl<'a> Index<'a> {
    fn new(input: &'a Validated) -> Self {
        let by_id = input
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| {
                (
                    (
                        o.id.group.as_str(),
                        o.id.kind.as_str(),
                        o.id.namespace.as_str(),
                        o.id.name.as_str(),
                    ),
                    i,
                )
            })
            .collect();
        let mut grants: BTreeMap<&str, Vec<&ReferenceGrantView>> = BTreeMap::new();
        for object in &input.objects {
            if let Body::ReferenceGrant(grant) = &object.body {
                grants
                    .entry(object.id.namespace.as_str())
                    .or_default()
                    .push(grant);
            }
        }
        Index {
            input,
            by_id,
            grants,
        }
    }

    fn find(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<usize> {
        self.by_id.get(&(group, kind, namespace, name)).copied()
    }

    /// True when the object is in the input, valid or not: a reference to an object that failed
    /// validation is not reported a second time as dangling.
    fn present(&self, group: &str, kind: &str, namespace: &str, name: &str) -> bool {
        self.find(group, kind, namespace, name).is_some()
            || self.input.rejected.contains(&ObjectId {
                group: group.to_string(),
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
    }

    /// Whether `to` (group, kind, namespace, name) is in the input ([`Index::present`]); when
    /// not, an error at `field` that `object` names it.
    fn require_present(
        &self,
        object: &Object,
        field: &FieldPath,
        (group, kind, namespace, name): (&str, &str, &str, &str),
        diags: &mut Vec<Diagnostic>,
    ) -> bool {
        let present = self.present(group, kind, namespace, name);
        if !present {
            diags.push(self.input.error_at(
                object,
                field.clone(),
                format!("{kind} {namespace}/{name} not found in the input"),
            ));
        }
        present
    }

    /// Whether `object`, an aigateway.envoyproxy.io `from_kind`, may reference `to` (group,
    /// kind, namespace, name): it is in the object's own namespace, or a ReferenceGrant there
    /// allows it. When not, an error at `field.namespace` naming the grant needed (`to_label`:
    /// `to`'s group and kind as the message writes them).
    fn require_grant(
        &self,
        object: &Object,
        field: &FieldPath,
        from_kind: &str,
        (group, kind, namespace, name): (&str, &str, &str, &str),
        to_label: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> bool {
        let own = &object.id.namespace;
        let from = (AIGW_GROUP, from_kind, own.as_str());
        if namespace == own || self.granted(from, namespace, (group, kind, name)) {
            return true;
        }
        diags.push(self.input.error_at(
            object,
            field.key("namespace"),
            format!(
                "referencing {kind} {namespace}/{name} from namespace {own:?} needs a ReferenceGrant in namespace {namespace:?} from {AIGW_GROUP}/{from_kind} in {own:?} to {to_label}"
            ),
        ));
        false
    }

    /// [`Index::require_present`], then [`Index::require_grant`].
    fn require_reference(
        &self,
        object: &Object,
        field: &FieldPath,
        from_kind: &str,
        to: (&str, &str, &str, &str),
        to_label: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> bool {
        self.require_present(object, field, to, diags)
            && self.require_grant(object, field, from_kind, to, to_label, diags)
    }

    fn object(&self, index: usize) -> &'a Object {
        &self.input.objects[index]
    }

    /// True when a ReferenceGrant in `to_namespace` lets `(from_group, from_kind, from_namespace)`
    /// refer to `(to_group, to_kind, to_name)`.
    fn granted(
        &self,
        from: (&str, &str, &str),
        to_namespace: &str,
        to: (&str, &str, &str),
    ) -> bool {
        self.grants
            .get(to_namespace)
            .into_iter()
            .flatten()
            .any(|grant| {
                grant
                    .from
                    .iter()
                    .any(|(g, k, ns)| g == from.0 && k == from.1 && ns == from.2)
                    && grant.to.iter().any(|(g, k, name)| {
                        g == to.0 && k == to.1 && name.as_deref().is_none_or(|n| n == to.2)
                    })
            })
    }
}

fn route_of(object: &Object) -> Option<&AiGatewayRoute> {
    match &object.body {
        Body::Route(route) => Some(route),
        _ => None,
    }
}

/// Resolves every reference; returns the links and every problem found.
pub fn resolve(input: &Validated) -> (Resolved, Vec<Diagnostic>) {
    let index = Index::new(input);
    let mut diags = Vec::new();
    let mut resolved = Resolved {
        gateways: Vec::new(),
        service_backends: BTreeMap::new(),
        eg_backends: BTreeMap::new(),
        security_policy_of: BTreeMap::new(),
        secrets_of_policy: BTreeMap::new(),
        quotas_of: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    for (i, object) in input.objects.iter().enumerate() {
        let key = (object.id.namespace.clone(), object.id.name.clone());
        match (
            &object.body,
            object.id.group.as_str(),
            object.id.kind.as_str(),
        ) {
            (Body::ServiceBackend(_), ..) => {
                resolved.service_backends.insert(key, i);
            }
            (Body::Secret(_), ..) => {
                resolved.secrets.insert(key, i);
            }
            (_, EG_GROUP, "Backend") => {
                resolved.eg_backends.insert(key, i);
            }
            _ => {}
        }
    }

    let mut attached: BTreeMap<usize, BTreeSet<(String, String, usize)>> = BTreeMap::new();
    for (i, object) in input.objects.iter().enumerate() {
        let Some(route) = route_of(object) else {
            continue;
        };
        for gateway in attach_route(&index, object, route, &mut diags) {
            attached.entry(gateway).or_default().insert((
                object.id.namespace.clone(),
                object.id.name.clone(),
                i,
            ));
        }
        check_route_backends(&index, object, route, &mut diags);
    }

    for (i, object) in input.objects.iter().enumerate() {
        match &object.body {
            Body::ServiceBackend(backend) => {
                check_service_backend(&index, object, backend, &mut diags)
            }
            Body::SecurityPolicy(policy) => {
                check_policy_targets(&index, i, object, policy, &mut resolved, &mut diags);
                let refs = credential_refs(&index, object, policy, &mut diags);
                let uses = secret_uses(&index, object, refs, &mut diags);
                resolved.secrets_of_policy.insert(i, uses);
            }
            Body::QuotaPolicy(quota) => {
                for (t, target) in quota.spec.target_refs.iter().enumerate() {
                    let key = (object.id.namespace.clone(), target.name.clone());
                    let field = FieldPath::parse("spec.targetRefs").index(t);
                    let to = (
                        AIGW_GROUP,
                        "AIServiceBackend",
                        key.0.as_str(),
                        key.1.as_str(),
                    );
                    if index.require_present(object, &field, to, &mut diags) {
                        resolved.quotas_of.entry(key).or_default().push(i);
                    }
                }
            }
            _ => {}
        }
    }

    for (gateway, routes) in attached {
        let object = index.object(gateway);
        let Body::Gateway(view) = &object.body else {
            continue;
        };
        let config = view.gateway_config.as_ref().and_then(|name| {
            let found = index.find(AIGW_GROUP, "GatewayConfig", &object.id.namespace, name);
            if found.is_none() {
                diags.push(input.error_at(
                    object,
                    FieldPath::parse("metadata.annotations"),
                    format!(
                        "annotation aigateway.envoyproxy.io/gateway-config names GatewayConfig {}/{name}, which is not in the input",
                        object.id.namespace
                    ),
                ));
            }
            found
        });
        resolved.gateways.push(AttachedGateway {
            gateway,
            routes: routes.into_iter().map(|(_, _, i)| i).collect(),
            config,
        });
    }
    resolved
        .gateways
        .sort_by(|a, b| index.object(a.gateway).id.cmp(&index.object(b.gateway).id));
    diags.extend(overlap_warnings(&index, &resolved));
    (resolved, diags)
}

/// Attaches a route to the Gateways of its parentRefs; returns the Gateway object indices.
fn attach_route(
    index: &Index<'_>,
    object: &Object,
    route: &AiGatewayRoute,
    diags: &mut Vec<Diagnostic>,
) -> Vec<usize> {
    let input = index.input;
    let mut gateways = Vec::new();
    if route.spec.parent_refs.is_empty() {
        diags.push(input.warning_at(
            object,
            FieldPath::parse("spec.parentRefs"),
            "the route has no parentRefs, so it attaches to no Gateway and produces nothing",
        ));
    }
    for (p, parent) in route.spec.parent_refs.iter().enumerate() {
        let field = FieldPath::parse("spec.parentRefs").index(p);
        let namespace = parent
            .namespace
            .clone()
            .unwrap_or_else(|| object.id.namespace.clone());
        if parent.group != GATEWAY_GROUP {
            diags.push(input.error_at(
                object,
                field.key("group"),
                format!("parent group must be {GATEWAY_GROUP}"),
            ));
            continue;
        }
        let Some(gateway) = index.find(GATEWAY_GROUP, "Gateway", &namespace, &parent.name) else {
            diags.push(input.error_at(
                object,
                field,
                format!("Gateway {namespace}/{} not found in the input", parent.name),
            ));
            continue;
        };
        let gw_object = index.object(gateway);
        let Body::Gateway(view) = &gw_object.body else {
            continue;
        };
        match admitting_listener(index, view, &gw_object.id, parent, object, route) {
            Ok(()) => gateways.push(gateway),
            Err(reason) => diags.push(input.error_at(
                object,
                field,
                format!(
                    "the route cannot attach to Gateway {namespace}/{}: {reason}",
                    parent.name
                ),
            )),
        }
    }
    gateways
}

fn admitting_listener(
    index: &Index<'_>,
    view: &GatewayView,
    gateway: &ObjectId,
    parent: &crate::model::ParentReference,
    route_object: &Object,
    route: &AiGatewayRoute,
) -> Result<(), String> {
    let mut reasons = Vec::new();
    let candidates: Vec<_> = view
        .listeners
        .iter()
        .filter(|l| parent.section_name.as_ref().is_none_or(|s| *s == l.name))
        .filter(|l| parent.port.is_none_or(|p| i64::from(p) == l.port))
        .collect();
    if candidates.is_empty() {
        return Err(match (&parent.section_name, parent.port) {
            (Some(section), _) => format!(
                "it has no listener named {section:?}{}",
                port_suffix(parent.port)
            ),
            (None, Some(port)) => format!("it has no listener on port {port}"),
            (None, None) => "it has no listeners".into(),
        });
    }
    for listener in candidates {
        if !matches!(listener.protocol.as_str(), "HTTP" | "HTTPS") {
            reasons.push(format!(
                "listener {:?} speaks {}, not HTTP or HTTPS",
                listener.name, listener.protocol
            ));
            continue;
        }
        if let Some(kinds) = &listener.allowed_kinds
            && !kinds
                .iter()
                .any(|(g, k)| g == GATEWAY_GROUP && k == "HTTPRoute")
        {
            reasons.push(format!(
                "listener {:?} does not allow HTTPRoutes",
                listener.name
            ));
            continue;
        }
        if let Err(reason) = namespace_admitted(
            index,
            &listener.allowed_from,
            &gateway.namespace,
            &route_object.id.namespace,
        ) {
            reasons.push(format!("listener {:?}: {reason}", listener.name));
            continue;
        }
        if let Some(host) = &listener.hostname
            && !route.spec.hostnames.is_empty()
            && !route
                .spec
                .hostnames
                .iter()
                .any(|h| hostnames_intersect(h, host))
        {
            reasons.push(format!(
                "listener {:?} serves {host:?}, which none of the route's hostnames matches",
                listener.name
            ));
            continue;
        }
        return Ok(());
    }
    Err(reasons.join("; "))
}

fn port_suffix(port: Option<i32>) -> String {
    port.map(|p| format!(" on port {p}")).unwrap_or_default()
}

fn namespace_admitted(
    index: &Index<'_>,
    from: &AllowedFrom,
    gateway_ns: &str,
    route_ns: &str,
) -> Result<(), String> {
    match from {
        AllowedFrom::All => Ok(()),
        AllowedFrom::Same if gateway_ns == route_ns => Ok(()),
        AllowedFrom::Same => Err(format!(
            "allowedRoutes admits only routes from namespace {gateway_ns:?} (the route is in {route_ns:?})"
        )),
        AllowedFrom::Selector(selector) => {
            // The generated HTTPRoute lives in the Gateway's namespace, so both must match.
            for ns in [route_ns, gateway_ns] {
                let Some(object) = index.find("", "Namespace", "", ns) else {
                    return Err(format!(
                        "allowedRoutes selects namespaces by label, and Namespace {ns:?} is not in the input, so its labels cannot be checked; add the Namespace object"
                    ));
                };
                let Body::Namespace(labels) = &index.object(object).body else {
                    continue;
                };
                if !selector_matches(selector, labels)? {
                    return Err(if ns == gateway_ns && ns != route_ns {
                        format!(
                            "allowedRoutes' namespace selector does not match the Gateway's own namespace {ns:?}, where aigw puts the generated HTTPRoute; label that Namespace so the selector admits it"
                        )
                    } else {
                        format!("allowedRoutes' namespace selector does not match Namespace {ns:?}")
                    });
                }
            }
            Ok(())
        }
    }
}

/// Evaluates a Kubernetes LabelSelector (`matchLabels`, `matchExpressions` with `In`, `NotIn`,
/// `Exists`, `DoesNotExist`); a `matchLabels` value that is not a string matches no label.
pub fn selector_matches(
    selector: &Value,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    if let Some(required) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in required {
            if value
                .as_str()
                .is_none_or(|v| labels.get(key).map(String::as_str) != Some(v))
            {
                return Ok(false);
            }
        }
    }
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    for expression in expressions.into_iter().flatten() {
        let text = |field: &str| expression.get(field).and_then(Value::as_str);
        let key = text("key").unwrap_or_default();
        let values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let actual = labels.get(key).map(String::as_str);
        let holds = match text("operator") {
            Some("In") => actual.is_some_and(|a| values.contains(&a)),
            Some("NotIn") => actual.is_none_or(|a| !values.contains(&a)),
            Some("Exists") => actual.is_some(),
            Some("DoesNotExist") => actual.is_none(),
            other => return Err(format!("unsupported label selector operator {other:?}")),
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Gateway API hostname intersection (a `*.` wildcard matches one or more labels).
pub fn hostnames_intersect(a: &str, b: &str) -> bool {
    fn covers(wildcard: &str, host: &str) -> bool {
        match wildcard.strip_prefix('*') {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => wildcard == host,
        }
    }
    a == b || covers(a, b) || covers(b, a)
}

fn check_route_backends(
    index: &Index<'_>,
    object: &Object,
    route: &AiGatewayRoute,
    diags: &mut Vec<Diagnostic>,
) {
    let input = index.input;
    for (r, rule) in route.spec.rules.iter().enumerate() {
        for (b, backend_ref) in rule.backend_refs.iter().enumerate() {
            let field = FieldPath::parse("spec.rules")
                .index(r)
                .key("backendRefs")
                .index(b);
            if backend_ref.kind.is_some() {
                diags.push(input.error_at(
                    object,
                    field,
                    "InferencePool backends are not yet supported by aigw; use an AIServiceBackend",
                ));
                continue;
            }
            let namespace = backend_ref
                .namespace
                .clone()
                .unwrap_or_else(|| object.id.namespace.clone());
            let to = (
                AIGW_GROUP,
                "AIServiceBackend",
                &*namespace,
                &*backend_ref.name,
            );
            let to_label = format!("{AIGW_GROUP}/AIServiceBackend");
            index.require_reference(object, &field, "AIGatewayRoute", to, &to_label, diags);
        }
    }
}

fn check_service_backend(
    index: &Index<'_>,
    object: &Object,
    backend: &AiServiceBackend,
    diags: &mut Vec<Diagnostic>,
) {
    let target = &backend.spec.backend_ref;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| object.id.namespace.clone());
    let field = FieldPath::parse("spec.backendRef");
    let to = (&*target.group, &*target.kind, &*namespace, &*target.name);
    let to_label = format!("{}/{}", target.group, target.kind);
    index.require_reference(object, &field, "AIServiceBackend", to, &to_label, diags);
}

/// Each target of a policy: an AIServiceBackend of the input that no other policy targets.
fn check_policy_targets(
    index: &Index<'_>,
    policy_index: usize,
    object: &Object,
    policy: &BackendSecurityPolicy,
    resolved: &mut Resolved,
    diags: &mut Vec<Diagnostic>,
) {
    let input = index.input;
    for (t, target) in policy.spec.target_refs.iter().enumerate() {
        let field = FieldPath::parse("spec.targetRefs").index(t);
        if target.kind == "InferencePool" {
            diags.push(input.error_at(
                object,
                field,
                "InferencePool targets are not yet supported by aigw",
            ));
            continue;
        }
        let key = (object.id.namespace.clone(), target.name.clone());
        let to = (
            AIGW_GROUP,
            "AIServiceBackend",
            key.0.as_str(),
            key.1.as_str(),
        );
        if !index.require_present(object, &field, to, diags) {
            continue;
        }
        if let Some(previous) = resolved
            .security_policy_of
            .insert(key.clone(), policy_index)
        {
            let other = index.object(previous);
            diags.push(input.error_at(
                object,
                field,
                format!(
                    "AIServiceBackend {}/{} is already targeted by {}; a backend can have only one BackendSecurityPolicy",
                    key.0, key.1, other.id
                ),
            ));
        }
    }
}

/// The Secrets a policy's credential reads: each reference, the key read and its field; with
/// the checks on how the credential's sources combine.
fn credential_refs<'a>(
    index: &Index<'_>,
    object: &Object,
    policy: &'a BackendSecurityPolicy,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(&'a SecretObjectReference, &'static str, FieldPath)> {
    let input = index.input;
    let spec = &policy.spec;
    let spec_path = FieldPath::parse("spec");
    let aws = spec.aws_credentials.as_ref();
    let azure = spec.azure_credentials.as_ref();
    let gcp = spec.gcp_credentials.as_ref();
    // The API keys, each in the field of its type, and the Secrets of the cloud credentials.
    let api_keys = [
        (SecurityPolicyType::ApiKey, &spec.api_key),
        (SecurityPolicyType::AzureApiKey, &spec.azure_api_key),
        (SecurityPolicyType::AnthropicApiKey, &spec.anthropic_api_key),
    ];
    let mut refs: Vec<(&SecretObjectReference, &'static str, FieldPath)> = api_keys
        .into_iter()
        .filter_map(|(policy_type, key)| {
            let path = spec_path.key(policy_type.field()).key("secretRef");
            key.as_ref().map(|key| (&key.secret_ref, "apiKey", path))
        })
        .collect();
    let cloud_secrets: [(Option<&'a SecretObjectReference>, &'static str, &str); 3] = [
        (
            aws.and_then(|a| a.credentials_file.as_ref())
                .map(|f| &f.secret_ref),
            "credentials",
            "spec.awsCredentials.credentialsFile.secretRef",
        ),
        (
            azure.and_then(|a| a.client_secret_ref.as_ref()),
            "client-secret",
            "spec.azureCredentials.clientSecretRef",
        ),
        (
            gcp.and_then(|g| g.credentials_file.as_ref())
                .map(|f| &f.secret_ref),
            "service_account.json",
            "spec.gcpCredentials.credentialsFile.secretRef",
        ),
    ];
    refs.extend(
        cloud_secrets
            .into_iter()
            .filter_map(|(secret, key, path)| secret.map(|s| (s, key, FieldPath::parse(path)))),
    );
    // The OIDC clients whose secrets the token exchanges read.
    let oidcs: [(Option<&'a Oidc>, &str); 3] = [
        (
            aws.and_then(|a| a.oidc_exchange_token.as_ref())
                .map(|e| &e.oidc),
            "spec.awsCredentials.oidcExchangeToken.oidc",
        ),
        (
            azure
                .and_then(|a| a.oidc_exchange_token.as_ref())
                .map(|e| &e.oidc),
            "spec.azureCredentials.oidcExchangeToken.oidc",
        ),
        (
            gcp.and_then(|g| g.workload_identity_federation_config.as_ref())
                .map(|w| &w.oidc_exchange_token.oidc),
            "spec.gcpCredentials.workloadIdentityFederationConfig.oidcExchangeToken.oidc",
        ),
    ];
    let oidcs = oidcs
        .into_iter()
        .filter_map(|(oidc, path)| oidc.map(|o| (o, FieldPath::parse(path))));
    if let Some(gcp) = gcp {
        let static_credential =
            gcp.credentials_file.is_some() || gcp.workload_identity_federation_config.is_some();
        let fallback = spec.credential_override.as_ref().is_some_and(|o| {
            o.from_request_headers
                .as_ref()
                .is_some_and(|h| h.fallback_to_configured)
                || o.from_dynamic_metadata
                    .as_ref()
                    .is_some_and(|m| m.fallback_to_configured)
        });
        if fallback && !static_credential {
            diags.push(input.error_at(
                object,
                spec_path.key("credentialOverride"),
                "fallbackToConfigured needs a configured credential, and GCP application default credentials do not count as one; set fallbackToConfigured: false or configure credentialsFile",
            ));
        }
    }
    for (oidc, path) in oidcs {
        refs.push((
            &oidc.client_secret,
            "client-secret",
            path.key("clientSecret"),
        ));
        if let Some(id_ref) = &oidc.client_id_ref {
            refs.push((id_ref, "client-id", path.key("clientIDRef")));
        }
    }
    if spec.policy_type == SecurityPolicyType::AwsCredentials
        && spec
            .aws_credentials
            .as_ref()
            .is_some_and(|a| a.oidc_exchange_token.is_some() && a.credentials_file.is_some())
    {
        diags.push(input.error_at(
            object,
            spec_path.key("awsCredentials"),
            "set either credentialsFile or oidcExchangeToken, not both",
        ));
    }
    refs
}

/// Each Secret reference resolved: a core Secret, in the policy's namespace or granted, with
/// the key the credential reads.
fn secret_uses(
    index: &Index<'_>,
    object: &Object,
    refs: Vec<(&SecretObjectReference, &'static str, FieldPath)>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<SecretUse> {
    let input = index.input;
    let mut uses = Vec::new();
    for (secret_ref, key, field) in refs {
        if !(secret_ref.group.is_empty() && secret_ref.kind == "Secret") {
            diags.push(input.error_at(object, field, "only core Secrets can be referenced"));
            continue;
        }
        let namespace = secret_ref
            .namespace
            .clone()
            .unwrap_or_else(|| object.id.namespace.clone());
        let to = ("", "Secret", &*namespace, &*secret_ref.name);
        let from = "BackendSecurityPolicy";
        if !index.require_grant(object, &field, from, to, "Secret", diags) {
            continue;
        }
        if let Some(secret) = index.find("", "Secret", &namespace, &secret_ref.name)
            && let Body::Secret(view) = &index.object(secret).body
            && !view.keys.contains(key)
        {
            diags.push(input.error_at(
                        object,
                        field.clone(),
                        format!(
                            "Secret {namespace}/{} has no key {key:?} (it has: {}), which this credential reads",
                            secret_ref.name,
                            if view.keys.is_empty() { "none".to_string() } else { view.keys.iter().cloned().collect::<Vec<_>>().join(", ") }
                        ),
                    ));
        }
        uses.push(SecretUse {
            namespace,
            name: secret_ref.name.clone(),
            key: key.to_string(),
            field,
        });
    }
    uses
}

/// Whether two routes compete for the same requests. The extproc picks routes by hostname
/// precedence first (exact, then the longest wildcard, then routes without hostnames), so two
/// routes compete only when both have no hostnames or they share one.
fn hosts_overlap(a: &AiGatewayRoute, b: &AiGatewayRoute) -> bool {
    let (x, y) = (&a.spec.hostnames, &b.spec.hostnames);
    (x.is_empty() && y.is_empty()) || x.iter().any(|h| y.contains(h))
}

/// Warns when two routes on one Gateway can match the same request: the first by
/// namespace/name wins, which is rarely what the author meant. Linear in the number of routes:
/// earlier routes are indexed by the exact models they match.
fn overlap_warnings(index: &Index<'_>, resolved: &Resolved) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for gateway in &resolved.gateways {
        let mut by_model: BTreeMap<&str, Vec<(&Object, &AiGatewayRoute)>> = BTreeMap::new();
        let mut catch_alls: Vec<(&Object, &AiGatewayRoute)> = Vec::new();
        for &i in &gateway.routes {
            let object = index.object(i);
            let Some(route) = route_of(object) else {
                continue;
            };
            let mut reported = BTreeSet::new();
            let models = exact_models(route);
            let mut earlier: Vec<(&Object, &AiGatewayRoute, String)> = catch_alls
                .iter()
                .map(|(o, r)| {
                    (
                        *o,
                        *r,
                        "every model (its rules have a catch-all)".to_string(),
                    )
                })
                .collect();
            for model in &models {
                for (o, r) in by_model.get(model.as_str()).into_iter().flatten() {
                    earlier.push((*o, *r, format!("model {model:?}")));
                }
            }
            for (first_object, first, what) in earlier {
                if !hosts_overlap(first, route) || !reported.insert(&first_object.id) {
                    continue;
                }
                out.push(index.input.warning_at(
                    object,
                    FieldPath::root(),
                    format!(
                        "{} on the same Gateway also matches {what} for the same hosts and is evaluated first (routes are ordered by namespace/name), so this route never sees those requests",
                        first_object.id
                    ),
                ));
            }
            for model in models {
                by_model
                    .entry(model.as_str())
                    .or_default()
                    .push((object, route));
            }
            if catches_all(route) {
                catch_alls.push((object, route));
            }
        }
    }
    out
}

fn exact_models(route: &AiGatewayRoute) -> Vec<&String> {
    route
        .spec
        .rules
        .iter()
        .flat_map(|r| &r.matches)
        .flat_map(|m| &m.headers)
        .filter(|h| {
            h.name.eq_ignore_ascii_case(aigw_filterconfig::MODEL_HEADER)
                && h.match_type == crate::model::HeaderMatchType::Exact
        })
        .map(|h| &h.value)
        .collect()
}

fn catches_all(route: &AiGatewayRoute) -> bool {
    route
        .spec
        .rules
        .iter()
        .any(|r| r.matches.is_empty() || r.matches.iter().any(|m| m.headers.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_intersection_follows_gateway_api() {
        assert!(hostnames_intersect("a.example.com", "a.example.com"));
        assert!(hostnames_intersect("*.example.com", "a.b.example.com"));
        assert!(hostnames_intersect("a.example.com", "*.example.com"));
        assert!(!hostnames_intersect("*.example.com", "example.com"));
        assert!(!hostnames_intersect("a.example.com", "b.example.com"));
    }

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> = [("team".to_string(), "ai".to_string())].into();
        let yes = serde_json::json!({"matchLabels": {"team": "ai"}, "matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]});
        let no = serde_json::json!({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["ai"]}]});
        assert_eq!(selector_matches(&yes, &labels), Ok(true));
        assert_eq!(selector_matches(&no, &labels), Ok(false));
        let not_a_string = serde_json::json!({"matchLabels": {"env": 1}});
        assert_eq!(selector_matches(&not_a_string, &labels), Ok(false));
        assert!(
            selector_matches(
                &serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}),
                &labels
            )
            .is_err()
        );
    }
}
