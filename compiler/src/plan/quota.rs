//! Quotas: the QuotaPolicies of the backends a route uses as rate-limit rules (on the HTTPRoute
//! rules that reach them) and filter-config costs, with the checks Envoy Gateway's rate limits
//! impose on them.

use std::collections::{BTreeMap, BTreeSet};

use aigw_filterconfig::{self as fc, LlmRequestCost};
use serde_json::Value;

use super::{HttpRoutePlan, Planner, QUOTA_COST_KEY, RateLimitRule, Selection};
use crate::diag::FieldPath;
use crate::model::{self, AiGatewayRoute, QuotaDuration, QuotaPolicy};
use crate::resolve::Key;
use crate::validate::{Body, Object, ObjectId};

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

impl Planner<'_> {
    /// Rate-limit rules, targeted HTTPRoutes, sources and filter-config costs from the
    /// QuotaPolicies of the backends this route uses.
    pub(super) fn quotas(
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
        // Rules of several backends with a quota on one: the limit counts on the rule.
        let mut shared_rules = BTreeSet::new();
        for ((key, model), ids) in backends_by_model(object, route) {
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
                    let (selector_header, selectors) =
                        rule_selectors(parts, &ids, &mut targets, &mut shared_rules);
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
                self.check_quota_limits(&policy_object, policy);
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

    /// The QuotaPolicy's limits that Envoy Gateway cannot enforce (errors) and what it enforces
    /// otherwise than upstream (warnings).
    fn check_quota_limits(&mut self, policy_object: &Object, policy: &QuotaPolicy) {
        if policy.spec.service_quota.is_some() {
            self.diags.push(self.input.warning_at(
                policy_object,
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
                        policy_object,
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
                    policy_object,
                    field.clone().key("defaultBucket").key("limit"),
                    format!("a quota limit of {limit} cannot be enforced by Envoy Gateway, whose rate limits go from 1 to 4294967295"),
                ));
            }
            if default.is_some() && !quota.quota.bucket_rules.is_empty() {
                self.diags.push(self.input.warning_at(
                    policy_object,
                    field.key("defaultBucket"),
                    "each request is charged to the bucket rules that select it, or to the default bucket when none does, and is refused once one of them is spent (Envoy Gateway's rate limits); upstream charges the default bucket too and refuses only when every bucket of the request is spent",
                ));
            }
        }
    }

    /// A per-model quota counts only requests whose backendRef overrides the model to its
    /// `modelName`; one that no route produces would never count anything.
    pub(super) fn check_quota_models(&mut self) {
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

/// The ids of the backend references of `route` that override the model, by service backend
/// and model: the references a per-model quota counts. References of weight 0 take no traffic.
fn backends_by_model(
    object: &Object,
    route: &AiGatewayRoute,
) -> BTreeMap<(Key, String), Vec<String>> {
    let mut by_backend_model: BTreeMap<(Key, String), Vec<String>> = BTreeMap::new();
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
    by_backend_model
}

/// The header and values that select the HTTPRoute rules serving the backend references
/// `ids`; the HTTPRoutes holding them join `targets`, and the AIGatewayRoute rules where they
/// share a rule cluster with other backends join `shared_rules`.
fn rule_selectors(
    parts: &[HttpRoutePlan],
    ids: &[String],
    targets: &mut Vec<String>,
    shared_rules: &mut BTreeSet<usize>,
) -> (&'static str, Vec<String>) {
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
    (selector_header, selectors)
}
