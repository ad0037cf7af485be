//! One AIGatewayRoute in the filter config: its rules, matches and models, the filter-config
//! backends of its backendRefs (schema, mutations, auth, upstream host), and the HTTPRoute rules
//! that carry them, selected by backend or by rule.

use std::collections::{BTreeMap, BTreeSet};

use aigw_filterconfig::{
    self as fc, ApiSchema, BackendAuth, BodyField, BodyMutation, Credential, CredentialOverride,
    HeaderMutation, HeaderValue, LlmRequestCost, Model, RULE_HOST_DOMAIN,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    AI_PATH_PREFIXES, BackendRule, MountedSecret, Planner, RuleTarget, Selection, TargetFacts, hex,
};
use crate::diag::FieldPath;
use crate::model::{
    self, AiGatewayRoute, AiGatewayRouteRule, AiGatewayRouteRuleBackendRef, AiServiceBackend,
    EG_GROUP, HeaderMatchType, HttpBodyMutation, HttpHeaderMutation,
};
use crate::resolve::Key;
use crate::validate::{Body, Object, ObjectId};

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

pub(super) fn cost(cost: &model::LlmRequestCost) -> LlmRequestCost {
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
pub(super) fn header_mutation(
    backend: Option<&HttpHeaderMutation>,
    route: Option<&HttpHeaderMutation>,
    credential_override: Option<&CredentialOverride>,
) -> Option<HeaderMutation> {
    let mut merged = Merged::of(
        [backend, route],
        |m| {
            m.set
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
                .collect()
        },
        |m| m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    );
    if let Some(header) = credential_override.and_then(|o| o.header_name.as_ref()) {
        if header.ends_with('-') {
            for suffix in ["access-key-id", "secret-access-key", "session-token"] {
                merged.remove.insert(format!("{header}{suffix}"));
            }
        } else {
            merged.remove.insert(header.clone());
        }
    }
    let (set, remove) = merged.finish(|name, value| HeaderValue { name, value })?;
    Some(HeaderMutation { set, remove })
}

fn body_mutation(
    backend: Option<&HttpBodyMutation>,
    route: Option<&HttpBodyMutation>,
) -> Option<BodyMutation> {
    let merged = Merged::of(
        [backend, route],
        |m| {
            m.set
                .iter()
                .map(|f| (f.path.clone(), f.value.clone()))
                .collect()
        },
        |m| m.remove.clone(),
    );
    let (set, remove) = merged.finish(|path, value| BodyField { path, value })?;
    Some(BodyMutation { set, remove })
}

/// Backend-level and route-level mutations merged: a later `set` wins per key, `remove` is the
/// union.
struct Merged {
    set: BTreeMap<String, String>,
    remove: BTreeSet<String>,
}

impl Merged {
    /// Merges the levels present, in order, reading each one's `set` and `remove` entries.
    fn of<M>(
        levels: [Option<&M>; 2],
        set: impl Fn(&M) -> Vec<(String, String)>,
        remove: impl Fn(&M) -> Vec<String>,
    ) -> Self {
        let mut merged = Merged {
            set: BTreeMap::new(),
            remove: BTreeSet::new(),
        };
        for mutation in levels.into_iter().flatten() {
            merged.set.extend(set(mutation));
            merged.remove.extend(remove(mutation));
        }
        merged
    }

    /// The `set` entries (sorted by key, made with `entry`) and the sorted removals; `None`
    /// when both are empty.
    fn finish<E>(self, entry: impl Fn(String, String) -> E) -> Option<(Vec<E>, Vec<String>)> {
        if self.set.is_empty() && self.remove.is_empty() {
            return None;
        }
        let set = self.set.into_iter().map(|(k, v)| entry(k, v)).collect();
        Some((set, self.remove.into_iter().collect()))
    }
}

impl Planner<'_> {
    /// The filter-config view of one route, its backends, and the HTTPRoute rules it needs.
    pub(super) fn route(
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
            let matches = rule_matches(rule);
            self.rule_models(object, rule, &rule_path, created, &mut models);
            let refs = self.rule_backends(object, i, rule, gateway, secrets);
            backends.extend(refs.backends);
            http_rules.extend(self.http_rules(object, i, rule, refs.targets, refs.has_priority));
            fc_rules.push(fc::RouteRule {
                name: rule.name.clone(),
                matches,
                backends: refs.weighted,
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

    /// The models rule `i` names by exact `x-ai-eg-model` matches (the first rule naming a
    /// model wins), into `models`; an invalid regular expression in its header matches is an
    /// error.
    fn rule_models(
        &mut self,
        object: &Object,
        rule: &AiGatewayRouteRule,
        rule_path: &FieldPath,
        created: i64,
        models: &mut BTreeMap<String, Model>,
    ) {
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
    }

    /// The backendRefs of rule `i` as filter-config backends (with their auth, its Secrets
    /// recorded in `secrets`), weighted, and those that take traffic as HTTPRoute rule targets.
    fn rule_backends(
        &mut self,
        object: &Object,
        i: usize,
        rule: &AiGatewayRouteRule,
        gateway: &ObjectId,
        secrets: &mut BTreeSet<MountedSecret>,
    ) -> RuleBackends {
        let route_name = format!("{}/{}", object.id.namespace, object.id.name);
        let mut out = RuleBackends::default();
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
            out.has_priority |= priority > 0;
            out.weighted.push(fc::WeightedBackend {
                backend: id.clone(),
                weight,
                priority,
            });
            let auth = self.auth(&key, gateway, secrets);
            if self.reported_backends.insert(backend_index) {
                self.check_cloud_credential(&backend_object, service_backend, auth.as_ref());
            }
            out.backends
                .push(self.fc_backend(&id, &ns, backend_ref, service_backend, auth));
            if weight > 0 {
                let target = &service_backend.spec.backend_ref;
                let target_namespace = target.namespace.clone().unwrap_or_else(|| ns.clone());
                let facts = self.target_facts(target, &target_namespace);
                out.targets.push(WeightedTarget {
                    index: j,
                    id,
                    target: RuleTarget {
                        target: target.clone(),
                        target_namespace,
                        weight,
                        priority,
                        facts,
                    },
                    upstream_prefix: upstream_prefix(&service_backend.spec.schema),
                });
            }
        }
        out
    }

    /// The filter-config backend `id` of a backendRef to AIServiceBackend `ns/<name>`.
    fn fc_backend(
        &self,
        id: &str,
        ns: &str,
        backend_ref: &AiGatewayRouteRuleBackendRef,
        service_backend: &AiServiceBackend,
        auth: Option<BackendAuth>,
    ) -> fc::Backend {
        fc::Backend {
            name: id.to_string(),
            service_backend: format!("{ns}/{}", backend_ref.name),
            schema: schema(&service_backend.spec.schema),
            model_name_override: backend_ref
                .model_name_override
                .clone()
                .filter(|m| !m.is_empty()),
            upstream_host: self.upstream_host(service_backend, ns),
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
        }
    }

    /// The HTTPRoute rules of rule `i` from its `targets`: one listing them all, selected by
    /// rule, when Envoy chooses between them (and can: EnvoyPatchPolicies on, one address
    /// type), else one per target, selected by backend; with warnings for what a rule that Envoy
    /// does not balance loses.
    fn http_rules(
        &mut self,
        object: &Object,
        i: usize,
        rule: &AiGatewayRouteRule,
        targets: Vec<WeightedTarget>,
        has_priority: bool,
    ) -> Vec<BackendRule> {
        let rule_path = FieldPath::parse("spec.rules").index(i);
        // Envoy Gateway makes one cluster of the rule, whose localities Envoy balances and
        // falls back between, unless address types mix (then a cluster per backend).
        let mixed = targets.iter().any(|t| t.target.facts.dns)
            && targets.iter().any(|t| !t.target.facts.dns);
        // Only a rule Envoy has to choose in gets the extproc on each attempt: one backend
        // is processed on the router (one round trip less; and Envoy 1.39 and 1.40 crash
        // with an upstream ext_proc filter on HTTP/1.1 clusters under concurrency, see
        // docs/routing.md).
        let choice = targets.len() > 1 || has_priority || rule.stream_idle_timeout.is_some();
        let by_rule = self.options.envoy_patch_policies && !mixed && choice;
        if by_rule
            && let Some(t) = targets
                .iter()
                .find(|t| !t.target.facts.tls && !t.target.facts.http_protocol)
        {
            self.diags.push(self.input.warning_at(
                object,
                rule_path.key("backendRefs").index(t.index),
                "this rule sends each attempt through the extproc in its Envoy cluster, and this backend speaks HTTP/1.1 without TLS: Envoy 1.39 and 1.40 crash with that filter on HTTP/1.1 clusters under concurrency (docs/routing.md); give the Backend `appProtocols: [gateway.envoyproxy.io/h2c]` if the server speaks HTTP/2, or build with --no-envoy-patch-policy".to_string(),
            ));
        }
        let http_rules = cut_rules(i, rule, targets, by_rule);
        if !by_rule && (mixed || !self.options.envoy_patch_policies) {
            self.warn_no_rule_cluster(object, &rule_path, rule, mixed, has_priority);
        }
        http_rules
    }

    /// Warns about what rule `rule_path` loses without a cluster of its own (because its
    /// Backends mix address types, or EnvoyPatchPolicies are off): priority fallback and
    /// `streamIdleTimeout`.
    fn warn_no_rule_cluster(
        &mut self,
        object: &Object,
        rule_path: &FieldPath,
        rule: &AiGatewayRouteRule,
        mixed: bool,
        has_priority: bool,
    ) {
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
        let name = schema.as_str();
        let (warning, message) = match schema {
            ApiSchema::GCPVertexAI | ApiSchema::GCPAnthropic
                if !matches!(credential, Some(Credential::Gcp { .. })) =>
            {
                (
                    false,
                    format!(
                        "schema {name} needs a BackendSecurityPolicy of type GCPCredentials targeting this AIServiceBackend: Vertex AI paths name the project and region it sets"
                    ),
                )
            }
            ApiSchema::AWSBedrock | ApiSchema::AWSAnthropic
                if !matches!(credential, Some(Credential::Aws { .. })) =>
            {
                (
                    true,
                    format!(
                        "schema {name} without a BackendSecurityPolicy of type AWSCredentials: requests are sent unsigned, which AWS refuses"
                    ),
                )
            }
            _ => return,
        };
        let diag = if warning {
            self.input.warning_at(object, field, message)
        } else {
            self.input.error_at(object, field, message)
        };
        self.diags.push(diag);
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
}

/// The backendRefs of one rule, planned.
#[derive(Default)]
struct RuleBackends {
    /// The filter-config backends.
    backends: Vec<fc::Backend>,
    /// The rule's weighted backends, in the filter config.
    weighted: Vec<fc::WeightedBackend>,
    /// Those that take traffic (weight > 0).
    targets: Vec<WeightedTarget>,
    /// A backendRef has a priority > 0.
    has_priority: bool,
}

/// A backendRef that takes traffic, as a target of an HTTPRoute rule.
struct WeightedTarget {
    /// Index of the backendRef in its rule.
    index: usize,
    /// Its filter-config backend.
    id: String,
    target: RuleTarget,
    /// [`upstream_prefix`] of its schema.
    upstream_prefix: Option<String>,
}

/// The matches of a rule in the filter config (header names lower-cased).
fn rule_matches(rule: &AiGatewayRouteRule) -> Vec<fc::RuleMatch> {
    rule.matches
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
        .collect()
}

/// The HTTPRoute rules of rule `i`: `rule-<i>` with every target when selected by rule, else
/// `rule-<i>-ref-<j>` per target.
fn cut_rules(
    i: usize,
    rule: &AiGatewayRouteRule,
    targets: Vec<WeightedTarget>,
    by_rule: bool,
) -> Vec<BackendRule> {
    let mut http_rules = Vec::new();
    if by_rule {
        let mut rest = targets.into_iter();
        if let Some(first) = rest.next() {
            let mut http = http_rule(
                format!("rule-{i}"),
                Selection::Rule,
                i,
                first.id,
                first.target,
                rule,
                None,
            );
            for t in rest {
                http.backend_ids.push(t.id);
                http.targets.push(t.target);
            }
            http_rules.push(http);
        }
    } else {
        for t in targets {
            http_rules.push(http_rule(
                format!("rule-{}-ref-{}", i, t.index),
                Selection::Backend,
                i,
                t.id,
                t.target,
                rule,
                t.upstream_prefix,
            ));
        }
    }
    http_rules
}
