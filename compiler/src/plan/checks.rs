//! Checks across the instances of a plan: generated names that collide with each other or with
//! input objects, and user BackendTrafficPolicies that the generated rate-limit policy would
//! override or be overridden by.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Instance, Planner};
use crate::diag::{Diagnostic, FieldPath};
use crate::model::{self, EG_GROUP};

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

impl Planner<'_> {
    /// Every object the plan generates must have a name of its own: not shared by two
    /// generated objects, nor by an input object (which would be passed through next to it).
    pub(super) fn check_collisions(&mut self, instances: &[Instance], merged: &BTreeSet<usize>) {
        let mut generated: BTreeMap<(&str, &str, String, String), String> = BTreeMap::new();
        for instance in instances {
            let ns = instance.namespace.clone();
            let gateway = instance.gateway.to_string();
            // The instance's own objects, in its namespace, generated for its Gateway.
            let pdb = (instance.workload.replicas > 1).then_some(&instance.name);
            let patch = instance.local_replies.as_ref().map(|l| &l.name);
            let rate_limit = instance.rate_limit.as_ref().map(|r| &r.name);
            let own = [
                ("", "ServiceAccount", Some(&instance.name)),
                ("", "ConfigMap", Some(&instance.name)),
                ("", "Service", Some(&instance.name)),
                ("apps", "Deployment", Some(&instance.name)),
                ("policy", "PodDisruptionBudget", pdb),
                (
                    EG_GROUP,
                    "EnvoyExtensionPolicy",
                    Some(&instance.extension_policy.name),
                ),
                (EG_GROUP, "EnvoyPatchPolicy", patch),
                (EG_GROUP, "BackendTrafficPolicy", rate_limit),
            ];
            let mut names: Vec<(&str, &str, String, String, String)> = own
                .into_iter()
                .filter_map(|(group, kind, name)| {
                    name.map(|name| (group, kind, ns.clone(), name.clone(), gateway.clone()))
                })
                .collect();
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

    /// Envoy Gateway honours one BackendTrafficPolicy per route: a user policy on a route that
    /// also gets the generated rate-limit policy would silently lose to one of them.
    pub(super) fn check_traffic_policies(&mut self, instances: &[Instance]) {
        for (object, doc) in self.input.objects_of(EG_GROUP, "BackendTrafficPolicy") {
            let targets = target_names(doc, "HTTPRoute");
            let gateways = target_names(doc, "Gateway");
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
}
