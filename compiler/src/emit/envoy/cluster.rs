//! Clusters: one per Envoy Gateway Backend (endpoints, DNS, HTTP protocol, TLS from its
//! BackendTLSPolicy and the CA bundle that goes with it), one per HTTPRoute rule whose backends Envoy
//! balances, and the gRPC clusters of the Unix sockets of this folder.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::files::object_data;
use super::{
    CLUSTER_BUFFER_LIMIT, CONNECT_TIMEOUT, DNS_REFRESH_RATE, Emitter, H2C, HTTP_PROTOCOL_OPTIONS,
    SYSTEM_CA_BUNDLE, items, socket_address, text, typed,
};
use crate::diag::{Diagnostic, FieldPath};
use crate::model::{EG_GROUP, GATEWAY_GROUP};
use crate::plan::Instance;
use crate::validate::{Object, Validated};
use crate::write::FileEntry;

/// A gRPC service's cluster (HTTP/2) on a Unix socket of this folder.
pub(super) fn grpc_socket_cluster(name: &str, socket: &str) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "per_connection_buffer_limit_bytes": CLUSTER_BUFFER_LIMIT,
        "typed_extension_protocol_options": {HTTP_PROTOCOL_OPTIONS: typed(HTTP_PROTOCOL_OPTIONS, json!({
            "explicit_http_config": {"http2_protocol_options": {}},
        }))},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket}}}}]}],
        },
    })
}

/// The settings Envoy Gateway gives every backend cluster, with `endpoints` (its
/// LocalityLbEndpoints); `dns`: strict DNS, through the cluster extension that replaces the
/// deprecated cluster-level DNS fields, else static addresses.
fn upstream_cluster(name: &str, endpoints: Value, dns: bool) -> Value {
    let mut value = json!({
        "name": name,
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": "LEAST_REQUEST",
        "per_connection_buffer_limit_bytes": CLUSTER_BUFFER_LIMIT,
        "ignore_health_on_host_removal": true,
        "circuit_breakers": {"thresholds": [{"max_retries": 1024}]},
        "load_assignment": {"cluster_name": name, "endpoints": endpoints},
    });
    if dns {
        value["cluster_type"] = json!({
            "name": "envoy.cluster.dns",
            "typed_config": typed("envoy.extensions.clusters.dns.v3.DnsCluster", json!({
                "dns_lookup_family": "V4_PREFERRED",
                "dns_refresh_rate": DNS_REFRESH_RATE,
                "respect_dns_ttl": true,
            })),
        });
    } else {
        value["type"] = json!("STATIC");
    }
    value
}

impl<'a> Emitter<'a> {
    /// The cluster of an HTTPRoute backendRef (an Envoy Gateway Backend); builds it once.
    pub(super) fn backend_cluster(
        &mut self,
        instance: &Instance,
        backend_ref: &Value,
    ) -> Result<String, String> {
        let group = text(backend_ref, "/group").unwrap_or_default();
        let kind = text(backend_ref, "/kind").unwrap_or("Service");
        let name = text(backend_ref, "/name").unwrap_or_default();
        let namespace = text(backend_ref, "/namespace").unwrap_or(&instance.namespace);
        let cluster = format!("backend/{namespace}/{name}");
        if self.clusters.contains_key(&cluster) {
            return Ok(cluster);
        }
        let Some(object) = (group == EG_GROUP && kind == "Backend")
            .then(|| self.find(EG_GROUP, "Backend", namespace, name))
            .flatten()
        else {
            // Reported once per target: Kubernetes Services are not reachable from a laptop.
            self.clusters.insert(cluster.clone(), Value::Null);
            self.errors.push(Diagnostic::error(format!(
                "Gateway {}/{}: an AIServiceBackend targets {kind} {namespace}/{name}, which the standalone Envoy cannot reach; point the AIServiceBackend at an Envoy Gateway Backend (gateway.envoyproxy.io/Backend) with fqdn, ip or unix endpoints",
                instance.gateway.namespace, instance.gateway.name
            )));
            return Ok(cluster);
        };
        let value = self.build_backend_cluster(&cluster, object);
        self.clusters.insert(cluster.clone(), value);
        Ok(cluster)
    }

    fn build_backend_cluster(&mut self, cluster: &str, object: &'a Object) -> Value {
        let doc = self.document(object).clone();
        let mut endpoints = Vec::new();
        let mut kinds = BTreeSet::new();
        for (i, endpoint) in items(&doc, "/spec/endpoints").iter().enumerate() {
            let port = |p: &str| {
                endpoint
                    .pointer(p)
                    .and_then(Value::as_u64)
                    .and_then(|p| u32::try_from(p).ok())
            };
            let address = if let Some(host) = text(endpoint, "/fqdn/hostname") {
                kinds.insert("fqdn");
                port("/fqdn/port").map(|p| socket_address(host, p))
            } else if let Some(ip) = text(endpoint, "/ip/address") {
                kinds.insert("ip");
                port("/ip/port").map(|p| socket_address(ip, p))
            } else if let Some(path) = text(endpoint, "/unix/path") {
                kinds.insert("unix");
                Some(json!({"pipe": {"path": path}}))
            } else {
                None
            };
            match address {
                Some(address) => endpoints.push(json!({"endpoint": {"address": address}})),
                None => self.errors.push(self.input.error_at(
                    object,
                    FieldPath::parse("spec.endpoints").index(i),
                    "the standalone target needs an fqdn, ip or unix endpoint with its port",
                )),
            }
        }
        if endpoints.is_empty() {
            self.errors.push(self.input.error_at(
                object,
                FieldPath::parse("spec.endpoints"),
                "the standalone target needs at least one endpoint",
            ));
        }
        if kinds.len() > 1 {
            self.errors.push(self.input.error_at(
                object,
                FieldPath::parse("spec.endpoints"),
                "endpoints mix address types (fqdn, ip, unix), which Envoy Gateway does not allow in one Backend",
            ));
        }
        for field in ["tls", "fallback"] {
            if doc.pointer(&format!("/spec/{field}")).is_some() {
                self.errors.push(self.input.error_at(
                    object,
                    FieldPath::parse("spec").key(field),
                    format!(
                        "spec.{field} is not supported by the standalone target yet; use a BackendTLSPolicy for TLS"
                    ),
                ));
            }
        }
        if text(&doc, "/spec/type").is_some_and(|t| t != "Endpoints") {
            self.errors.push(self.input.error_at(
                object,
                FieldPath::parse("spec.type"),
                "only Endpoints Backends are supported by the standalone target",
            ));
        }
        let mut value = upstream_cluster(
            cluster,
            json!([{"lb_endpoints": endpoints}]),
            kinds.contains("fqdn"),
        );
        let h2c = items(&doc, "/spec/appProtocols")
            .iter()
            .any(|p| p.as_str() == Some(H2C));
        let tls = self.tls_socket(object);
        let protocol = match (h2c, tls.is_some()) {
            (true, _) => Some(json!({"explicit_http_config": {"http2_protocol_options": {}}})),
            (false, true) => Some(
                json!({"auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}),
            ),
            (false, false) => None,
        };
        if let Some(protocol) = protocol {
            value["typed_extension_protocol_options"] =
                json!({HTTP_PROTOCOL_OPTIONS: typed(HTTP_PROTOCOL_OPTIONS, protocol)});
        }
        if let Some(tls) = tls {
            value["transport_socket"] = tls;
        }
        value
    }

    /// The cluster of an HTTPRoute rule whose backends Envoy balances, as Envoy Gateway builds
    /// it (`internal/xds/translator/cluster.go`, `buildXdsClusterLoadAssignment` with
    /// `buildWeightedLocalities`): one locality per backendRef, `region`
    /// `<cluster>/backend/<k>`, weighted by the backendRef's weight, with locality-weighted
    /// balancing; the endpoints and settings of each Backend as [`Self::backend_cluster`] makes
    /// them. Backends with different TLS settings keep theirs through transport socket matches
    /// on endpoint metadata.
    pub(super) fn rule_cluster(
        &mut self,
        instance: &Instance,
        cluster: &str,
        refs: &[Value],
    ) -> Result<String, String> {
        // (backendRef index, the Backend's own cluster, weight).
        let mut parts = Vec::new();
        for (k, backend_ref) in refs.iter().enumerate() {
            let name = self.backend_cluster(instance, backend_ref)?;
            // A Backend found wanting is reported already.
            if let Some(backend) = self.clusters.get(&name).filter(|v| !v.is_null()) {
                let weight = backend_ref
                    .get("weight")
                    .and_then(Value::as_u64)
                    .unwrap_or(1);
                parts.push((k, backend.clone(), weight));
            }
        }
        let kinds: BTreeSet<bool> = parts
            .iter()
            .map(|(_, b, _)| b.get("cluster_type").is_some())
            .collect();
        if kinds.len() > 1 {
            return Err(format!(
                "cluster {cluster} mixes Backends with DNS names and addresses"
            ));
        }
        let sockets: Vec<(usize, Option<&Value>)> = parts
            .iter()
            .map(|(k, b, _)| (*k, b.get("transport_socket")))
            .collect();
        let distinct: BTreeSet<String> = sockets
            .iter()
            .map(|(_, s)| s.map(Value::to_string).unwrap_or_default())
            .collect();
        // Backends with different TLS settings keep theirs through socket matches.
        let by_match = distinct.len() > 1;
        let localities: Vec<Value> = parts
            .iter()
            .map(|(k, backend, weight)| {
                let mut lb_endpoints = backend
                    .pointer("/load_assignment/endpoints/0/lb_endpoints")
                    .cloned()
                    .unwrap_or(json!([]));
                if by_match && let Some(list) = lb_endpoints.as_array_mut() {
                    for endpoint in list {
                        endpoint["metadata"] = json!({"filter_metadata": {"envoy.transport_socket_match": {"aigw.backend": k.to_string()}}});
                    }
                }
                json!({
                    "locality": {"region": format!("{cluster}/backend/{k}")},
                    "lb_endpoints": lb_endpoints,
                    "load_balancing_weight": weight,
                })
            })
            .collect();
        let mut value = upstream_cluster(cluster, json!(localities), kinds.contains(&true));
        value["common_lb_config"] = json!({"locality_weighted_lb_config": {}});
        // As Envoy Gateway: ALPN when every backend has TLS, HTTP/2 when one speaks it.
        let h2 = parts.iter().find_map(|(_, b, _)| {
            b.pointer(&format!(
                "/typed_extension_protocol_options/{HTTP_PROTOCOL_OPTIONS}"
            ))
            .filter(|p| p.get("explicit_http_config").is_some())
        });
        let all_tls = !sockets.is_empty() && sockets.iter().all(|(_, s)| s.is_some());
        let protocol = match (h2, all_tls) {
            (Some(h2), _) => Some(h2.clone()),
            (None, true) => Some(typed(
                HTTP_PROTOCOL_OPTIONS,
                json!({"auto_config": {"http_protocol_options": {}, "http2_protocol_options": {}}}),
            )),
            (None, false) => None,
        };
        if let Some(protocol) = protocol {
            value["typed_extension_protocol_options"] = json!({HTTP_PROTOCOL_OPTIONS: protocol});
        }
        // One socket for all; with matches, the default negotiates ALPN too when every
        // backend has TLS.
        if (!by_match || all_tls)
            && let Some((_, Some(socket))) = sockets.first()
        {
            value["transport_socket"] = (*socket).clone();
        }
        if by_match {
            let matches: Vec<Value> = sockets
                .iter()
                .filter_map(|(k, socket)| {
                    Some(json!({
                        "name": format!("backend/{k}"),
                        "match": {"aigw.backend": k.to_string()},
                        "transport_socket": (*socket)?,
                    }))
                })
                .collect();
            value["transport_socket_matches"] = json!(matches);
        }
        self.clusters.insert(cluster.to_string(), value);
        Ok(cluster.to_string())
    }

    /// The TLS transport socket from the BackendTLSPolicy targeting `backend`, if any.
    fn tls_socket(&mut self, backend: &Object) -> Option<Value> {
        let input: &'a Validated = self.input;
        let policies: Vec<&'a Object> = input
            .objects
            .iter()
            .filter(|o| {
                o.id.group == GATEWAY_GROUP
                    && o.id.kind == "BackendTLSPolicy"
                    && o.id.namespace == backend.id.namespace
            })
            .filter(|o| {
                items(&input.document(o).value, "/spec/targetRefs")
                    .iter()
                    .any(|t| {
                        text(t, "/group") == Some(EG_GROUP)
                            && text(t, "/kind") == Some("Backend")
                            && text(t, "/name") == Some(backend.id.name.as_str())
                    })
            })
            .collect();
        let policy = *policies.first()?;
        if policies.len() > 1 {
            self.errors.push(self.input.error_at(
                policies[1],
                FieldPath::parse("spec.targetRefs"),
                format!(
                    "{} also targets Backend {}/{}; Envoy Gateway applies only one BackendTLSPolicy per Backend",
                    policy.id, backend.id.namespace, backend.id.name
                ),
            ));
        }
        let doc = self.document(policy).clone();
        let hostname = text(&doc, "/spec/validation/hostname").unwrap_or_default();
        let trusted_ca = if text(&doc, "/spec/validation/wellKnownCACertificates") == Some("System")
        {
            SYSTEM_CA_BUNDLE.to_string()
        } else {
            self.ca_bundle(policy, &doc)
        };
        let sans: Vec<Value> = items(&doc, "/spec/validation/subjectAltNames")
            .iter()
            .map(|san| match text(san, "/type") {
                Some("URI") => json!({"san_type": "URI", "matcher": {"exact": text(san, "/uri")}}),
                _ => json!({"san_type": "DNS", "matcher": {"exact": text(san, "/hostname")}}),
            })
            .collect();
        let sans = if sans.is_empty() {
            vec![json!({"san_type": "DNS", "matcher": {"exact": hostname}})]
        } else {
            sans
        };
        Some(json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", json!({
                "sni": hostname,
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": trusted_ca},
                    "match_typed_subject_alt_names": sans,
                }},
            })),
        }))
    }

    /// Writes the CA bundle of a BackendTLSPolicy's `caCertificateRefs`; returns its path.
    fn ca_bundle(&mut self, policy: &'a Object, doc: &Value) -> String {
        let path = format!(
            "ca/{}/{}",
            policy.id.namespace,
            crate::write::bounded_file_name(&policy.id.name, ".crt")
        );
        if self.files.iter().any(|f| f.path == path) {
            return path;
        }
        let mut bundle = String::new();
        let field = FieldPath::parse("spec.validation.caCertificateRefs");
        for (i, reference) in items(doc, "/spec/validation/caCertificateRefs")
            .iter()
            .enumerate()
        {
            let kind = text(reference, "/kind").unwrap_or_default();
            let name = text(reference, "/name").unwrap_or_default();
            let secret = match kind {
                "ConfigMap" => false,
                "Secret" => true,
                other => {
                    self.errors.push(self.input.error_at(
                        policy,
                        field.index(i),
                        format!("{other} CA references are not supported by the standalone target; use a ConfigMap"),
                    ));
                    continue;
                }
            };
            let Some(object) = self.find("", kind, &policy.id.namespace, name) else {
                self.errors.push(self.input.error_at(
                    policy,
                    field.index(i),
                    format!(
                        "{kind} {}/{name} is not in the input; the standalone target writes the CA bundle from it, so add it to the input",
                        policy.id.namespace
                    ),
                ));
                continue;
            };
            let data = match object_data(self.document(object), secret) {
                Ok(data) => data,
                Err(err) => {
                    self.errors
                        .push(self.input.error_at(object, FieldPath::parse("data"), err));
                    continue;
                }
            };
            let certificate = data
                .get("ca.crt")
                .or_else(|| (data.len() == 1).then(|| data.values().next()).flatten());
            let Some(certificate) = certificate else {
                self.errors.push(self.input.error_at(
                    object,
                    FieldPath::parse("data"),
                    "no CA certificate found: expected the key ca.crt (or a single key)",
                ));
                continue;
            };
            if !bundle.is_empty() {
                bundle.push('\n');
            }
            bundle.push_str(&String::from_utf8_lossy(certificate));
        }
        self.files.push(FileEntry::public(path.clone(), bundle));
        path
    }
}
