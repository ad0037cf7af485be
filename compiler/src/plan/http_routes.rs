//! The generated HTTPRoutes of an AIGatewayRoute: its rules cut into parts of at most 16, with
//! their names, parent references, labels and filters, and the catch-all HTTPRoute the routes of a
//! Gateway share when their rules get a hostname of their own.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    BackendRule, HttpRoutePlan, MAX_RULES_PER_ROUTE, Planner, Selection, bounded_name, hex,
    rule_authority, rule_cluster,
};
use crate::model::{AiGatewayRoute, ParentReference};
use crate::validate::{Body, Object, ObjectId};

impl Planner<'_> {
    pub(super) fn http_routes(
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
    pub(super) fn listeners_serve_any_host(
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
}
