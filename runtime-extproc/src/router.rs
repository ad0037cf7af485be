//! Route and backend selection: which AIGatewayRoute serves a request (by host, as Gateway API
//! orders hostnames), which of its rules matches first, and which backend of that rule to use
//! (by weight, within the most preferred priority that has any weight).

use std::sync::Arc;

use crate::config::{Backend, Route, RuntimeConfig};

/// The routes that may serve `host`: those listing it exactly; else those with the longest
/// matching wildcard; else those without hostnames. Order is kept (namespace/name).
pub fn candidates<'a>(config: &'a RuntimeConfig, host: &str) -> Vec<&'a Route> {
    let exact: Vec<&Route> = config
        .routes
        .iter()
        .filter(|r| r.hostnames.iter().any(|h| h == host))
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    let mut best = 0;
    let mut wild: Vec<&Route> = Vec::new();
    for route in &config.routes {
        let longest = route
            .hostnames
            .iter()
            .filter_map(|h| h.strip_prefix('*'))
            .filter(|suffix| host.len() > suffix.len() && host.ends_with(suffix))
            .map(str::len)
            .max();
        match longest {
            Some(len) if len > best => {
                best = len;
                wild = vec![route];
            }
            Some(len) if len == best => wild.push(route),
            _ => {}
        }
    }
    if !wild.is_empty() {
        return wild;
    }
    config
        .routes
        .iter()
        .filter(|r| r.hostnames.is_empty())
        .collect()
}

/// Finds the first rule whose matches hold. `header` looks request headers up by lower-case name.
pub fn select<'a>(
    config: &'a RuntimeConfig,
    host: &str,
    header: impl Fn(&str) -> Option<&'a str> + Copy,
) -> Option<(&'a Route, usize)>
where
{
    for route in candidates(config, host) {
        for (index, rule) in route.rules.iter().enumerate() {
            let holds = rule.matches.is_empty()
                || rule.matches.iter().any(|conditions| {
                    conditions
                        .iter()
                        .all(|(name, matcher)| header(name).is_some_and(|v| matcher.matches(v)))
                });
            if holds {
                return Some((route, index));
            }
        }
    }
    None
}

/// Picks a backend of `rule` by weight, among the lowest priority that has weight; `roll` is a
/// uniform random number in `[0, 1)`.
pub fn pick(backends: &[(Arc<Backend>, u32, u32)], roll: f64) -> Option<&Arc<Backend>> {
    let priority = backends
        .iter()
        .filter(|(_, w, _)| *w > 0)
        .map(|(_, _, p)| *p)
        .min()?;
    let tier: Vec<&(Arc<Backend>, u32, u32)> = backends
        .iter()
        .filter(|(_, w, p)| *w > 0 && *p == priority)
        .collect();
    let total: u64 = tier.iter().map(|(_, w, _)| u64::from(*w)).sum();
    let mut target = (roll.clamp(0.0, 1.0) * total as f64) as u64;
    for (backend, weight, _) in &tier {
        if target < u64::from(*weight) {
            return Some(backend);
        }
        target -= u64::from(*weight);
    }
    tier.last().map(|(b, _, _)| b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Matcher, Rule};
    use aigw_filterconfig as fc;

    fn backend(name: &str) -> Arc<Backend> {
        Arc::new(Backend {
            spec: fc::Backend {
                name: name.into(),
                service_backend: format!("ns/{name}"),
                schema: fc::BackendSchema {
                    name: fc::ApiSchema::OpenAI,
                    version: None,
                    prefix: Some("v1".into()),
                },
                model_name_override: None,
                upstream_host: None,
                auth: None,
                header_mutation: None,
                body_mutation: None,
            },
            auth: None,
        })
    }

    fn route(name: &str, hosts: &[&str], model: Option<&str>) -> Route {
        Route {
            name: name.into(),
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            rules: vec![Rule {
                matches: model
                    .map(|m| {
                        vec![vec![(
                            "x-ai-eg-model".to_string(),
                            Matcher::Exact(m.into()),
                        )]]
                    })
                    .unwrap_or_default(),
                backends: vec![(backend(name), 1, 0)],
            }],
            costs: vec![],
            models: vec![],
        }
    }

    fn config(routes: Vec<Route>) -> RuntimeConfig {
        RuntimeConfig {
            max_request_body_bytes: 1,
            routes,
            global_costs: vec![],
            files: vec![],
            has_costs: false,
            known_models: Default::default(),
        }
    }

    #[test]
    fn exact_hosts_win_over_wildcards_and_unscoped_routes() {
        let c = config(vec![
            route("any", &[], None),
            route("wild", &["*.example.com"], None),
            route("longer", &["*.a.example.com"], None),
            route("exact", &["x.a.example.com"], None),
        ]);
        let names = |host: &str| {
            candidates(&c, host)
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("x.a.example.com"), ["exact"]);
        assert_eq!(names("y.a.example.com"), ["longer"]);
        assert_eq!(names("b.example.com"), ["wild"]);
        assert_eq!(names("other.org"), ["any"]);
    }

    #[test]
    fn first_matching_rule_wins() {
        let c = config(vec![route("a", &[], Some("gpt-4o")), route("b", &[], None)]);
        let found = select(&c, "h", |name| {
            (name == "x-ai-eg-model").then_some("gpt-4o")
        })
        .map(|(r, _)| r.name.as_str());
        assert_eq!(found, Some("a"));
        let found = select(&c, "h", |name| (name == "x-ai-eg-model").then_some("other"))
            .map(|(r, _)| r.name.as_str());
        assert_eq!(found, Some("b"));
    }

    #[test]
    fn weights_and_priorities() {
        let b = vec![
            (backend("a"), 3, 0),
            (backend("b"), 1, 0),
            (backend("c"), 5, 1),
            (backend("z"), 0, 0),
        ];
        assert_eq!(pick(&b, 0.0).map(|x| x.spec.name.as_str()), Some("a"));
        assert_eq!(pick(&b, 0.74).map(|x| x.spec.name.as_str()), Some("a"));
        assert_eq!(pick(&b, 0.76).map(|x| x.spec.name.as_str()), Some("b"));
        assert_eq!(pick(&b, 0.999).map(|x| x.spec.name.as_str()), Some("b"));
        let fallback = vec![(backend("a"), 0, 0), (backend("c"), 5, 1)];
        assert_eq!(
            pick(&fallback, 0.5).map(|x| x.spec.name.as_str()),
            Some("c")
        );
        assert!(pick(&[(backend("a"), 0, 0)], 0.5).is_none());
    }
}
