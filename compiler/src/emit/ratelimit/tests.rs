use super::*;

fn token_rules() -> Vec<Rule> {
    let policy = json!({"type": "Global", "global": {"rules": [
        {
            "clientSelectors": [{"headers": [{"name": "x-tenant-id", "type": "Distinct"}]}],
            "limit": {"requests": 10, "unit": "Hour"},
            "cost": {
                "request": {"from": "Number", "number": 0},
                "response": {"from": "Metadata", "metadata": {"namespace": "io.envoy.ai_gateway", "key": "llm_input_token"}},
            },
        },
        {
            "clientSelectors": [{"headers": [{"name": "x-tier", "value": "free", "invert": true}], "methods": [{"value": "GET"}, {"value": "POST"}]}],
            "limit": {"requests": 5, "unit": "Second"},
            "shadowMode": true,
        },
        {"limit": {"requests": 100, "unit": "Minute"}, "shared": true},
    ]}});
    global_rules("ai", "budget", &policy).unwrap()
}

#[test]
fn route_actions_and_costs_are_envoy_gateways() {
    let rules = token_rules();
    let configs = route_filter_configs("ai/gw/http", "httproute/ai/chat/rule/0/match/0/x", &rules);
    let names: Vec<&String> = configs.keys().collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.ratelimit",
            "envoy.filters.http.ratelimit/ai/budget"
        ]
    );
    let own = &configs["envoy.filters.http.ratelimit"];
    assert_eq!(own["domain"], "ai/gw/http");
    let limits = own["rate_limits"].as_array().unwrap();
    // Rule 0 twice (request check, response cost on stream done); rule 1 once per method.
    assert_eq!(limits.len(), 4);
    assert_eq!(limits[0]["hits_addend"], json!({"number": 0}));
    assert_eq!(limits[1]["apply_on_stream_done"], true);
    assert_eq!(
        limits[1]["hits_addend"],
        json!({"format": "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_input_token)%"})
    );
    assert_eq!(limits[0]["actions"], limits[1]["actions"]);
    assert_eq!(
        limits[0]["actions"][1],
        json!({"request_headers": {"header_name": "x-tenant-id", "descriptor_key": "rule-0-match-0"}})
    );
    assert_eq!(
        limits[2]["actions"][1]["header_value_match"]["expect_match"],
        false
    );
    assert_eq!(
        limits[2]["actions"][2]["header_value_match"]["headers"][0]["string_match"],
        json!({"exact": "GET"})
    );
    assert_eq!(
        limits[3]["actions"][2]["header_value_match"]["headers"][0]["string_match"],
        json!({"exact": "POST"})
    );
    let shared = &configs["envoy.filters.http.ratelimit/ai/budget"];
    assert_eq!(shared["domain"], "ai/budget");
    assert_eq!(
        shared["rate_limits"][0]["actions"],
        json!([
            generic_key("ai/budget/rule/2"),
            generic_key("rule-0-match--1")
        ])
    );
}

#[test]
fn service_descriptors_chain_the_matches_under_the_route() {
    let rules = token_rules();
    let mut service = ServiceConfig::default();
    service.add("ai/gw/http", "r0", &rules);
    service.add("ai/gw/http", "r1", &rules);
    let docs = service.documents();
    assert_eq!(docs.len(), 2);
    let (domain, doc) = &docs[1];
    assert_eq!(domain, "ai/gw/http");
    let routes = doc["descriptors"].as_array().unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(
        routes[0]["descriptors"][0],
        json!({"key": "rule-0-match-0", "rate_limit": {"requests_per_unit": 10, "unit": "HOUR"}})
    );
    assert_eq!(
        routes[0]["descriptors"][1],
        json!({"key": "rule-1-match-0", "value": "rule-1-match-0", "shadow_mode": true, "descriptors": [
            {"key": "rule-1-method", "value": "rule-1-method", "shadow_mode": true, "rate_limit": {"requests_per_unit": 5, "unit": "SECOND"}}
        ]})
    );
    // A shared rule counts once for every route.
    let (domain, doc) = &docs[0];
    assert_eq!(domain, "ai/budget");
    assert_eq!(doc["descriptors"].as_array().unwrap().len(), 1);
    assert_eq!(doc["descriptors"][0]["key"], "ai/budget/rule/2");
}

#[test]
fn selectors_envoy_gateway_refuses_are_errors() {
    let bad =
        |rule: Value| global_rules("ai", "p", &json!({"global": {"rules": [rule]}})).unwrap_err();
    let limit = json!({"requests": 1, "unit": "Hour"});
    assert!(bad(json!({"clientSelectors": [{}], "limit": limit})).contains("At least one"));
    assert!(bad(json!({"clientSelectors": [{"headers": [{"name": "a", "type": "Distinct", "invert": true}]}], "limit": limit})).contains("Invert"));
    assert!(bad(json!({"clientSelectors": [{"headers": [{"name": "a", "type": "Exact"}]}], "limit": limit})).contains("missing a value"));
    assert!(bad(json!({"clientSelectors": [{"headers": [{"name": "a", "type": "RegularExpression", "value": "("}]}], "limit": limit})).contains("regular expression"));
    assert!(
        bad(json!({"clientSelectors": [{"sourceCIDR": {"value": "10.0.0.0/33"}}], "limit": limit}))
            .contains("CIDR")
    );
    assert!(
        global_rules("ai", "p", &json!({"type": "Local", "local": {}}))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn local_rate_limits_take_the_default_from_the_rule_without_selectors() {
    let policy = json!({"local": {"rules": [
        {"limit": {"requests": 10, "unit": "Minute"}},
        {
            "clientSelectors": [{"headers": [{"name": "x-tenant-id", "type": "Distinct"}], "sourceCIDR": {"type": "Distinct", "value": "10.0.0.0/8"}}],
            "limit": {"requests": 3, "unit": "Hour"},
            "shadowMode": true,
        },
    ]}});
    let local = local_policy("ai", "p", &policy).unwrap().unwrap();
    let config = local_route_config(&local);
    assert_eq!(
        config["token_bucket"],
        json!({"max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "60s"})
    );
    assert_eq!(
        config["descriptors"][0]["entries"],
        json!([
            {"key": "rule-0-match-0"},
            {"key": "rule-0-masked-remote-address", "value": "10.0.0.0/8"},
            {"key": "rule-0-remote-address"},
        ])
    );
    assert_eq!(
        config["descriptors"][0]["token_bucket"]["fill_interval"],
        "3600s"
    );
    assert_eq!(config["descriptors"][0]["shadow_mode"], true);
    assert_eq!(
        config["rate_limits"][0]["actions"][0]["request_headers"]["header_name"],
        "x-tenant-id"
    );
    // No default rule: 4294967295 a second.
    let none = local_policy("ai", "p", &json!({"local": {"rules": [
            {"clientSelectors": [{"methods": [{"value": "GET"}]}], "limit": {"requests": 1, "unit": "Second"}},
        ]}})).unwrap().unwrap();
    assert_eq!(
        local_route_config(&none)["token_bucket"]["max_tokens"],
        4_294_967_295u64
    );
    let err = |policy: Value| local_policy("ai", "p", &policy).unwrap_err();
    assert!(err(json!({"local": {"rules": [{"limit": {"requests": 1, "unit": "Second"}}, {"limit": {"requests": 2, "unit": "Second"}}]}})).contains("more than one"));
    assert!(err(json!({"local": {"rules": [
            {"limit": {"requests": 1, "unit": "Hour"}},
            {"clientSelectors": [{"methods": [{"value": "GET"}]}], "limit": {"requests": 1, "unit": "Minute"}},
        ]}})).contains("multiple of the default"));
    assert!(err(json!({"type": "Local"})).contains("local configuration empty"));
    assert!(
        local_policy("ai", "p", &json!({"global": {"rules": []}}))
            .unwrap()
            .is_none()
    );
}

#[test]
fn prefixes_and_cidrs_are_normalised_as_envoy_gateway_does() {
    assert_eq!(
        path_separated_prefix_regex("/v1-a.b/"),
        r"^/v1-a\.b(/.*|\?.*|#.*|;.*|$)"
    );
    assert_eq!(parse_cidr("10.1.2.3/8"), Some(("10.0.0.0".into(), 8)));
    assert_eq!(parse_cidr("::1/0"), Some(("::".into(), 0)));
    assert_eq!(file_name("ai/gw/http"), "ai_gw_http.yaml");
    assert_eq!(strip_rule_index("ai/p/rule/3"), "ai/p");
}
