//! Costs: token counts turned into the numbers written as dynamic metadata (what rate limits
//! and access logs read), as upstream computes them.

use std::collections::BTreeMap;

use aigw_filterconfig::CostType;

use crate::config::{Cost, Route, RuntimeConfig};
use crate::usage::TokenUsage;

/// What a cost expression can see about the request.
#[derive(Debug, Clone)]
pub struct CostInput<'a> {
    /// Model sent upstream.
    pub model: &'a str,
    /// Full backend name.
    pub backend: &'a str,
    /// `<namespace>/<name>` of the AIServiceBackend.
    pub service_backend: &'a str,
    /// `<namespace>/<name>` of the route.
    pub route: &'a str,
    /// Token counts.
    pub usage: TokenUsage,
}

/// Computes every applicable cost: the route's first (filtered by backend and model when they
/// say so), then the global ones for keys not set yet. Errors name the key and are not fatal.
pub fn compute(
    config: &RuntimeConfig,
    route: &Route,
    input: &CostInput<'_>,
) -> (BTreeMap<String, u64>, Vec<String>) {
    let mut values = BTreeMap::new();
    let mut errors = Vec::new();
    let applicable = route.costs.iter().filter(|c| {
        c.service_backend
            .as_deref()
            .is_none_or(|b| b == input.service_backend)
            && c.model.as_deref().is_none_or(|m| m == input.model)
    });
    for cost in applicable.chain(config.global_costs.iter()) {
        if values.contains_key(&cost.key) {
            continue;
        }
        match value(cost, input) {
            Ok(v) => {
                values.insert(cost.key.clone(), v);
            }
            Err(err) => errors.push(format!("cost {:?}: {err}", cost.key)),
        }
    }
    (values, errors)
}

fn value(cost: &Cost, input: &CostInput<'_>) -> Result<u64, String> {
    let u = &input.usage;
    Ok(match cost.kind {
        CostType::InputToken => u.input.unwrap_or(0),
        CostType::CachedInputToken => u.cached_input.unwrap_or(0),
        CostType::CacheCreationInputToken => u.cache_creation_input.unwrap_or(0),
        CostType::OutputToken => u.output.unwrap_or(0),
        CostType::TotalToken => u.total.unwrap_or(0),
        CostType::ReasoningToken => u.reasoning.unwrap_or(0),
        CostType::CEL => {
            let Some(program) = &cost.program else {
                return Err("no CEL program".into());
            };
            let mut context = cel::Context::default();
            context.add_variable_from_value("model", input.model.to_string());
            context.add_variable_from_value("backend", input.backend.to_string());
            context.add_variable_from_value("route_name", input.route.to_string());
            context.add_variable_from_value("input_tokens", u.input.unwrap_or(0));
            context.add_variable_from_value("cached_input_tokens", u.cached_input.unwrap_or(0));
            context.add_variable_from_value(
                "cache_creation_input_tokens",
                u.cache_creation_input.unwrap_or(0),
            );
            context.add_variable_from_value("output_tokens", u.output.unwrap_or(0));
            context.add_variable_from_value("total_tokens", u.total.unwrap_or(0));
            context.add_variable_from_value("reasoning_tokens", u.reasoning.unwrap_or(0));
            match program.execute(&context) {
                Ok(cel::Value::UInt(v)) => v,
                Ok(cel::Value::Int(v)) if v >= 0 => v.unsigned_abs(),
                Ok(other) => {
                    return Err(format!(
                        "expression yields {other:?}, not a non-negative integer"
                    ));
                }
                Err(err) => return Err(err.to_string()),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(key: &str, kind: CostType, cel: Option<&str>, model: Option<&str>) -> Cost {
        Cost {
            key: key.into(),
            kind,
            program: cel.map(|c| cel::Program::compile(c).unwrap()),
            service_backend: None,
            model: model.map(str::to_string),
        }
    }

    #[test]
    fn route_costs_then_globals() {
        let route = Route {
            name: "ns/r".into(),
            hostnames: vec![],
            rules: vec![],
            costs: vec![
                cost("in", CostType::InputToken, None, None),
                cost(
                    "cel",
                    CostType::CEL,
                    Some("model == 'big' ? total_tokens * 2u : total_tokens"),
                    None,
                ),
                cost(
                    "only-other-model",
                    CostType::TotalToken,
                    None,
                    Some("other"),
                ),
            ],
            models: vec![],
        };
        let config = RuntimeConfig {
            max_request_body_bytes: 1,
            routes: vec![],
            global_costs: vec![
                cost("in", CostType::OutputToken, None, None),
                cost("out", CostType::OutputToken, None, None),
            ],
            files: vec![],
            has_costs: true,
            known_models: Default::default(),
            index: Default::default(),
            localities: Default::default(),
        };
        let usage = TokenUsage {
            input: Some(10),
            output: Some(4),
            total: Some(14),
            ..TokenUsage::default()
        };
        let input = CostInput {
            model: "big",
            backend: "b",
            service_backend: "ns/b",
            route: "ns/r",
            usage,
        };
        let (values, errors) = compute(&config, &route, &input);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            values,
            BTreeMap::from([
                ("cel".to_string(), 28),
                ("in".to_string(), 10),
                ("out".to_string(), 4)
            ])
        );
    }
}
