use super::retry_policy;
use serde_json::json;

#[test]
fn an_empty_retry_gets_envoy_gateways_defaults() {
    let policy = retry_policy(&json!({})).unwrap();
    assert_eq!(
        policy["retry_on"],
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    );
    assert_eq!(policy["retriable_status_codes"], json!([503]));
    assert_eq!(policy["num_retries"], 2);
    let predicate = &policy["retry_host_predicate"];
    assert_eq!(predicate.as_array().map(Vec::len), Some(1));
    assert_eq!(
        predicate[0]["name"],
        "envoy.retry_host_predicates.previous_hosts"
    );
    assert_eq!(
        predicate[0]["typed_config"],
        json!({"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"})
    );
    assert_eq!(policy["host_selection_retry_max_attempts"], 5);
    // Nothing else is set.
    assert_eq!(policy.as_object().map(|o| o.len()), Some(5));
    assert_eq!(predicate[0].as_object().map(|o| o.len()), Some(2));
}

#[test]
fn upstreams_provider_fallback_retry_translates_field_by_field() {
    let policy = retry_policy(&json!({
            "numAttemptsPerPriority": 1,
            "numRetries": 5,
            "perRetry": {"backOff": {"baseInterval": "100ms", "maxInterval": "10s"}, "timeout": "30s"},
            "retryOn": {"httpStatusCodes": [500, 503, 500], "triggers": ["retriable-status-codes", "connect-failure", "connect-failure"]},
        }))
        .unwrap();
    assert_eq!(policy["num_retries"], 5);
    assert_eq!(policy["retry_on"], "connect-failure,retriable-status-codes");
    assert_eq!(policy["retriable_status_codes"], json!([500, 503]));
    assert_eq!(policy["per_try_timeout"], "30s");
    assert_eq!(
        policy["retry_back_off"],
        json!({"base_interval": "0.100s", "max_interval": "10s"})
    );
    assert_eq!(
        policy["retry_priority"]["name"],
        "envoy.retry_priorities.previous_priorities"
    );
    assert_eq!(
        policy["retry_priority"]["typed_config"]["update_frequency"],
        1
    );
}

#[test]
fn triggers_without_codes_retry_on_no_status_and_bad_intervals_are_errors() {
    let policy = retry_policy(&json!({"retryOn": {"triggers": ["reset"]}})).unwrap();
    assert_eq!(policy["retry_on"], "reset");
    assert_eq!(policy["retriable_status_codes"], json!([]));
    assert!(policy.get("retry_priority").is_none());
    let err = retry_policy(&json!({"perRetry": {"timeout": "soon"}})).unwrap_err();
    assert!(err.contains("perRetry.timeout"), "{err}");
    let err = retry_policy(
        &json!({"perRetry": {"backOff": {"baseInterval": "2s", "maxInterval": "1s"}}}),
    )
    .unwrap_err();
    assert!(err.contains("shorter than baseInterval"), "{err}");
    let err = retry_policy(&json!({"perRetry": {"backOff": {"baseInterval": "0s"}}})).unwrap_err();
    assert!(err.contains("positive duration"), "{err}");
}
