//! Traffic policies: the user's BackendTrafficPolicies (retries and rate limits, by target), the
//! rate-limit service's files, and the warnings about input objects the standalone Envoy does not
//! apply.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::cluster::grpc_socket_cluster;
use super::gateway::GatewayContext;
use super::{
    Emitter, RATELIMIT_DIR, RATELIMIT_SOCKET, RateLimitSummary, duration_ms, items, name_of,
    of_kind, proto_duration, text,
};
use crate::diag::FieldPath;
use crate::model::{EG_GROUP, GATEWAY_GROUP};
use crate::plan::Plan;
use crate::validate::Validated;
use crate::write::FileEntry;

/// The rate limits of one BackendTrafficPolicy.
#[derive(Debug, Clone, Default)]
pub(super) struct TrafficLimits {
    pub(super) global: Vec<crate::emit::ratelimit::Rule>,
    pub(super) local: Option<crate::emit::ratelimit::LocalPolicy>,
    /// The policy sets `mergeType`.
    pub(super) merges: bool,
}

impl TrafficLimits {
    pub(super) fn is_empty(&self) -> bool {
        self.global.is_empty() && self.local.is_none()
    }
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

impl<'a> Emitter<'a> {
    /// The global rate-limit rules of aigw's own BackendTrafficPolicy (from QuotaPolicies)
    /// among a Gateway's generated `objects`, by the generated HTTPRoute it targets.
    pub(super) fn generated_limits(
        &mut self,
        gateway: &GatewayContext,
        objects: &[Value],
    ) -> BTreeMap<String, TrafficLimits> {
        let mut generated_limits: BTreeMap<String, TrafficLimits> = BTreeMap::new();
        for policy in of_kind(objects, "BackendTrafficPolicy") {
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
                Err(err) => self.errors.push(gateway.fail(format!(
                    "internal error: BackendTrafficPolicy {}: {err}",
                    name_of(policy)
                ))),
            }
        }
        generated_limits
    }

    /// The retry policies of the user's BackendTrafficPolicies, by target; a policy with a
    /// retry Envoy Gateway would refuse is an error here too.
    pub(super) fn collect_retries(&mut self) {
        let input: &'a Validated = self.input;
        for (object, doc) in input.objects_of(EG_GROUP, "BackendTrafficPolicy") {
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

    /// The retry policy of the routes of HTTPRoute `namespace/name`: from the user's
    /// BackendTrafficPolicy targeting the HTTPRoute, else the one targeting its Gateway.
    pub(super) fn retry_of(&self, namespace: &str, name: &str, gateway: &str) -> Option<Value> {
        self.retries
            .get(&(namespace.to_string(), "HTTPRoute", name.to_string()))
            .or_else(|| {
                self.retries
                    .get(&(namespace.to_string(), "Gateway", gateway.to_string()))
            })
            .cloned()
    }

    /// The global rate-limit rules of the user's BackendTrafficPolicies, by target; a rule
    /// Envoy Gateway would refuse is an error here too. Every policy is recorded, with or
    /// without rate limits: as in Envoy Gateway, a policy on an HTTPRoute replaces the one on
    /// its Gateway (unless it sets `mergeType`).
    pub(super) fn collect_rate_limits(&mut self) {
        let input: &'a Validated = self.input;
        for (object, doc) in input.objects_of(EG_GROUP, "BackendTrafficPolicy") {
            let mut limits = TrafficLimits {
                merges: doc.pointer("/spec/mergeType").is_some(),
                ..TrafficLimits::default()
            };
            if let Some(rate_limit) = doc.pointer("/spec/rateLimit") {
                let (ns, name) = (&object.id.namespace, &object.id.name);
                let global = crate::emit::ratelimit::global_rules(ns, name, rate_limit)
                    .map_err(|m| ("spec.rateLimit.global", m));
                let local = crate::emit::ratelimit::local_policy(ns, name, rate_limit)
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
    pub(super) fn rate_limits_of(
        &self,
        namespace: &str,
        name: &str,
        gateway: &str,
    ) -> Option<&TrafficLimits> {
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
    pub(super) fn rate_limit_files(&mut self) -> Option<RateLimitSummary> {
        if self.rate_limit_service.is_empty() {
            return None;
        }
        for (domain, document) in self.rate_limit_service.documents() {
            self.files.push(FileEntry::public(
                format!(
                    "{RATELIMIT_DIR}/{}",
                    crate::emit::ratelimit::file_name(&domain)
                ),
                crate::render::yaml(&document),
            ));
        }
        let cluster = crate::emit::ratelimit::CLUSTER.to_string();
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
    pub(super) fn not_applied(&mut self, plan: &Plan) {
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
}
