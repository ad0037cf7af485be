//! Listeners: the pieces of an Envoy listener's HTTP connection manager that Envoy Gateway sets the
//! same way for every listener, such as its JSON access log.

use std::collections::BTreeSet;

use aigw_filterconfig::{
    METADATA_NAMESPACE, MODEL_HEADER, SELECTED_BACKEND_HEADER, SELECTED_RULE_HEADER,
};
use serde_json::{Map, Value, json};

use super::{ACCESS_LOG, typed};

/// The access log of every listener: Envoy Gateway's default JSON fields, the AI Gateway
/// headers, and the dynamic metadata the extproc writes (`keys`).
pub(super) fn access_log(keys: &BTreeSet<String>) -> Value {
    let mut format = Map::new();
    for (field, operator) in [
        ("start_time", "%START_TIME%"),
        ("method", "%REQ(:METHOD)%"),
        ("x-envoy-origin-path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
        ("protocol", "%PROTOCOL%"),
        ("response_code", "%RESPONSE_CODE%"),
        ("response_flags", "%RESPONSE_FLAGS%"),
        ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
        ("bytes_received", "%BYTES_RECEIVED%"),
        ("bytes_sent", "%BYTES_SENT%"),
        ("duration", "%DURATION%"),
        (
            "x-envoy-upstream-service-time",
            "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        ),
        ("user-agent", "%REQ(USER-AGENT)%"),
        ("x-request-id", "%REQ(X-REQUEST-ID)%"),
        (":authority", "%REQ(:AUTHORITY)%"),
        ("upstream_host", "%UPSTREAM_HOST%"),
        ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
        (
            "upstream_transport_failure_reason",
            "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
        ),
        ("route_name", "%ROUTE_NAME%"),
    ] {
        format.insert(field.into(), json!(operator));
    }
    for header in [MODEL_HEADER, SELECTED_BACKEND_HEADER, SELECTED_RULE_HEADER] {
        format.insert(
            header.into(),
            json!(format!("%REQ({})%", header.to_ascii_uppercase())),
        );
    }
    let metadata: Map<String, Value> = keys
        .iter()
        .map(|key| {
            (
                key.clone(),
                json!(format!("%DYNAMIC_METADATA({METADATA_NAMESPACE}:{key})%")),
            )
        })
        .collect();
    format.insert(METADATA_NAMESPACE.into(), Value::Object(metadata));
    json!([{
        "name": "envoy.access_loggers.file",
        "typed_config": typed("envoy.extensions.access_loggers.file.v3.FileAccessLog", json!({
            "path": ACCESS_LOG,
            "log_format": {"json_format": format},
        })),
    }])
}
