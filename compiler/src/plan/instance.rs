//! One extproc instance: [`Planner::instance`] plans the routes attached to a Gateway one by one
//! (filter config, HTTPRoutes, quotas) and gathers what the Gateway gets once: ReferenceGrants, the
//! rate-limit policy, listener settings and the workload.

use std::collections::{BTreeMap, BTreeSet};

use aigw_filterconfig::{self as fc, FilterConfig};

use super::route::cost;
use super::{
    ExtensionPolicyPlan, HttpRoutePlan, Instance, MountedSecret, Planner, RateLimitPlan,
    RateLimitRule, ReferenceGrantPlan, Selection, bounded_name, dns_label,
};
use crate::diag::{Diagnostic, FieldPath};
use crate::model::GatewayConfig;
use crate::validate::{Body, Object, ObjectId};

/// What the routes attached to a Gateway add up to.
#[derive(Default)]
struct AttachedRoutes {
    /// The generated HTTPRoutes (a catch-all shared by several routes once).
    routes: Vec<HttpRoutePlan>,
    /// The Secrets the extproc mounts.
    secrets: BTreeSet<MountedSecret>,
    /// Backends in other namespaces, by namespace: what the ReferenceGrants let through.
    grants: BTreeMap<String, BTreeSet<String>>,
    /// Rate-limit rules from QuotaPolicies.
    quota_rules: Vec<RateLimitRule>,
    /// The HTTPRoutes the rate-limit rules apply to.
    quota_targets: BTreeSet<String>,
    /// The QuotaPolicies the rules come from.
    quota_sources: BTreeSet<ObjectId>,
    /// Names of the generated HTTPRoutes.
    route_names: BTreeSet<String>,
}

impl Planner<'_> {
    pub(super) fn instance(&mut self, attached: &crate::resolve::AttachedGateway) -> Instance {
        let gateway = self.object(attached.gateway).id.clone();
        let namespace = gateway.namespace.clone();
        let name = bounded_name(&format!("aigw-extproc-{}", dns_label(&gateway.name)), 63);
        let config_object = attached.config.map(|i| (i, self.object(i).clone()));
        let gateway_config = config_object.as_ref().and_then(|(_, o)| match &o.body {
            Body::GatewayConfig(c) => Some((**c).clone()),
            _ => None,
        });

        let mut config = FilterConfig::new(self.options.max_request_body_bytes);
        let mut planned = AttachedRoutes::default();
        for &route_index in &attached.routes {
            self.attach_route(
                attached.gateway,
                route_index,
                &gateway,
                &mut config,
                &mut planned,
            );
        }
        config.backends.sort_by(|a, b| a.name.cmp(&b.name));

        if let Some(gc) = &gateway_config {
            self.apply_gateway_config(&mut config, gc, config_object.as_ref().map(|(_, o)| o));
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

        let AttachedRoutes {
            routes,
            secrets,
            grants,
            quota_rules,
            quota_targets,
            quota_sources,
            route_names,
        } = planned;
        let reference_grants = reference_grants(grants, &namespace, &gateway.name);
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

    /// Plans one route attached to the Gateway (object `gateway_index`): its filter-config
    /// route and backends into `config`, its HTTPRoutes, the ReferenceGrants they need and
    /// their quotas into `out`.
    fn attach_route(
        &mut self,
        gateway_index: usize,
        route_index: usize,
        gateway: &ObjectId,
        config: &mut FilterConfig,
        out: &mut AttachedRoutes,
    ) {
        let route_object = self.object(route_index).clone();
        let Body::Route(route) = &route_object.body else {
            return;
        };
        let (fc_route, backends, rules) =
            self.route(&route_object, route, gateway, &mut out.secrets);
        config.routes.push(fc_route);
        config.backends.extend(backends);
        for target in rules.iter().flat_map(|r| &r.targets) {
            if target.target_namespace != gateway.namespace {
                out.grants
                    .entry(target.target_namespace.clone())
                    .or_default()
                    .insert(target.target.name.clone());
            }
        }
        let rule_hosts = self.listeners_serve_any_host(gateway_index, route, &route_object);
        let parts = self.http_routes(&route_object, route, gateway, rules, rule_hosts);
        // A rule Envoy balances is named by its cluster, known now that the HTTPRoutes
        // are cut.
        if let Some(fc_route) = config.routes.last_mut() {
            name_rules(fc_route, &parts);
        }
        // A catch-all shared by several routes is written once.
        let parts: Vec<HttpRoutePlan> = parts
            .into_iter()
            .filter(|part| out.route_names.insert(part.name.clone()))
            .collect();
        let (mut rules, targets, sources, costs) = self.quotas(&route_object, route, &parts);
        if let Some(last) = config.routes.last_mut() {
            last.costs.extend(costs);
        }
        out.quota_rules.append(&mut rules);
        out.quota_targets.extend(targets);
        out.quota_sources.extend(sources);
        out.routes.extend(parts);
    }

    /// What the GatewayConfig sets in the filter config: the global request costs. Its
    /// `forwardProxy` is an error.
    fn apply_gateway_config(
        &mut self,
        config: &mut FilterConfig,
        gc: &GatewayConfig,
        object: Option<&Object>,
    ) {
        config.global_costs = gc.spec.global_llm_request_costs.iter().map(cost).collect();
        if gc.spec.forward_proxy.is_some()
            && let Some(object) = object
        {
            self.diags.push(self.input.error_at(
                    object,
                    FieldPath::parse("spec.forwardProxy"),
                    "forwardProxy is not yet supported by aigw: upstream connections would bypass the proxy",
                ));
        }
    }
}

/// Gives the filter-config rules of a route the cluster (rules Envoy balances) and authority
/// of the HTTPRoute rules cut from them.
fn name_rules(fc_route: &mut fc::Route, parts: &[HttpRoutePlan]) {
    for part in parts {
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

/// The ReferenceGrants of a Gateway in `namespace`: one per namespace of `grants`, with at
/// most 16 Backends each (`aigw-<namespace>-<gateway>`, then `-2`, `-3`...).
fn reference_grants(
    grants: BTreeMap<String, BTreeSet<String>>,
    namespace: &str,
    gateway_name: &str,
) -> Vec<ReferenceGrantPlan> {
    grants
        .into_iter()
        .flat_map(|(ns, backends)| {
            let backends: Vec<String> = backends.into_iter().collect();
            let base = format!("aigw-{}-{}", namespace, dns_label(gateway_name));
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
        .collect()
}
