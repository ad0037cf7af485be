use super::*;

/// Envoy Gateway's shape for a QuotaPolicy-like rule: a per-tenant (Distinct) budget
/// under the route's rule key, and an exact-value bucket.
const CONFIG: &str = r#"
domain: ai/gw/http
descriptors:
- key: rule-0-match-0
  value: rule-0-match-0
  descriptors:
  - key: x-tenant-id
    rate_limit: {requests_per_unit: 100, unit: Minute}
- key: rule-1-match-0
  value: rule-1-match-0
  descriptors:
  - key: x-tier
    value: free
    rate_limit: {requests_per_unit: 10, unit: Second}
  - key: x-tier
    rate_limit: {unlimited: true}
- key: shadow
  shadow_mode: true
  rate_limit: {requests_per_unit: 1, unit: hour}
- key: pre*
  rate_limit: {requests_per_unit: 2, unit: day}
"#;

fn config() -> Config {
    Config::load(&[("rl.yaml".into(), CONFIG.into())]).unwrap()
}

fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn one(pairs: &[(&str, &str)], hits: Option<u64>) -> Vec<Descriptor> {
    vec![Descriptor {
        entries: entries(pairs),
        hits,
    }]
}

#[test]
fn descriptors_match_by_value_then_wildcard_then_any_value_at_the_last_entry() {
    let c = config();
    let tenant = c.limit(
        "ai/gw/http",
        &entries(&[
            ("rule-0-match-0", "rule-0-match-0"),
            ("x-tenant-id", "acme"),
        ]),
    );
    assert_eq!(tenant.map(|l| l.requests_per_unit), Some(100));
    assert_eq!(
        tenant.map(|l| l.full_key.as_str()),
        Some("ai/gw/http.rule-0-match-0_rule-0-match-0.x-tenant-id")
    );
    // The exact value wins over the key alone.
    let free = c.limit(
        "ai/gw/http",
        &entries(&[("rule-1-match-0", "rule-1-match-0"), ("x-tier", "free")]),
    );
    assert_eq!(free.map(|l| l.unit), Some(Unit::Second));
    let other = c.limit(
        "ai/gw/http",
        &entries(&[("rule-1-match-0", "rule-1-match-0"), ("x-tier", "paid")]),
    );
    assert!(other.is_some_and(|l| l.unlimited));
    // A limit applies only at the depth of the descriptor's last entry.
    assert!(
        c.limit(
            "ai/gw/http",
            &entries(&[("rule-0-match-0", "rule-0-match-0")])
        )
        .is_none()
    );
    assert!(
        c.limit(
            "ai/gw/http",
            &entries(&[
                ("rule-0-match-0", "rule-0-match-0"),
                ("x-tenant-id", "a"),
                ("x", "y")
            ])
        )
        .is_none()
    );
    assert_eq!(
        c.limit("ai/gw/http", &entries(&[("prefix", "x")]))
            .map(|l| l.requests_per_unit),
        Some(2)
    );
    assert!(c.limit("other", &entries(&[("shadow", "")])).is_none());
    assert!(
        c.limit("ai/gw/http", &entries(&[("nothing", "here")]))
            .is_none()
    );
}

#[test]
fn a_budget_is_refused_once_spent_per_distinct_value_and_recovers_with_its_window() {
    let c = config();
    let limiter = Limiter::default();
    let tenant = |id: &str, hits| {
        one(
            &[("rule-0-match-0", "rule-0-match-0"), ("x-tenant-id", id)],
            hits,
        )
    };
    let t0 = 1_700_000_020; // 40 s into a minute
    // The request phase checks with 0 hits; the response phase charges the tokens.
    assert!(
        !limiter
            .check(&c, "ai/gw/http", &tenant("acme", Some(0)), 0, t0)
            .over_limit
    );
    assert!(
        !limiter
            .check(&c, "ai/gw/http", &tenant("acme", Some(100)), 0, t0)
            .over_limit
    );
    // Exactly at the budget: the next check is still allowed, one more hit is not.
    assert!(
        !limiter
            .check(&c, "ai/gw/http", &tenant("acme", Some(0)), 0, t0)
            .over_limit
    );
    let over = limiter.check(&c, "ai/gw/http", &tenant("acme", Some(1)), 0, t0 + 1);
    assert!(over.over_limit);
    assert_eq!(over.statuses[0].remaining, 0);
    assert_eq!(over.statuses[0].reset_seconds, 19);
    assert!(
        limiter
            .check(&c, "ai/gw/http", &tenant("acme", Some(0)), 0, t0 + 19)
            .over_limit
    );
    // Another tenant has its own budget.
    assert!(
        !limiter
            .check(&c, "ai/gw/http", &tenant("other", None), 0, t0)
            .over_limit
    );
    // A new minute, a new budget.
    let next = limiter.check(&c, "ai/gw/http", &tenant("acme", Some(0)), 0, t0 + 20);
    assert!(!next.over_limit);
    assert_eq!(next.statuses[0].remaining, 100);
}

#[test]
fn request_hits_default_to_one_and_shadow_mode_counts_without_refusing() {
    let c = config();
    let limiter = Limiter::default();
    let free = one(
        &[("rule-1-match-0", "rule-1-match-0"), ("x-tier", "free")],
        None,
    );
    for _ in 0..10 {
        assert!(!limiter.check(&c, "ai/gw/http", &free, 0, 5).over_limit);
    }
    assert!(limiter.check(&c, "ai/gw/http", &free, 0, 5).over_limit);
    assert!(!limiter.check(&c, "ai/gw/http", &free, 0, 6).over_limit);
    let shadow = one(&[("shadow", "")], None);
    assert!(!limiter.check(&c, "ai/gw/http", &shadow, 3, 0).over_limit);
    let decision = limiter.check(&c, "ai/gw/http", &shadow, 0, 0);
    assert!(!decision.over_limit);
    assert_eq!(decision.shadow_over_limit, 1);
    // Unlimited and unmatched descriptors are never over and never counted.
    let before = limiter.len();
    let paid = one(
        &[("rule-1-match-0", "rule-1-match-0"), ("x-tier", "paid")],
        Some(1_000),
    );
    assert!(!limiter.check(&c, "ai/gw/http", &paid, 0, 0).over_limit);
    assert!(
        !limiter
            .check(&c, "ai/gw/http", &one(&[("x", "y")], None), 0, 0)
            .over_limit
    );
    assert_eq!(limiter.len(), before);
}

#[test]
fn counters_stay_bounded_whatever_values_clients_send() {
    let c = config();
    let limiter = Limiter::default();
    let mut uncounted = 0;
    for i in 0..(MAX_COUNTERS + 10) {
        let id = i.to_string();
        let d = one(
            &[("rule-0-match-0", "rule-0-match-0"), ("x-tenant-id", &id)],
            None,
        );
        uncounted += limiter.check(&c, "ai/gw/http", &d, 0, 60).uncounted;
    }
    assert_eq!(limiter.len(), MAX_COUNTERS);
    assert_eq!(uncounted, 10);
    // Once the window has ended, its counters make room.
    let d = one(
        &[
            ("rule-0-match-0", "rule-0-match-0"),
            ("x-tenant-id", "late"),
        ],
        None,
    );
    assert_eq!(limiter.check(&c, "ai/gw/http", &d, 0, 120).uncounted, 0);
    assert_eq!(limiter.len(), 1);
}

#[test]
fn the_service_answers_in_envoys_protocol() {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    let metrics = Arc::new(Metrics::new());
    let service = Service::new(config(), metrics.clone());
    let request = |hits: Option<u64>| RateLimitRequest {
        domain: "ai/gw/http".into(),
        descriptors: vec![
            RateLimitDescriptor {
                entries: vec![
                    Entry {
                        key: "rule-1-match-0".into(),
                        value: "rule-1-match-0".into(),
                    },
                    Entry {
                        key: "x-tier".into(),
                        value: "free".into(),
                    },
                ],
                hits_addend: hits
                    .map(|value| envoy_types::pb::google::protobuf::UInt64Value { value }),
                ..Default::default()
            },
            RateLimitDescriptor {
                entries: vec![Entry {
                    key: "unknown".into(),
                    value: "x".into(),
                }],
                ..Default::default()
            },
        ],
        hits_addend: 0,
    };
    let ok = service.respond(&request(Some(10)), 100);
    assert_eq!(ok.overall_code, Code::Ok as i32);
    assert_eq!(ok.statuses.len(), 2);
    assert_eq!(ok.statuses[0].limit_remaining, 0);
    assert_eq!(
        ok.statuses[0]
            .current_limit
            .as_ref()
            .map(|l| (l.requests_per_unit, l.unit)),
        Some((10, PbUnit::Second as i32))
    );
    assert_eq!(
        ok.statuses[0]
            .duration_until_reset
            .as_ref()
            .map(|d| d.seconds),
        Some(1)
    );
    assert!(ok.statuses[1].current_limit.is_none());
    let over = service.respond(&request(None), 100);
    assert_eq!(over.overall_code, Code::OverLimit as i32);
    assert_eq!(over.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(over.statuses[1].code, Code::Ok as i32);
    assert_eq!(
        service.respond(&request(None), 101).overall_code,
        Code::Ok as i32
    );
    // Requests per domain and answer; a domain nobody configured is one label.
    let mut other = request(None);
    other.domain = "sent-by-a-misconfigured-envoy".into();
    service.respond(&other, 102);
    let text = metrics.encode();
    for line in [
        r#"aigw_ratelimit_requests_total{domain="ai/gw/http",code="ok"} 2"#,
        r#"aigw_ratelimit_requests_total{domain="ai/gw/http",code="over_limit"} 1"#,
        r#"aigw_ratelimit_requests_total{domain="unknown",code="ok"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

/// Envoy Gateway writes every field of envoyproxy/ratelimit's YAML types (yaml.v3, no
/// `omitempty`): such a file loads and means what it says.
#[test]
fn envoy_gateways_own_rendering_loads() {
    let text = r#"name: ai/gw/http
domain: ai/gw/http
descriptors:
- key: httproute/ai/chat/rule/0/match/0/x
  value: httproute/ai/chat/rule/0/match/0/x
  rate_limit: null
  descriptors:
  - key: rule-0-match-0
    value: ""
    rate_limit:
      requests_per_unit: 30
      unit: HOUR
      unlimited: false
      name: ""
      replaces: []
    descriptors: []
    shadow_mode: false
    detailed_metric: false
    value_to_metric: false
    share_threshold: false
    quota_mode: false
  shadow_mode: false
  detailed_metric: false
  value_to_metric: false
  share_threshold: false
  quota_mode: false
"#;
    let config = Config::load(&[("eg.yaml".into(), text.into())]).unwrap();
    let limit = config
        .limit(
            "ai/gw/http",
            &entries(&[
                (
                    "httproute/ai/chat/rule/0/match/0/x",
                    "httproute/ai/chat/rule/0/match/0/x",
                ),
                ("rule-0-match-0", "tenant-a"),
            ]),
        )
        .unwrap();
    assert_eq!((limit.requests_per_unit, limit.unit), (30, Unit::Hour));
    let quota = text.replacen("quota_mode: false", "quota_mode: true", 1);
    let err = Config::load(&[("eg.yaml".into(), quota)]).unwrap_err();
    assert!(err.to_string().contains("quota_mode"), "{err}");
}

#[test]
fn bad_configurations_are_clear_errors() {
    let load = |text: &str| {
        Config::load(&[("rl.yaml".into(), text.into())])
            .unwrap_err()
            .to_string()
    };
    assert!(load("domain: d\ndescriptors:\n- key: a\n  rate_limit: {unit: fortnight, requests_per_unit: 1}\n").contains("invalid rate limit unit \"fortnight\""));
    assert!(load("domain: d\ndescriptors:\n- key: a\n- key: a\n").contains("d.a: duplicate"));
    assert!(load("domain: d\ndescriptors:\n- key: ''\n").contains("empty key"));
    assert!(
        load("domain: d\ndescriptors:\n- key: a\n  rate_limit: {unlimited: true, unit: second}\n")
            .contains("takes no unit")
    );
    assert!(load("domain: d\nextra: 1\n").contains("rl.yaml"));
    assert!(load("domain: ''\n").contains("empty"));
    let twice = Config::load(&[
        ("a".into(), "domain: d\n".into()),
        ("b".into(), "domain: d\n".into()),
    ]);
    assert!(twice.unwrap_err().to_string().contains("configured twice"));
}
