use aigw_filterconfig::{CredentialOverride, HeaderValue};

use super::gateway::{bytes_quantity, quantity_bytes};
use super::route::header_mutation;
use super::workload::default_tag;
use super::{bounded_name, rule_authority};
use crate::model::{self, HttpHeaderMutation};

#[test]
fn a_rule_authority_is_a_valid_hostname_for_any_route_name() {
    assert_eq!(rule_authority("ai", "chat"), "chat.ai.aigw.internal");
    assert_eq!(rule_authority("ai", "chat.v2"), "chat.v2.ai.aigw.internal");
    for name in ["a".repeat(64), format!("{}.b", "a".repeat(63)).repeat(4)] {
        let host = rule_authority("ai", &name);
        assert!(
            host.len() <= 253 && host.split('.').all(|l| !l.is_empty() && l.len() <= 63),
            "{host}"
        );
        assert!(host.ends_with(".ai.aigw.internal"), "{host}");
        assert_ne!(host, rule_authority("ai", &format!("{name}x")));
    }
}

#[test]
fn quantities() {
    assert_eq!(quantity_bytes(&serde_json::json!(32768)), Some(32768));
    assert_eq!(quantity_bytes(&serde_json::json!("64Mi")), Some(64 << 20));
    assert_eq!(
        quantity_bytes(&serde_json::json!("1G")),
        Some(1_000_000_000)
    );
    assert_eq!(quantity_bytes(&serde_json::json!("lots")), None);
    assert_eq!(bytes_quantity(64 << 20), "64Mi");
    assert_eq!(bytes_quantity(1000), "1000");
}

#[test]
fn long_names_are_bounded_and_stay_distinct() {
    let a = bounded_name(&"a".repeat(80), 63);
    let b = bounded_name(&format!("{}b", "a".repeat(79)), 63);
    assert!(a.len() <= 63 && b.len() <= 63);
    assert_ne!(a, b);
    assert_eq!(bounded_name("short", 63), "short");
}

#[test]
fn image_repository_keeps_the_default_tag() {
    assert_eq!(default_tag("ghcr.io/aigw/aigw-extproc:v0.1.0"), ":v0.1.0");
    assert_eq!(default_tag("localhost:5000/x@sha256:abc"), "@sha256:abc");
}

#[test]
fn route_level_header_mutation_wins_and_removes_are_unioned() {
    let backend = HttpHeaderMutation {
        set: vec![model::HttpHeader {
            name: "X-A".into(),
            value: "backend".into(),
        }],
        remove: vec!["x-gone".into()],
    };
    let route = HttpHeaderMutation {
        set: vec![model::HttpHeader {
            name: "x-a".into(),
            value: "route".into(),
        }],
        remove: vec!["X-Other".into(), "x-gone".into()],
    };
    let merged = header_mutation(Some(&backend), Some(&route), None).unwrap();
    assert_eq!(
        merged.set,
        vec![HeaderValue {
            name: "x-a".into(),
            value: "route".into()
        }]
    );
    assert_eq!(
        merged.remove,
        vec!["x-gone".to_string(), "x-other".to_string()]
    );
}

#[test]
fn credential_override_headers_are_removed_upstream() {
    let o = CredentialOverride {
        header_name: Some("x-aigw-aws-".into()),
        metadata_namespace: None,
        metadata_key: None,
        fallback_to_configured: true,
    };
    let merged = header_mutation(None, None, Some(&o)).unwrap();
    assert_eq!(
        merged.remove,
        vec![
            "x-aigw-aws-access-key-id",
            "x-aigw-aws-secret-access-key",
            "x-aigw-aws-session-token"
        ]
    );
}
