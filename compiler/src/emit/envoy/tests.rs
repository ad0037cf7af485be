#[test]
fn label_selectors_match_as_kubernetes_does() {
    let labels = json!({"app": "a", "tier": "web"});
    let matches = |selector: Value| label_selector_matches(&selector, Some(&labels));
    assert!(matches(json!({"matchLabels": {"app": "a"}})));
    assert!(!matches(json!({"matchLabels": {"app": "b"}})));
    assert!(matches(
        json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "db"]}]})
    ));
    assert!(!matches(
        json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]})
    ));
    assert!(matches(
        json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]})
    ));
    assert!(!matches(
        json!({"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]})
    ));
    assert!(!label_selector_matches(
        &json!({"matchLabels": {"app": "a"}}),
        None
    ));
    // An operator Kubernetes does not have holds for nothing.
    assert!(!matches(
        json!({"matchExpressions": [{"key": "app", "operator": "Near"}]})
    ));
}

#[test]
fn gateway_folders_keep_the_socket_path_short() {
    assert_eq!(gateway_dir_name("llm", "ai-gateway"), "llm-ai-gateway");
    let long = gateway_dir_name(&"n".repeat(63), &"g".repeat(253));
    let socket = format!("{GATEWAYS_DIR}/{long}/{EXTPROC_SOCKET}");
    assert!(socket.len() <= 107, "{}", socket.len());
    assert_ne!(
        long,
        gateway_dir_name(&"n".repeat(63), &format!("{}h", "g".repeat(252)))
    );
}

use aigw_filterconfig::{Credential, FilterConfig, METADATA_NAMESPACE};
use serde_json::Map;

use super::ext_proc::{ext_proc_filter, label_selector_matches};
use super::files::{is_file_name, object_data, relocated};
use super::route::{
    Action, HeaderMatch, IrRoute, PathMatch, compute_hosts, route_to_envoy, sort_by_precedence,
};
use super::*;
use crate::plan;
use crate::validate::{AllowedFrom, Listener};

fn listener(name: &str, port: i64, hostname: Option<&str>) -> Listener {
    Listener {
        name: name.into(),
        hostname: hostname.map(str::to_string),
        port,
        protocol: "HTTP".into(),
        allowed_from: AllowedFrom::Same,
        allowed_kinds: None,
    }
}

fn route(name: &str, path: &str, headers: usize) -> IrRoute {
    IrRoute {
        name: name.into(),
        hostname: "*".into(),
        path: Some(PathMatch::Prefix(path.into())),
        headers: (0..headers)
            .map(|_| HeaderMatch {
                name: "x".into(),
                exact: true,
                value: "v".into(),
            })
            .collect(),
        action: Action::Respond {
            status: 404,
            body: None,
            content_type: None,
        },
        ext_procs: Vec::new(),
        rate_limits: Map::new(),
    }
}

#[test]
fn durations_follow_gateway_api_and_protobuf() {
    assert_eq!(duration_ms("120s"), Some(120_000));
    assert_eq!(duration_ms("1h30m"), Some(5_400_000));
    assert_eq!(duration_ms("500ms"), Some(500));
    assert_eq!(duration_ms("1m1ms"), Some(60_001));
    assert_eq!(duration_ms("10"), None);
    assert_eq!(duration_ms(""), None);
    assert_eq!(proto_duration(90_000), "90s");
    assert_eq!(proto_duration(500), "0.500s");
}

#[test]
fn precedence_is_longest_path_then_most_headers_stable_otherwise() {
    let mut routes = vec![
        route("catch-all-v1", "/v1", 0),
        route("a-v1", "/v1", 1),
        route("a-anthropic", "/anthropic", 1),
        route("catch-all-anthropic", "/anthropic", 0),
        route("b-v1", "/v1", 1),
        route("exact", "/x", 0),
    ];
    routes[5].path = Some(PathMatch::Exact("/x".into()));
    sort_by_precedence(&mut routes);
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "exact",
            "a-anthropic",
            "catch-all-anthropic",
            "a-v1",
            "b-v1",
            "catch-all-v1"
        ]
    );
}

#[test]
fn hosts_are_intersected_as_envoy_gateway_does() {
    let all = vec![
        listener("wild", 80, Some("*.example.com")),
        listener("foo", 80, Some("foo.example.com")),
        listener("any", 8080, None),
    ];
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(compute_hosts(&[], &all[2], &all), ["*"]);
    assert_eq!(compute_hosts(&[], &all[0], &all), ["*.example.com"]);
    assert_eq!(
        compute_hosts(&names(&["b.example.com", "a.example.com"]), &all[2], &all),
        ["a.example.com", "b.example.com"]
    );
    // foo.example.com belongs to the listener that names it.
    assert_eq!(
        compute_hosts(
            &names(&["foo.example.com", "bar.example.com"]),
            &all[0],
            &all
        ),
        ["bar.example.com"]
    );
    assert!(compute_hosts(&names(&["other.org"]), &all[0], &all).is_empty());
    assert_eq!(
        compute_hosts(&names(&["*.com"]), &all[0], &all),
        ["*.example.com"]
    );
}

#[test]
fn ext_proc_filter_mirrors_the_extension_policy() {
    let entry = json!({
        "backendRefs": [{"name": "x", "port": 1063}],
        "failOpen": false,
        "messageTimeout": "30s",
        "metadata": {"writableNamespaces": [METADATA_NAMESPACE]},
        "processingMode": {"allowModeOverride": true, "request": {"body": "Buffered"}, "response": {"body": "Buffered"}},
    });
    let filter = ext_proc_filter("f", "c", "ns", &entry).unwrap();
    assert_eq!(
        filter,
        json!({
            "name": "f",
            "disabled": true,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                "grpc_service": {"envoy_grpc": {"cluster_name": "c", "authority": "x.ns:1063"}, "timeout": "10s"},
                "failure_mode_allow": false,
                "message_timeout": "30s",
                "allow_mode_override": true,
                "metadata_options": {"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}},
                "processing_mode": {
                    "request_header_mode": "SEND",
                    "response_header_mode": "SEND",
                    "request_body_mode": "BUFFERED",
                    "response_body_mode": "BUFFERED",
                    "request_trailer_mode": "SKIP",
                    "response_trailer_mode": "SKIP",
                },
            },
        })
    );
    // An empty processing mode sends nothing, as in Envoy Gateway.
    let filter = ext_proc_filter("f", "c", "ns", &json!({"processingMode": {}})).unwrap();
    assert_eq!(
        filter["typed_config"]["processing_mode"]["request_header_mode"],
        "SKIP"
    );
}

#[test]
fn credential_paths_become_relative() {
    let mut config = FilterConfig::new(1);
    config.backends.push(aigw_filterconfig::Backend {
        name: "b".into(),
        service_backend: "ns/b".into(),
        schema: aigw_filterconfig::BackendSchema {
            name: aigw_filterconfig::ApiSchema::OpenAI,
            version: None,
            prefix: None,
        },
        model_name_override: None,
        upstream_host: None,
        auth: Some(aigw_filterconfig::BackendAuth {
            credential: Credential::ApiKey {
                key_file: format!("{}/key/apiKey", plan::SECRETS_ROOT),
            },
            credential_override: None,
        }),
        header_mutation: None,
        body_mutation: None,
    });
    let relocated = relocated(&config);
    let Some(auth) = &relocated.backends[0].auth else {
        panic!("auth lost")
    };
    assert_eq!(
        auth.credential,
        Credential::ApiKey {
            key_file: "secrets/key/apiKey".into()
        }
    );
}

#[test]
fn secret_data_is_decoded_and_string_data_wins() {
    let secret = json!({"data": {"a": "c2stMQ==", "b": "eA=="}, "stringData": {"b": "y"}});
    let data = object_data(&secret, true).unwrap();
    assert_eq!(data["a"], b"sk-1");
    assert_eq!(data["b"], b"y");
    assert!(object_data(&json!({"data": {"a": "%%"}}), true).is_err());
    assert!(is_file_name("apiKey") && !is_file_name("..") && !is_file_name("a/b"));
}

#[test]
fn direct_response_route_shape() {
    let mut r = route("r", "/v1/", 0);
    r.action = Action::Respond {
        status: 404,
        body: Some("{}".into()),
        content_type: Some("application/json".into()),
    };
    r.ext_procs = vec!["f".into()];
    let value = route_to_envoy(&r);
    assert_eq!(value["match"], json!({"path_separated_prefix": "/v1"}));
    assert_eq!(
        value["direct_response"]["body_format"]["text_format_source"]["inline_string"],
        "{}"
    );
    assert_eq!(
        value["response_headers_to_add"][0]["header"]["value"],
        "application/json"
    );
    assert_eq!(
        value["typed_per_filter_config"]["f"]["@type"],
        "type.googleapis.com/envoy.config.route.v3.FilterConfig"
    );
}
