//! Structural validation of AI Gateway documents against the JSON Schemas derived from
//! [`crate::model`]: required fields, enums, lengths, patterns, list sizes and unknown fields, as
//! the API server's OpenAPI validation would check them. Every violation is reported.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use schemars::JsonSchema;
use serde_json::Value;

use crate::diag::FieldPath;
use crate::model::{
    AiGatewayRouteSpec, AiServiceBackendSpec, BackendSecurityPolicySpec, GatewayConfigSpec,
    QuotaPolicySpec, Resource,
};

/// The AI Gateway kinds with a typed spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AiKind {
    /// AIGatewayRoute.
    Route,
    /// AIServiceBackend.
    ServiceBackend,
    /// BackendSecurityPolicy.
    SecurityPolicy,
    /// GatewayConfig.
    GatewayConfig,
    /// QuotaPolicy.
    QuotaPolicy,
}

impl AiKind {
    /// Every kind.
    pub const ALL: [AiKind; 5] = [
        AiKind::Route,
        AiKind::ServiceBackend,
        AiKind::SecurityPolicy,
        AiKind::GatewayConfig,
        AiKind::QuotaPolicy,
    ];

    /// The Kubernetes kind name.
    pub fn name(self) -> &'static str {
        match self {
            AiKind::Route => "AIGatewayRoute",
            AiKind::ServiceBackend => "AIServiceBackend",
            AiKind::SecurityPolicy => "BackendSecurityPolicy",
            AiKind::GatewayConfig => "GatewayConfig",
            AiKind::QuotaPolicy => "QuotaPolicy",
        }
    }

    /// Looks a kind up by name.
    pub fn from_name(name: &str) -> Option<AiKind> {
        AiKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The JSON Schema of the whole resource.
    pub fn schema(self) -> Value {
        match self {
            AiKind::Route => schema_of::<Resource<AiGatewayRouteSpec>>(),
            AiKind::ServiceBackend => schema_of::<Resource<AiServiceBackendSpec>>(),
            AiKind::SecurityPolicy => schema_of::<Resource<BackendSecurityPolicySpec>>(),
            AiKind::GatewayConfig => schema_of::<Resource<GatewayConfigSpec>>(),
            AiKind::QuotaPolicy => schema_of::<Resource<QuotaPolicySpec>>(),
        }
    }
}

fn schema_of<T: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut value = generator.into_root_schema_for::<T>().to_value();
    strip_null_alternatives(&mut value);
    value
}

/// Optional fields are written as plain types: the API server drops `null` values before
/// validation, and so do we, so `anyOf [T, null]` only makes error messages worse.
fn strip_null_alternatives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let single = types.remove(0);
                    map.insert("type".into(), single);
                }
            }
            let replacement = match map.get("anyOf") {
                Some(Value::Array(alternatives)) if alternatives.len() == 2 => {
                    let non_null: Vec<&Value> = alternatives
                        .iter()
                        .filter(|alt| alt.get("type") != Some(&Value::String("null".into())))
                        .collect();
                    (non_null.len() == 1).then(|| non_null[0].clone())
                }
                _ => None,
            };
            if let (Some(Value::Object(inner)), true) = (replacement, true) {
                map.remove("anyOf");
                for (key, val) in inner {
                    map.entry(key).or_insert(val);
                }
            }
            // Enums with documented variants come out as `oneOf` of `const`s; an `enum` gives
            // the reader the list of allowed values instead of "not valid under any schema".
            let constants: Option<Vec<Value>> = match map.get("oneOf") {
                Some(Value::Array(alternatives)) => alternatives
                    .iter()
                    .map(|alt| alt.get("const").cloned())
                    .collect(),
                _ => None,
            };
            if let Some(constants) = constants {
                map.remove("oneOf");
                map.insert("type".into(), Value::String("string".into()));
                map.insert("enum".into(), Value::Array(constants));
            }
            if map.get("type") == Some(&Value::String("null".into())) && map.len() == 1 {
                return;
            }
            for child in map.values_mut() {
                strip_null_alternatives(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null_alternatives),
        _ => {}
    }
}

/// A structural violation: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Field concerned.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
}

struct Validators(Vec<(AiKind, Result<jsonschema::Validator, String>)>);

fn validators() -> &'static Validators {
    static VALIDATORS: OnceLock<Validators> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        Validators(
            AiKind::ALL
                .into_iter()
                .map(|kind| {
                    let schema = kind.schema();
                    let validator = jsonschema::options()
                        .should_validate_formats(true)
                        .build(&schema)
                        .map_err(|err| err.to_string());
                    (kind, validator)
                })
                .collect(),
        )
    })
}

/// Removes `null` values from objects, as the API server does before validating.
pub fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Checks one document of `kind`; returns every violation, sorted by path.
pub fn check(kind: AiKind, document: &Value) -> Vec<Violation> {
    let Some((_, validator)) = validators().0.iter().find(|(k, _)| *k == kind) else {
        return Vec::new();
    };
    let validator = match validator {
        Ok(validator) => validator,
        Err(err) => {
            return vec![Violation {
                path: FieldPath::root(),
                message: format!(
                    "internal error: schema of {} does not compile: {err}",
                    kind.name()
                ),
            }];
        }
    };
    if validator.is_valid(document) {
        return Vec::new();
    }
    let mut violations: Vec<Violation> = Vec::new();
    for error in validator.iter_errors(document) {
        let path = FieldPath::from_pointer(error.instance_path().as_str());
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for field in unexpected {
                    violations.push(Violation {
                        path: path.key(field),
                        message: "unknown field".into(),
                    });
                }
            }
            ValidationErrorKind::Required { property } => violations.push(Violation {
                path: path.key(property.as_str().unwrap_or_default()),
                message: "required field is missing".into(),
            }),
            ValidationErrorKind::Enum { options } => {
                let allowed: Vec<String> = options
                    .as_array()
                    .map(|values| values.iter().map(|v| v.to_string()).collect())
                    .unwrap_or_default();
                violations.push(Violation {
                    path,
                    message: format!(
                        "unsupported value {}: must be one of {}",
                        error.instance(),
                        allowed.join(", ")
                    ),
                });
            }
            ValidationErrorKind::Pattern { pattern } => violations.push(Violation {
                path,
                message: format!("{} does not match the pattern {pattern}", error.instance()),
            }),
            _ => violations.push(Violation {
                path,
                message: error.to_string(),
            }),
        }
    }
    violations.sort_by(|a, b| (&a.path, &a.message).cmp(&(&b.path, &b.message)));
    violations.dedup();
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A valid AIGatewayRoute, as a user writes one.
    fn route() -> Value {
        serde_saphyr::from_str(
            "apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{headers: [{name: x-ai-eg-model, value: gpt-4o}]}]
    backendRefs: [{name: openai}]
    timeouts: {request: 60s}
",
        )
        .unwrap()
    }

    #[test]
    fn every_kind_schema_compiles() {
        for (kind, validator) in &validators().0 {
            assert!(
                validator.is_ok(),
                "{kind:?}: {validator:?}",
                validator = validator.as_ref().err()
            );
        }
    }

    #[test]
    fn a_valid_route_passes() {
        assert_eq!(check(AiKind::Route, &route()), vec![]);
    }

    #[test]
    fn reports_every_violation_with_its_path() {
        let mut doc = route();
        doc["spec"]["rules"][0]["surprise"] = json!(1);
        doc["spec"]["rules"][0]["matches"][0]["headers"][0]["type"] = json!("Prefix");
        doc["spec"]["rules"][0]["timeouts"]["request"] = json!("1 minute");
        doc["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(-1);
        let found: Vec<String> = check(AiKind::Route, &doc)
            .into_iter()
            .map(|v| format!("{}: {}", v.path, v.message))
            .collect();
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found
                .iter()
                .any(|f| f == "spec.rules[0].surprise: unknown field")
        );
        assert!(found.iter().any(|f| f.starts_with(
            "spec.rules[0].matches[0].headers[0].type: unsupported value \"Prefix\""
        )));
        assert!(
            found
                .iter()
                .any(|f| f
                    .starts_with("spec.rules[0].timeouts.request: \"1 minute\" does not match"))
        );
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("spec.rules[0].backendRefs[0].weight:"))
        );
    }

    #[test]
    fn required_fields_are_named() {
        let mut doc = route();
        doc["spec"].as_object_mut().map(|s| s.remove("rules"));
        let found = check(AiKind::Route, &doc);
        assert_eq!(
            found,
            vec![Violation {
                path: FieldPath::parse("spec.rules"),
                message: "required field is missing".into()
            }]
        );
    }

    #[test]
    fn list_limits_hold() {
        let mut doc = route();
        let rule = doc["spec"]["rules"][0].clone();
        doc["spec"]["rules"] = json!(vec![rule; 16]);
        let found = check(AiKind::Route, &doc);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path.to_string(), "spec.rules");
    }
}
