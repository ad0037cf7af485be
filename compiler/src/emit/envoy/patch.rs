//! EnvoyPatchPolicies: aigw's own JSON patches, applied to the clusters and listeners built here as
//! Envoy Gateway applies them to its xDS resources.

use std::collections::BTreeSet;

use serde_json::Value;

use super::gateway::GatewayContext;
use super::{Emitter, items, text};

impl<'a> Emitter<'a> {
    /// aigw's own EnvoyPatchPolicies of a Gateway, applied as Envoy Gateway applies them to the
    /// listeners from `first_listener` on; patches of the listeners `left_out` are skipped.
    pub(super) fn patch_policies(
        &mut self,
        gateway: &GatewayContext,
        left_out: &BTreeSet<String>,
        first_listener: usize,
    ) {
        for policy in crate::emit::attempts::policies(gateway.instance) {
            let policy_name = text(&policy, "/metadata/name")
                .unwrap_or_default()
                .to_string();
            for patch in items(&policy, "/spec/jsonPatches") {
                let kind = text(patch, "/type").unwrap_or_default();
                if kind.ends_with(".Listener")
                    && left_out.contains(text(patch, "/name").unwrap_or_default())
                {
                    continue;
                }
                if let Err(err) = self.apply_patch(patch, first_listener) {
                    self.errors.push(gateway.fail(format!(
                        "internal error: EnvoyPatchPolicy {policy_name}: {err}"
                    )));
                }
            }
        }
    }

    /// Applies one EnvoyPatchPolicy patch to the resource it names: a cluster (or its load
    /// assignment, which Envoy Gateway sends as a ClusterLoadAssignment for EDS clusters), or
    /// the route configuration of a listener from `listeners_from` on.
    fn apply_patch(&mut self, patch: &Value, listeners_from: usize) -> Result<(), String> {
        let name = text(patch, "/name").unwrap_or_default();
        let kind = text(patch, "/type").unwrap_or_default();
        let operation = patch
            .get("operation")
            .ok_or_else(|| "a patch has no operation".to_string())?;
        let missing = || format!("{kind} {name} does not exist");
        let resource = match kind.rsplit('.').next().unwrap_or_default() {
            "Cluster" => self.clusters.get_mut(name).ok_or_else(missing)?,
            "ClusterLoadAssignment" => self
                .clusters
                .get_mut(name)
                .and_then(|c| c.get_mut("load_assignment"))
                .ok_or_else(missing)?,
            "RouteConfiguration" => {
                const ROUTE_CONFIG: &str =
                    "/default_filter_chain/filters/0/typed_config/route_config";
                let position = self.listeners[listeners_from..]
                    .iter()
                    .position(|l| {
                        l.pointer(ROUTE_CONFIG)
                            .and_then(|rc| rc.get("name"))
                            .and_then(Value::as_str)
                            == Some(name)
                    })
                    .ok_or_else(missing)?;
                self.listeners[listeners_from + position]
                    .pointer_mut(ROUTE_CONFIG)
                    .ok_or_else(missing)?
            }
            "Listener" => {
                let position = self.listeners[listeners_from..]
                    .iter()
                    .position(|l| l.get("name").and_then(Value::as_str) == Some(name))
                    .ok_or_else(missing)?;
                &mut self.listeners[listeners_from + position]
            }
            _ => {
                return Err(format!(
                    "patches of {kind} are not applied by the standalone target"
                ));
            }
        };
        crate::emit::jsonpatch::apply(resource, operation)
    }
}
