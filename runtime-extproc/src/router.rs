//! Route and backend selection: which AIGatewayRoute serves a request (by host, as Gateway API
//! orders hostnames), which of its rules matches first, and which backend of that rule to use
//! (by weight, within the most preferred priority that has any weight).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Backend, Matcher, Route, Rule, RuntimeConfig};
use aigw_filterconfig::MODEL_HEADER;

/// Where each request's route and rule are looked up, built once per configuration so the cost
/// of a request does not grow with the number of routes: routes are grouped by the hostnames
/// they serve, and within a group rules that only match exact models are indexed by model.
#[derive(Debug, Default)]
pub struct RouteIndex {
    /// Routes listing a hostname exactly.
    exact: HashMap<String, HostGroup>,
    /// Routes listing a wildcard, by its suffix (`*.example.com` under `.example.com`).
    wildcard: HashMap<String, HostGroup>,
    /// Routes without hostnames.
    unscoped: HostGroup,
}

/// The routes that may serve one class of hosts, and their rules.
#[derive(Debug, Default)]
struct HostGroup {
    /// Route indices, in configuration (namespace/name) order.
    routes: Vec<usize>,
    /// `(route, rule)` of rules that match only the given exact models, in order.
    by_model: HashMap<String, Vec<(usize, usize)>>,
    /// `(route, rule)` of rules that may match any model (no matches, regular expressions, or
    /// conditions on other headers only), in order.
    general: Vec<(usize, usize)>,
}

impl HostGroup {
    fn add(&mut self, route_index: usize, route: &Route) {
        self.routes.push(route_index);
        for (rule_index, rule) in route.rules.iter().enumerate() {
            match exact_models(rule) {
                Some(models) => {
                    for model in models {
                        let list = self.by_model.entry(model.to_string()).or_default();
                        if list.last() != Some(&(route_index, rule_index)) {
                            list.push((route_index, rule_index));
                        }
                    }
                }
                None => self.general.push((route_index, rule_index)),
            }
        }
    }
}

/// The models a rule can match when every alternative requires an exact `x-ai-eg-model`;
/// `None` when some alternative could match any model.
fn exact_models(rule: &Rule) -> Option<Vec<&str>> {
    if rule.matches.is_empty() {
        return None;
    }
    rule.matches
        .iter()
        .map(|conditions| {
            conditions.iter().find_map(|(name, matcher)| match matcher {
                Matcher::Exact(model) if name == MODEL_HEADER => Some(model.as_str()),
                _ => None,
            })
        })
        .collect()
}

impl RouteIndex {
    /// Indexes `routes` (in their order).
    pub fn new(routes: &[Route]) -> Self {
        let mut index = RouteIndex::default();
        for (i, route) in routes.iter().enumerate() {
            if route.hostnames.is_empty() {
                index.unscoped.add(i, route);
            }
            let mut seen: Vec<&str> = Vec::new();
            for host in &route.hostnames {
                if seen.contains(&host.as_str()) {
                    continue;
                }
                seen.push(host);
                let group = match host.strip_prefix('*') {
                    Some(suffix) => index.wildcard.entry(suffix.to_string()).or_default(),
                    None => index.exact.entry(host.clone()).or_default(),
                };
                group.add(i, route);
            }
        }
        index
    }

    /// The group serving `host`: the routes listing it exactly; else those with the longest
    /// wildcard matching it (`*.example.com` matches `a.example.com` and `a.b.example.com`);
    /// else those without hostnames.
    fn group(&self, host: &str) -> &HostGroup {
        if let Some(group) = self.exact.get(host) {
            return group;
        }
        if !self.wildcard.is_empty() {
            for (position, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(group) = self.wildcard.get(&host[position..]) {
                    return group;
                }
            }
        }
        &self.unscoped
    }
}

/// The routes that may serve `host`, as Gateway API orders hostnames (see
/// [`RouteIndex::group`]), in namespace/name order.
pub fn candidates<'a>(config: &'a RuntimeConfig, host: &str) -> impl Iterator<Item = &'a Route> {
    config
        .index()
        .group(host)
        .routes
        .iter()
        .filter_map(|&i| config.routes.get(i))
}

/// Finds the first rule, in route then rule order, whose matches hold for a request asking for
/// `model`; returns `(route index, rule index)`. `header` looks request headers up by
/// lower-case name (`x-ai-eg-model` included).
pub fn select<'a>(
    config: &RuntimeConfig,
    host: &str,
    model: &str,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Option<(usize, usize)> {
    let group = config.index().group(host);
    let exact = group.by_model.get(model).map_or(&[][..], Vec::as_slice);
    let (mut a, mut b) = (exact.iter().peekable(), group.general.iter().peekable());
    loop {
        // Merge the two ordered lists: the earlier rule is tried first.
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x <= y => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => return None,
        };
        let &(route, rule) = next?;
        let Some(found) = config.routes.get(route).and_then(|r| r.rules.get(rule)) else {
            continue;
        };
        if holds(found, &header) {
            return Some((route, rule));
        }
    }
}

fn holds<'a>(rule: &Rule, header: &impl Fn(&str) -> Option<&'a str>) -> bool {
    rule.matches.is_empty()
        || rule.matches.iter().any(|conditions| {
            conditions
                .iter()
                .all(|(name, matcher)| header(name).is_some_and(|v| matcher.matches(v)))
        })
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
                cluster: None,
                authority: None,
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
            index: Default::default(),
            localities: Default::default(),
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
        let name = |model: &str| {
            select(&c, "h", model, |name| {
                (name == "x-ai-eg-model").then_some(model)
            })
            .map(|(r, _)| c.routes[r].name.clone())
        };
        assert_eq!(name("gpt-4o").as_deref(), Some("a"));
        assert_eq!(name("other").as_deref(), Some("b"));
    }

    /// The selection as written down (every candidate route, every rule, in order), to hold the
    /// index against.
    fn naive(c: &RuntimeConfig, host: &str, headers: &[(&str, &str)]) -> Option<(usize, usize)> {
        let header = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let serves = |r: &Route| r.hostnames.iter().any(|h| h == host);
        let wildcard = |r: &Route| {
            r.hostnames
                .iter()
                .filter_map(|h| h.strip_prefix('*'))
                .filter(|s| host.len() > s.len() && host.ends_with(s))
                .map(str::len)
                .max()
        };
        let best = c.routes.iter().filter_map(wildcard).max();
        let routes: Vec<usize> = if c.routes.iter().any(serves) {
            (0..c.routes.len())
                .filter(|&i| serves(&c.routes[i]))
                .collect()
        } else if let Some(best) = best {
            (0..c.routes.len())
                .filter(|&i| wildcard(&c.routes[i]) == Some(best))
                .collect()
        } else {
            (0..c.routes.len())
                .filter(|&i| c.routes[i].hostnames.is_empty())
                .collect()
        };
        for i in routes {
            for (j, rule) in c.routes[i].rules.iter().enumerate() {
                if holds(rule, &header) {
                    return Some((i, j));
                }
            }
        }
        None
    }

    #[test]
    fn the_index_selects_what_a_full_scan_selects() {
        let models = ["a", "b", "c", "oa-x"];
        let hosts = [
            "x.example.com",
            "y.a.example.com",
            "other.org",
            "a.example.com",
        ];
        let host_sets: [&[&str]; 5] = [
            &[],
            &["x.example.com"],
            &["*.example.com"],
            &["*.a.example.com", "x.example.com"],
            &["other.org", "*.example.com"],
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let prefix = regex::Regex::new("^(?:oa-.*)$").unwrap();
        for _ in 0..300 {
            let mut routes = Vec::new();
            for r in 0..rng.usize(1..8) {
                let mut rules = Vec::new();
                for _ in 0..rng.usize(1..4) {
                    let matches = (0..rng.usize(0..3))
                        .map(|_| {
                            let mut conditions = Vec::new();
                            match rng.u8(0..4) {
                                0 => conditions.push((
                                    "x-ai-eg-model".to_string(),
                                    Matcher::Exact(models[rng.usize(0..models.len())].into()),
                                )),
                                1 => conditions.push((
                                    "x-ai-eg-model".to_string(),
                                    Matcher::Regex(prefix.clone()),
                                )),
                                2 => conditions.push((
                                    "x-ai-eg-model".to_string(),
                                    Matcher::Exact(models[rng.usize(0..models.len())].into()),
                                )),
                                _ => {}
                            }
                            if rng.bool() {
                                conditions.push((
                                    "x-tenant".to_string(),
                                    Matcher::Exact(["t1", "t2"][rng.usize(0..2)].into()),
                                ));
                            }
                            conditions
                        })
                        .collect();
                    rules.push(Rule {
                        cluster: None,
                        authority: None,
                        matches,
                        backends: vec![(backend("b"), 1, 0)],
                    });
                }
                let mut route = route(
                    &format!("r{r}"),
                    host_sets[rng.usize(0..host_sets.len())],
                    None,
                );
                route.rules = rules;
                routes.push(route);
            }
            let c = config(routes);
            for host in hosts {
                for model in models {
                    for tenant in ["t1", "t2"] {
                        let headers = [("x-ai-eg-model", model), ("x-tenant", tenant)];
                        let header =
                            |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
                        assert_eq!(
                            select(&c, host, model, header),
                            naive(&c, host, &headers),
                            "{host} {model} {tenant}: {:#?}",
                            c.routes
                        );
                    }
                }
            }
        }
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
