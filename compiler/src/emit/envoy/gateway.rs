//! One Gateway of the standalone target: [`Emitter::instance`] takes the objects the Kubernetes
//! target emits for it and runs the steps of the other modules over them, in order: rate limits
//! of aigw's own BackendTrafficPolicy, the EnvoyExtensionPolicy's filters, IR routes per Gateway
//! listener, Envoy listeners, aigw's own EnvoyPatchPolicies, and the extproc's files.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::ext_proc::Extensions;
use super::policy::TrafficLimits;
use super::route::{Action, IrRoute, compute_hosts};
use super::{EXTPROC_SOCKET, Emitter, GATEWAYS_DIR, gateway_dir_name, items, name_of, of_kind};
use crate::diag::{Diagnostic, FieldPath};
use crate::plan::Instance;
use crate::validate::{Body, GatewayView, Object, Validated};

/// The Gateway being translated, as every step of [`Emitter::instance`] needs it.
pub(super) struct GatewayContext<'i, 'a> {
    pub(super) instance: &'i Instance,
    /// The Gateway object of the input.
    pub(super) object: &'a Object,
    /// Its listeners.
    pub(super) view: &'a GatewayView,
    /// `<namespace>/<name>`.
    pub(super) name: String,
    /// Its folder (`gateways/<ns>-<name>`).
    pub(super) dir: String,
    /// The socket its extproc listens on.
    pub(super) socket: String,
}

impl GatewayContext<'_, '_> {
    /// An error about the Gateway as a whole.
    pub(super) fn fail(&self, message: String) -> Diagnostic {
        Diagnostic::error(format!("Gateway {}: {message}", self.name))
    }

    /// `<gateway>/<listener>`, as Envoy Gateway names a listener.
    pub(super) fn listener_name(&self, listener: &str) -> String {
        format!("{}/{listener}", self.name)
    }
}

/// The generated HTTPRoutes of a Gateway, by name, and the HTTPRouteFilters they use.
struct GeneratedRoutes<'o> {
    routes: Vec<&'o Value>,
    filters: BTreeMap<String, &'o Value>,
}

impl<'o> GeneratedRoutes<'o> {
    fn of(objects: &'o [Value]) -> Self {
        let mut routes: Vec<&Value> = of_kind(objects, "HTTPRoute").collect();
        routes.sort_by_key(|o| name_of(o));
        let filters = of_kind(objects, "HTTPRouteFilter")
            .map(|o| (name_of(o), o))
            .collect();
        GeneratedRoutes { routes, filters }
    }
}

impl<'a> Emitter<'a> {
    pub(super) fn instance(&mut self, instance: &Instance) {
        let gateway_name = format!("{}/{}", instance.gateway.namespace, instance.gateway.name);
        let objects = match crate::emit::routing::emit(instance) {
            Ok(objects) => objects,
            Err(mut errors) => {
                self.errors.append(&mut errors);
                return;
            }
        };
        let Some(gateway) = self.gateway_context(instance, gateway_name) else {
            return;
        };
        let generated = GeneratedRoutes::of(&objects);
        // aigw's own BackendTrafficPolicy (from QuotaPolicies) targets generated HTTPRoutes.
        let generated_limits = self.generated_limits(&gateway, &objects);
        // The extension policy, translated filter by filter.
        let extensions = self.extension_filters(&gateway, &objects, &generated.routes);
        let per_listener =
            self.listener_routes(&gateway, &generated, &extensions, &generated_limits);
        let first_listener = self.listeners.len();
        let Some(left_out) = self.envoy_listeners(&gateway, per_listener, &extensions.filters)
        else {
            return;
        };
        self.patch_policies(&gateway, &left_out, first_listener);
        self.extproc_files(gateway);
    }

    /// The Gateway of `instance` with its folder; `None` (the error recorded) when it is not in
    /// the input or its folder is another Gateway's.
    fn gateway_context<'i>(
        &mut self,
        instance: &'i Instance,
        name: String,
    ) -> Option<GatewayContext<'i, 'a>> {
        let input: &'a Validated = self.input;
        let fail = |message: String| Diagnostic::error(format!("Gateway {name}: {message}"));
        let Some(object) = self
            .index
            .get(&instance.gateway)
            .map(|&i| &input.objects[i])
        else {
            self.errors.push(fail(
                "internal error: the Gateway is not in the input".into(),
            ));
            return None;
        };
        let Body::Gateway(view) = &object.body else {
            return None;
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
            return None;
        }
        let socket = format!("{dir}/{EXTPROC_SOCKET}");
        Some(GatewayContext {
            instance,
            object,
            view,
            name,
            dir,
            socket,
        })
    }

    /// IR routes per Gateway listener: every rule of every generated HTTPRoute, once per
    /// listener it attaches to and hostname it serves there, with its ext_proc filters and
    /// rate limits.
    fn listener_routes(
        &mut self,
        gateway: &GatewayContext,
        generated: &GeneratedRoutes,
        extensions: &Extensions,
        generated_limits: &BTreeMap<String, TrafficLimits>,
    ) -> Vec<Vec<IrRoute>> {
        let view = gateway.view;
        let mut per_listener: Vec<Vec<IrRoute>> = vec![Vec::new(); view.listeners.len()];
        for route in &generated.routes {
            let route_name = name_of(route);
            let hostnames: Vec<String> = items(route, "/spec/hostnames")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            let translated = match self.translate_rules(gateway.instance, route, &generated.filters)
            {
                Ok(rules) => rules,
                Err(err) => {
                    self.errors.push(
                        gateway.fail(format!("internal error: HTTPRoute {route_name}: {err}")),
                    );
                    continue;
                }
            };
            let procs: Vec<String> = if extensions.targets.contains(&route_name) {
                extensions.names.clone()
            } else {
                Vec::new()
            };
            self.check_merged_rate_limits(gateway, &route_name);
            let limits = generated_limits
                .get(&route_name)
                .or_else(|| {
                    let instance = gateway.instance;
                    self.rate_limits_of(&instance.namespace, &route_name, &instance.gateway.name)
                })
                .cloned()
                .unwrap_or_default();
            let rules = RouteRules {
                translated: &translated,
                procs: &procs,
                // The same for every Envoy route of the HTTPRoute: built once.
                local_config: limits
                    .local
                    .as_ref()
                    .map(crate::emit::ratelimit::local_route_config),
                limits: &limits,
            };
            for listener in self.attached_listeners(&gateway.instance.gateway, view, route) {
                let hosts = compute_hosts(&hostnames, &view.listeners[listener], &view.listeners);
                let listener_name = gateway.listener_name(&view.listeners[listener].name);
                for host in hosts {
                    let routes = self.host_routes(&listener_name, &host, &rules);
                    per_listener[listener].extend(routes);
                }
            }
        }
        per_listener
    }

    /// The IR routes of one HTTPRoute's rules on one hostname of a listener, rate limited as its
    /// policies say.
    fn host_routes(&mut self, listener_name: &str, host: &str, rules: &RouteRules) -> Vec<IrRoute> {
        let limits = rules.limits;
        let mut out = Vec::new();
        for rule in rules.translated {
            let mut ir = rule.clone();
            ir.name = format!("{}/{}", ir.name, host.replace('.', "_"));
            ir.hostname = host.to_string();
            ir.ext_procs = rules.procs.to_vec();
            // As Envoy Gateway: only routes that forward are limited.
            if !limits.global.is_empty() && matches!(ir.action, Action::Forward { .. }) {
                ir.rate_limits = crate::emit::ratelimit::route_filter_configs(
                    listener_name,
                    &ir.name,
                    &limits.global,
                );
                self.rate_limit_service
                    .add(listener_name, &ir.name, &limits.global);
            }
            if let Some(local) = &rules.local_config
                && matches!(ir.action, Action::Forward { .. })
            {
                ir.rate_limits.insert(
                    crate::emit::ratelimit::LOCAL_FILTER.to_string(),
                    local.clone(),
                );
            }
            out.push(ir);
        }
        out
    }

    /// An error when the user's BackendTrafficPolicy on HTTPRoute `route_name` sets `mergeType`
    /// while the Gateway's policy has rate limits too: the standalone target does not merge
    /// them.
    fn check_merged_rate_limits(&mut self, gateway: &GatewayContext, route_name: &str) {
        let input: &'a Validated = self.input;
        let instance = gateway.instance;
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
                .get(&(instance.namespace.clone(), route_name.to_string()))
                .and_then(|id| self.index.get(id))
        {
            self.errors.push(input.error_at(
                &input.objects[*policy],
                FieldPath::parse("spec.mergeType"),
                format!(
                    "its rate limits would be merged with those of the BackendTrafficPolicy on Gateway {}, which the standalone target does not do; put the rules in one policy",
                    gateway.name
                ),
            ));
        }
    }
}

/// What every Envoy route of one HTTPRoute shares.
struct RouteRules<'r> {
    /// Its rules as IR routes, without the host part.
    translated: &'r [IrRoute],
    /// The ext_proc filters its routes enable.
    procs: &'r [String],
    /// Its rate limits.
    limits: &'r TrafficLimits,
    /// The local rate limit's per-route config.
    local_config: Option<Value>,
}

/// The metadata keys the extproc writes, which the access log records.
pub(super) fn metadata_keys(instance: &Instance) -> BTreeSet<String> {
    instance
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
        .collect()
}
