//! Self-test of the schema validator in `support/crd_schema.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/crd_schema.rs"]
mod crd_schema;

use std::sync::OnceLock;

use crd_schema::{CrdValidator, crds_dir};
use serde_json::{Value, json};

fn validator() -> Option<&'static CrdValidator> {
    static VALIDATOR: OnceLock<Option<CrdValidator>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let Some(dir) = crds_dir() else {
                eprintln!("schema folder not found (set AIGW_CRDS_DIR); skipping");
                return None;
            };
            Some(CrdValidator::from_dir(&dir).expect("schemas load"))
        })
        .as_ref()
}

fn assert_valid(v: &CrdValidator, object: &Value) {
    if let Err(errors) = v.validate(object) {
        panic!("expected valid, got:\n{}", errors.join("\n"));
    }
}

fn assert_invalid(v: &CrdValidator, object: &Value, expected: &[&str]) -> Vec<String> {
    let errors = v.validate(object).expect_err("expected a violation");
    for want in expected {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "no error contains {want:?}:\n{}",
            errors.join("\n")
        );
    }
    errors
}

fn http_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "chat", "namespace": "default", "labels": {"app": "aigw"}},
        "spec": {
            "parentRefs": [{"name": "gw", "namespace": "default", "sectionName": "http"}],
            "rules": [{
                "matches": [{
                    "headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "gpt-4o"}],
                    "path": {"type": "PathPrefix", "value": "/v1/chat"}
                }],
                "filters": [{
                    "type": "ExtensionRef",
                    "extensionRef": {"group": "gateway.envoyproxy.io", "kind": "HTTPRouteFilter", "name": "rewrite"}
                }],
                "backendRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": "openai", "weight": 1}],
                "timeouts": {"request": "60s"}
            }]
        }
    })
}

#[test]
fn http_route_valid() {
    let Some(v) = validator() else { return };
    assert!(v.knows("gateway.networking.k8s.io/v1", "HTTPRoute"));
    assert_valid(v, &http_route());
}

#[test]
fn http_route_unknown_rule_field() {
    let Some(v) = validator() else { return };
    let mut route = http_route();
    route["spec"]["rules"][0]["retries"] = json!(3);
    let errors = assert_invalid(v, &route, &["/spec/rules/0: ", "retries"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn http_route_bad_path_type() {
    let Some(v) = validator() else { return };
    let mut route = http_route();
    route["spec"]["rules"][0]["matches"][0]["path"]["type"] = json!("Prefix");
    assert_invalid(v, &route, &["/spec/rules/0/matches/0/path/type: "]);
}

#[test]
fn http_route_unknown_metadata_field_and_bad_label() {
    let Some(v) = validator() else { return };
    let mut route = http_route();
    route["metadata"]["labels"]["n"] = json!(1);
    route["metadata"]["owner"] = json!("me");
    assert_invalid(v, &route, &["/metadata/labels/n: ", "/metadata: ", "owner"]);
}

#[test]
fn http_route_default_path_type() {
    let Some(v) = validator() else { return };
    let mut route = http_route();
    route["spec"]["rules"][0]["matches"][0]["path"] = json!({"value": "/v1"});
    assert_valid(v, &route);
    let defaulted = v.defaulted(&route).unwrap();
    assert_eq!(
        defaulted.pointer("/spec/rules/0/matches/0/path/type"),
        Some(&json!("PathPrefix"))
    );
    // Defaults apply to present list items only, and not to the input.
    assert!(route.pointer("/spec/rules/0/matches/0/path/type").is_none());
    assert_eq!(
        defaulted.pointer("/spec/rules/0/matches/0/headers/0/type"),
        Some(&json!("Exact"))
    );
}

#[test]
fn required_field_filled_by_default() {
    let Some(v) = validator() else { return };
    // `body.type` is required and defaults to Inline: only a defaulted object is valid.
    let filter = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "HTTPRouteFilter",
        "metadata": {"name": "direct"},
        "spec": {"directResponse": {"statusCode": 503, "body": {"inline": "down"}}}
    });
    assert_valid(v, &filter);
    assert_eq!(
        v.defaulted(&filter)
            .unwrap()
            .pointer("/spec/directResponse/body/type"),
        Some(&json!("Inline"))
    );
    // A null in a non-nullable field is replaced by its default too.
    let mut with_null = filter.clone();
    with_null["spec"]["directResponse"]["body"]["type"] = Value::Null;
    assert_valid(v, &with_null);
    // A null without a default is dropped.
    let mut dropped = filter.clone();
    dropped["spec"]["directResponse"]["statusCode"] = Value::Null;
    assert!(
        v.defaulted(&dropped)
            .unwrap()
            .pointer("/spec/directResponse/statusCode")
            .is_none()
    );
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "extproc", "namespace": "aigw", "labels": {"app": "extproc"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "extproc"}},
            "template": {
                "metadata": {"labels": {"app": "extproc"}, "annotations": {"checksum": "abc"}},
                "spec": {
                    "serviceAccountName": "extproc",
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "extproc",
                        "image": "ghcr.io/aigw/extproc:1.0",
                        "args": ["--port", "1063"],
                        "ports": [{"name": "grpc", "containerPort": 1063, "protocol": "TCP"}],
                        "env": [{"name": "LOG", "value": "info"}],
                        "readinessProbe": {"grpc": {"port": 1063}, "periodSeconds": 5},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 3},
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "64Mi"},
                            "limits": {"cpu": 1, "memory": "128Mi"}
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}
                        },
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/aigw", "readOnly": true},
                            {"name": "keys", "mountPath": "/etc/keys", "readOnly": true}
                        ]
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "extproc-config"}},
                        {"name": "keys", "secret": {"secretName": "extproc-keys", "defaultMode": 256}}
                    ]
                }
            }
        }
    })
}

#[test]
fn deployment_valid() {
    let Some(v) = validator() else { return };
    assert_valid(v, &deployment());
}

#[test]
fn deployment_unknown_container_field() {
    let Some(v) = validator() else { return };
    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always");
    assert_invalid(
        v,
        &d,
        &["/spec/template/spec/containers/0: ", "imagePullPolicyy"],
    );
}

#[test]
fn deployment_non_string_label() {
    let Some(v) = validator() else { return };
    let mut d = deployment();
    d["metadata"]["labels"]["replicas"] = json!(3);
    assert_invalid(v, &d, &["/metadata/labels/replicas: "]);
}

#[test]
fn deployment_bad_quantity_and_types() {
    let Some(v) = validator() else { return };
    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("lots");
    d["spec"]["replicas"] = json!("2");
    assert_invalid(
        v,
        &d,
        &[
            "/spec/template/spec/containers/0/resources/requests/cpu: ",
            "/spec/replicas: ",
        ],
    );
}

#[test]
fn deployment_nulls_are_ignored() {
    let Some(v) = validator() else { return };
    let mut d = deployment();
    d["metadata"]["creationTimestamp"] = Value::Null;
    d["spec"]["strategy"] = Value::Null;
    assert_valid(v, &d);
}

#[test]
fn core_kinds_valid() {
    let Some(v) = validator() else { return };
    let objects = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extproc", "namespace": "aigw"},
               "spec": {"type": "ClusterIP", "selector": {"app": "extproc"},
                        "ports": [{"name": "grpc", "port": 1063, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
                                  {"name": "metrics", "port": 9090, "targetPort": 9090}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"config.yaml": "a: 1\n"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}, "automountServiceAccountToken": false}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque",
               "data": {"key": "c2VjcmV0"}, "stringData": {"plain": "text"}}),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pdb"},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "extproc"}}}}),
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "hpa"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "extproc"},
                        "minReplicas": 1, "maxReplicas": 3,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
    ];
    for object in &objects {
        assert_valid(v, object);
    }
}

#[test]
fn core_kinds_invalid() {
    let Some(v) = validator() else { return };
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"key": "not base64!"}});
    assert_invalid(v, &secret, &["/data/key: "]);
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                         "spec": {"ports": [{"port": 80, "targetPort": true}]}});
    assert_invalid(v, &service, &["/spec/ports/0/targetPort: "]);
    let unnamed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
    assert_invalid(
        v,
        &unnamed,
        &["/metadata: name or generateName is required"],
    );
}

#[test]
fn envoy_extension_policy_valid() {
    let Some(v) = validator() else { return };
    let policy = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyExtensionPolicy",
        "metadata": {"name": "ai-eg", "namespace": "default"},
        "spec": {
            "targetRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "chat"},
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "embeddings"}
            ],
            "extProc": [{
                "backendRefs": [{"name": "extproc", "namespace": "aigw", "port": 1063}],
                "processingMode": {
                    "request": {"body": "Buffered"},
                    "response": {"body": "Streamed"}
                },
                "failOpen": false,
                "messageTimeout": "10s"
            }]
        }
    });
    assert_valid(v, &policy);
    let mut bad = policy.clone();
    bad["spec"]["extProc"][0]["processingMode"]["request"]["body"] = json!("Chunked");
    assert_invalid(v, &bad, &["/spec/extProc/0/processingMode/request/body: "]);
}

#[test]
fn http_route_filter_and_backend_traffic_policy_valid() {
    let Some(v) = validator() else { return };
    let filter = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "HTTPRouteFilter",
        "metadata": {"name": "host-rewrite", "namespace": "default"},
        "spec": {"urlRewrite": {"hostname": {"type": "Backend"}}}
    });
    assert_valid(v, &filter);
    let policy = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": {"name": "quota", "namespace": "default"},
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "chat"}],
            "rateLimit": {
                "type": "Global",
                "global": {"rules": [{
                    "clientSelectors": [{"headers": [{"name": "x-user-id", "type": "Distinct"}]}],
                    "limit": {"requests": 1000, "unit": "Hour"},
                    "cost": {
                        "request": {"from": "Number", "number": 0},
                        "response": {"from": "Metadata", "metadata": {"namespace": "io.envoy.ai_gateway", "key": "llm_total_token"}}
                    }
                }]}
            }
        }
    });
    assert_valid(v, &policy);
}

#[test]
fn preserved_and_empty_objects() {
    let Some(v) = validator() else { return };
    // `patch.value` preserves unknown fields; `gzip` is an empty struct, so it takes no fields.
    let proxy = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyProxy",
        "metadata": {"name": "proxy"},
        "spec": {
            "provider": {"type": "Kubernetes", "kubernetes": {"envoyDeployment": {
                "patch": {"type": "StrategicMerge", "value": {"spec": {"anything": [1, {"goes": true}]}}},
                "container": {"resources": {"requests": {"cpu": "100m", "memory": 67108864}}}
            }}},
            "telemetry": {"metrics": {"prometheus": {"compression": {"type": "Gzip", "gzip": {}}}}}
        }
    });
    assert_valid(v, &proxy);
    let mut bad = proxy.clone();
    bad["spec"]["telemetry"]["metrics"]["prometheus"]["compression"]["gzip"] = json!({"level": 9});
    bad["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["resources"]["requests"]
        ["cpu"] = json!(0.5);
    assert_invalid(
        v,
        &bad,
        &[
            "/spec/telemetry/metrics/prometheus/compression/gzip: ",
            "'level' was unexpected",
            "/spec/provider/kubernetes/envoyDeployment/container/resources/requests/cpu: ",
        ],
    );
}

fn ai_gateway_route() -> Value {
    json!({
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIGatewayRoute",
        "metadata": {"name": "chat", "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "gw", "kind": "Gateway", "group": "gateway.networking.k8s.io"}],
            "rules": [{
                "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "gpt-4o"}]}],
                "backendRefs": [{"name": "openai", "weight": 1}]
            }],
            "llmRequestCosts": [{"metadataKey": "llm_total_token", "type": "TotalToken"}]
        }
    })
}

#[test]
fn ai_gateway_kinds() {
    let Some(v) = validator() else { return };
    assert_valid(v, &ai_gateway_route());
    let backend = json!({
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIServiceBackend",
        "metadata": {"name": "openai", "namespace": "default"},
        "spec": {
            "schema": {"name": "OpenAI", "prefix": "/v1"},
            "backendRef": {"name": "openai", "kind": "Backend", "group": "gateway.envoyproxy.io"}
        }
    });
    assert_valid(v, &backend);
    let mut bad = backend.clone();
    bad["spec"]["schema"]["name"] = json!("OpenAPI");
    assert_invalid(v, &bad, &["/spec/schema/name: "]);
}

#[test]
fn versions_and_kinds() {
    let Some(v) = validator() else { return };
    // Standard channel: BackendTLSPolicy v1alpha3 exists but is not served.
    assert!(v.knows("gateway.networking.k8s.io/v1", "BackendTLSPolicy"));
    assert!(!v.knows("gateway.networking.k8s.io/v1alpha3", "BackendTLSPolicy"));
    let policy = json!({
        "apiVersion": "gateway.networking.k8s.io/v1alpha3",
        "kind": "BackendTLSPolicy",
        "metadata": {"name": "tls"},
        "spec": {}
    });
    assert_invalid(v, &policy, &["not served", "v1"]);
    // Kinds only in the experimental channel are taken from there.
    assert!(v.knows("gateway.networking.k8s.io/v1alpha2", "TCPRoute"));
    assert!(v.knows("apps/v1", "Deployment"));
    assert!(v.knows("v1", "Service"));
    assert!(!v.knows("v1", "Deployment"));
    let unknown =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    assert_invalid(v, &unknown, &["no schema for kind Widget"]);
    let http_v1alpha1 = json!({"apiVersion": "gateway.networking.k8s.io/v1alpha1", "kind": "HTTPRoute", "metadata": {"name": "w"}});
    assert_invalid(v, &http_v1alpha1, &["no schema"]);
}

#[test]
fn every_schema_compiles() {
    let Some(v) = validator() else { return };
    let count = v
        .compile_all()
        .unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert!(count > 50, "{count}");
}
