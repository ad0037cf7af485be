//! Dynamic metadata: the `io.envoy.ai_gateway` facts of a request, and the header values that
//! the attempts of one request hand on to each other in a rule cluster.

use std::collections::BTreeMap;

use aigw_filterconfig::{
    ATTEMPT_METADATA_NAMESPACE, ATTEMPT_ORIGINALS_KEY, METADATA_NAMESPACE, RULE_HOST_DOMAIN,
};
use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, Metadata};
use envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};

use super::Selection;
use super::reply::header_value;

pub(super) fn metadata_struct(fields: BTreeMap<String, PbValue>) -> Struct {
    let inner = Struct {
        fields: fields.into_iter().collect(),
    };
    Struct {
        fields: [(
            METADATA_NAMESPACE.to_string(),
            PbValue {
                kind: Some(Kind::StructValue(inner)),
            },
        )]
        .into_iter()
        .collect(),
    }
}

/// `x-forwarded-host` with the rule hosts the router set ([`RULE_HOST_DOMAIN`]) replaced by the
/// client's authority.
pub(super) fn restore_forwarded_host(forwarded: &str, client: &str) -> String {
    let suffix = format!(".{RULE_HOST_DOMAIN}");
    forwarded
        .split(',')
        .map(|part| {
            let part = part.trim();
            if part.ends_with(&suffix) {
                client
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The original header values earlier attempts of this request recorded in the
/// [`ATTEMPT_METADATA_NAMESPACE`] metadata.
pub(super) fn attempt_originals(metadata: Option<&Metadata>) -> BTreeMap<String, Option<String>> {
    let Some(Kind::StructValue(originals)) = metadata
        .and_then(|m| m.filter_metadata.get(ATTEMPT_METADATA_NAMESPACE))
        .and_then(|ns| ns.fields.get(ATTEMPT_ORIGINALS_KEY))
        .and_then(|v| v.kind.as_ref())
    else {
        return BTreeMap::new();
    };
    originals
        .fields
        .iter()
        .map(|(name, value)| {
            let value = match &value.kind {
                Some(Kind::StringValue(v)) => Some(v.clone()),
                _ => None,
            };
            (name.clone(), value)
        })
        .collect()
}

/// The request headers as they were before the first attempt changed them.
pub(super) fn restore_headers(
    headers: &mut Vec<(String, String)>,
    originals: &BTreeMap<String, Option<String>>,
) {
    for (name, original) in originals {
        headers.retain(|(k, _)| k != name);
        if let Some(value) = original {
            headers.push((name.clone(), value.clone()));
        }
    }
}

/// Makes one attempt's header mutation start from the request as the client's router left it:
/// every header an earlier attempt changed and this one does not is put back (or removed, when
/// it was absent). `headers` are the restored request headers; the headers this attempt touches
/// for the first time are added to `originals`, which is returned as the metadata value the
/// next attempt reads.
pub(super) fn undo_earlier_attempts(
    headers: &[(String, String)],
    originals: &mut BTreeMap<String, Option<String>>,
    set: &mut Vec<HeaderValueOption>,
    remove: &mut Vec<String>,
) -> PbValue {
    let touched: std::collections::BTreeSet<String> = set
        .iter()
        .filter_map(|h| h.header.as_ref().map(|h| h.key.to_ascii_lowercase()))
        .chain(remove.iter().map(|name| name.to_ascii_lowercase()))
        .collect();
    for (name, original) in originals.iter() {
        if touched.contains(name) {
            continue;
        }
        match original {
            Some(value) => set.push(header_value(name, value)),
            None => remove.push(name.clone()),
        }
    }
    for name in touched {
        originals.entry(name).or_insert_with_key(|name| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        });
    }
    PbValue {
        kind: Some(Kind::StructValue(Struct {
            fields: originals
                .iter()
                .map(|(name, value)| {
                    let kind = match value {
                        Some(v) => Kind::StringValue(v.clone()),
                        None => Kind::NullValue(0),
                    };
                    (name.clone(), PbValue { kind: Some(kind) })
                })
                .collect(),
        })),
    }
}

/// Sets `key` in the response's `io.envoy.ai_gateway` metadata, keeping what is there.
pub(super) fn set_metadata(response: &mut ProcessingResponse, key: &str, value: PbValue) {
    let outer = response
        .dynamic_metadata
        .get_or_insert_with(Struct::default);
    let namespace = outer
        .fields
        .entry(METADATA_NAMESPACE.to_string())
        .or_insert_with(|| PbValue {
            kind: Some(Kind::StructValue(Struct::default())),
        });
    if let Some(Kind::StructValue(inner)) = &mut namespace.kind {
        inner.fields.insert(key.to_string(), value);
    } else {
        *namespace = PbValue {
            kind: Some(Kind::StructValue(Struct {
                fields: [(key.to_string(), value)].into_iter().collect(),
            })),
        };
    }
}

pub(super) fn string_value(value: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(value.to_string())),
    }
}

pub(super) fn number_value(value: f64) -> PbValue {
    PbValue {
        kind: Some(Kind::NumberValue(value)),
    }
}

/// The facts of the attempt that answered, as dynamic metadata.
pub(super) fn attempt_metadata(selection: &Selection, route: &str) -> Struct {
    let spec = &selection.backend.spec;
    metadata_struct(BTreeMap::from([
        ("backend_name".to_string(), string_value(&spec.name)),
        (
            "ai_service_backend_name".to_string(),
            string_value(&spec.service_backend),
        ),
        (
            "model_name_override".to_string(),
            string_value(&selection.request_model),
        ),
        ("route_name".to_string(), string_value(route)),
    ]))
}

/// Adds the fields of `extra` (a metadata struct) to the response's metadata.
pub(super) fn merge_metadata(response: &mut ProcessingResponse, extra: Struct) {
    for (namespace, value) in extra.fields {
        if let Some(Kind::StructValue(inner)) = value.kind {
            for (key, value) in inner.fields {
                if namespace == METADATA_NAMESPACE {
                    set_metadata(response, &key, value);
                }
            }
        }
    }
}
