//! User EnvoyExtensionPolicies that target generated HTTPRoutes, merged into the generated policy
//! (Envoy Gateway applies one per route).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Instance, Planner};
use crate::diag::FieldPath;
use crate::validate::Body;

impl Planner<'_> {
    pub(super) fn merge_extension_policies(
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
            let refs = doc.value.pointer("/spec/targetRefs");
            let refs: &[Value] = refs.and_then(Value::as_array).map_or(&[], Vec::as_slice);
            let single = doc.value.pointer("/spec/targetRef");
            for target in refs.iter().chain(single) {
                let text = |key: &str| target.get(key).and_then(Value::as_str);
                if text("kind") != Some("HTTPRoute") {
                    continue;
                }
                let name = text("name").unwrap_or_default();
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
}
