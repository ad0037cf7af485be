//! Gateway settings: the listeners and their xDS route configurations, the local-reply
//! EnvoyPatchPolicy, and the ClientTrafficPolicy that lets request bodies up to the extproc's limit
//! through Envoy.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{ClientTrafficPlan, ListenerPlan, LocalRepliesPlan, Planner, bounded_name};
use crate::diag::FieldPath;
use crate::model::EG_GROUP;
use crate::validate::{Body, ObjectId};

/// Parses a Kubernetes quantity (bytes) such as `32768`, `64Mi`, `1G`.
pub(super) fn quantity_bytes(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let text = value.as_str()?.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Bytes as a quantity, in MiB when exact.
pub(super) fn bytes_quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}Mi", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

/// Envoy Gateway's buffer limit when a ClientTrafficPolicy sets none.
pub const EG_DEFAULT_BUFFER_LIMIT: u64 = 32 * 1024;

impl Planner<'_> {
    /// The local-reply EnvoyPatchPolicy of a Gateway: its HTTP and HTTPS listeners, the first
    /// of each port. None when EnvoyPatchPolicies are off or no listener speaks HTTP.
    pub(super) fn listeners(&self, gateway: usize) -> Vec<ListenerPlan> {
        let object = self.object(gateway);
        let Body::Gateway(view) = &object.body else {
            return Vec::new();
        };
        let xds_name =
            |listener: &str| format!("{}/{}/{listener}", object.id.namespace, object.id.name);
        view.listeners
            .iter()
            .filter(|l| matches!(l.protocol.as_str(), "HTTP" | "HTTPS"))
            .map(|l| {
                let first = view
                    .listeners
                    .iter()
                    .find(|f| f.protocol == "HTTP" && f.port == l.port)
                    .filter(|_| l.protocol == "HTTP")
                    .unwrap_or(l);
                ListenerPlan {
                    name: l.name.clone(),
                    port: l.port,
                    route_config: xds_name(&first.name),
                }
            })
            .collect()
    }

    pub(super) fn local_replies(&self, gateway: usize, name: &str) -> Option<LocalRepliesPlan> {
        if !self.options.envoy_patch_policies {
            return None;
        }
        let object = self.object(gateway);
        let Body::Gateway(view) = &object.body else {
            return None;
        };
        let mut ports = BTreeSet::new();
        let listeners: Vec<String> = view
            .listeners
            .iter()
            .filter(|l| matches!(l.protocol.as_str(), "HTTP" | "HTTPS"))
            .filter(|l| ports.insert(l.port))
            .map(|l| format!("{}/{}/{}", object.id.namespace, object.id.name, l.name))
            .collect();
        (!listeners.is_empty()).then(|| LocalRepliesPlan {
            name: bounded_name(&format!("{name}-local-replies"), 253),
            listeners,
        })
    }

    /// Envoy buffers the whole request body for the extproc (and responses it reads), up to the
    /// listener's buffer limit: 32 KiB in Envoy Gateway unless a ClientTrafficPolicy says
    /// otherwise. Without a user policy for the Gateway, aigw generates one allowing twice the
    /// extproc's body limit (so the extproc, not Envoy, answers oversized requests); with one,
    /// it warns when that policy's limit is too small.
    pub(super) fn client_traffic(
        &mut self,
        gateway: &ObjectId,
        name: &str,
    ) -> Option<ClientTrafficPlan> {
        let wanted = self.options.max_request_body_bytes;
        let mut found = false;
        for object in &self.input.objects {
            if object.id.group != EG_GROUP
                || object.id.kind != "ClientTrafficPolicy"
                || object.id.namespace != gateway.namespace
            {
                continue;
            }
            let doc = self.input.document(object);
            let targets = doc
                .value
                .pointer("/spec/targetRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .chain(doc.value.pointer("/spec/targetRef"))
                .any(|t| {
                    t.get("kind").and_then(Value::as_str) == Some("Gateway")
                        && t.get("name").and_then(Value::as_str) == Some(&gateway.name)
                });
            if !targets {
                continue;
            }
            found = true;
            if doc
                .value
                .pointer("/spec/timeout/http/requestReceivedTimeout")
                .is_none()
            {
                self.diags.push(self.input.warning_at(
                    object,
                    FieldPath::parse("spec.timeout.http.requestReceivedTimeout"),
                    format!(
                        "unset, so a client may take forever to send a request to the AI routes, holding a connection all that time; set it (aigw's own policy uses {}s, --request-receive-timeout)",
                        self.options.request_receive_timeout_secs
                    ),
                ));
            }
            let limit = doc.value.pointer("/spec/connection/bufferLimit");
            let bytes = limit.map_or(Some(EG_DEFAULT_BUFFER_LIMIT), quantity_bytes);
            if bytes.is_none_or(|b| b < wanted) {
                self.diags.push(self.input.warning_at(
                    object,
                    FieldPath::parse("spec.connection.bufferLimit"),
                    format!(
                        "{}: Envoy rejects request and response bodies above it before aigw-extproc sees them (413 for requests, a reset for responses); set it to at least {} (the extproc's request body limit) or lower --max-request-body-bytes",
                        match (limit, bytes) {
                            (None, _) => "unset, so Envoy Gateway's default of 32 KiB applies".to_string(),
                            (Some(v), Some(b)) => format!("{v} is {b} bytes"),
                            (Some(v), None) => format!("{v} is not a quantity aigw can read"),
                        },
                        bytes_quantity(wanted)
                    ),
                ));
            }
        }
        (!found).then(|| ClientTrafficPlan {
            name: name.to_string(),
            buffer_limit: bytes_quantity(wanted.saturating_mul(2)),
            request_received_timeout: format!("{}s", self.options.request_receive_timeout_secs),
        })
    }
}
