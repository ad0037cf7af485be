//! An in-memory rate-limit service for one machine: the configuration format, descriptor
//! matching and fixed windows of envoyproxy/ratelimit, the service Envoy Gateway configures
//! for its global rate limits, so that token budgets can be tried with `aigw run`.
//!
//! Mirrored from envoyproxy/ratelimit (`src/config/config_impl.go` `GetLimit`,
//! `src/limiter/base_limiter.go`, `src/limiter/cache_key.go`):
//! - The configuration is one YAML document per domain: `domain`, then a tree of
//!   `descriptors`, each with a `key`, an optional `value`, an optional `rate_limit`
//!   (`requests_per_unit` and `unit`, or `unlimited`), `shadow_mode` and nested `descriptors`.
//!   Unknown fields, an empty key, a duplicate key and value at one level, a bad unit and a unit
//!   with `unlimited` are errors.
//! - A request descriptor's entries are walked from the top: at each level the entry matches
//!   the child `key_value`, else a child whose key ends with `*` and prefixes `key_value`, else
//!   the child `key` (any value; each value then counts on its own). A limit applies only when
//!   it sits at the level of the descriptor's last entry.
//! - Counting is a fixed window aligned to the unit (`now / unit * unit`), one counter per
//!   domain, entries and window. A request adds its hits first (the descriptor's own
//!   `hits_addend` when set, else the request's, where 0 means 1); it is over the limit when
//!   the count after adding exceeds `requests_per_unit`. So a response cost charged when a
//!   stream ends (hits added, the answer already sent) refuses the next request once the
//!   budget is spent.
//! - The answer is `OVER_LIMIT` when any descriptor is over a limit that is not in shadow mode;
//!   a shadow-mode limit still counts, and its descriptor reports `OK`.
//!
//! Nothing a client sends may grow memory without bound: distinct values (a `Distinct` header
//! selector) each make a counter, so counters are capped ([`MAX_COUNTERS`]); when the cap is
//! reached, counters of ended windows are dropped first, and a new counter that still finds no
//! room is not kept: that request is not counted (reported by [`Decision::uncounted`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit as PbUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit as PbRateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};

use serde::Deserialize;
use thiserror::Error;

use crate::metrics::{Metrics, RateLimitLabels, RateLimitRequestLabels};

/// The most counters held at once.
pub const MAX_COUNTERS: usize = 200_000;

/// A configuration that cannot be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The YAML does not parse or has unknown fields.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// A descriptor is invalid.
    #[error("{file}: descriptor {key}: {message}")]
    Descriptor {
        /// The file.
        file: String,
        /// The full key of the descriptor (`domain.key_value.key`).
        key: String,
        /// What went wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlRoot {
    /// Envoy Gateway writes the domain here too; envoyproxy/ratelimit ignores it.
    #[serde(default)]
    #[allow(dead_code, reason = "accepted as envoyproxy/ratelimit accepts it")]
    name: String,
    domain: String,
    #[serde(default)]
    descriptors: Vec<YamlDescriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlDescriptor {
    key: String,
    #[serde(default)]
    value: String,
    rate_limit: Option<YamlRateLimit>,
    #[serde(default)]
    descriptors: Vec<YamlDescriptor>,
    #[serde(default)]
    shadow_mode: bool,
    #[serde(default)]
    detailed_metric: bool,
    #[serde(default)]
    value_to_metric: bool,
    #[serde(default)]
    share_threshold: bool,
    #[serde(default)]
    quota_mode: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlRateLimit {
    #[serde(default)]
    requests_per_unit: u32,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    name: String,
    #[serde(default)]
    replaces: Vec<YamlReplaces>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlReplaces {
    #[allow(dead_code, reason = "accepted as envoyproxy/ratelimit accepts it")]
    name: String,
}

/// The unit of a limit's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// One second.
    Second,
    /// 60 seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds.
    Day,
    /// 7 days.
    Week,
    /// 30 days.
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    fn parse(text: &str) -> Option<Unit> {
        Some(match text.to_ascii_uppercase().as_str() {
            "SECOND" => Unit::Second,
            "MINUTE" => Unit::Minute,
            "HOUR" => Unit::Hour,
            "DAY" => Unit::Day,
            "WEEK" => Unit::Week,
            "MONTH" => Unit::Month,
            "YEAR" => Unit::Year,
            _ => return None,
        })
    }

    /// The window length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }
}

/// A configured limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// `domain.key_value.key...`, as the service names it in its statistics.
    pub full_key: String,
    /// Hits per window.
    pub requests_per_unit: u32,
    /// The window.
    pub unit: Unit,
    /// Never over the limit (nothing is counted).
    pub unlimited: bool,
    /// Counted, never refused.
    pub shadow_mode: bool,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    /// Children whose key ends with `*`, in configuration order.
    wildcards: Vec<String>,
    limit: Option<Limit>,
}

impl Node {
    fn load(
        &mut self,
        file: &str,
        parent: &str,
        descriptors: Vec<YamlDescriptor>,
    ) -> Result<(), ConfigError> {
        for descriptor in descriptors {
            let fail = |key: &str, message: &str| ConfigError::Descriptor {
                file: file.to_string(),
                key: key.to_string(),
                message: message.to_string(),
            };
            if descriptor.key.is_empty() {
                return Err(fail(parent, "a descriptor has an empty key"));
            }
            let mut name = descriptor.key.clone();
            if !descriptor.value.is_empty() {
                name = format!("{name}_{}", descriptor.value);
            }
            let full_key = format!("{parent}{name}");
            if self.children.contains_key(&name) {
                return Err(fail(&full_key, "duplicate descriptor key and value"));
            }
            let limit = match descriptor.rate_limit {
                None => None,
                Some(rate) => {
                    let unit = Unit::parse(&rate.unit);
                    if rate.unlimited && unit.is_some() {
                        return Err(fail(&full_key, "an unlimited limit takes no unit"));
                    }
                    if !rate.unlimited && unit.is_none() {
                        return Err(fail(
                            &full_key,
                            &format!("invalid rate limit unit {:?}", rate.unit),
                        ));
                    }
                    if rate
                        .replaces
                        .iter()
                        .any(|r| r.name.is_empty() || r.name == rate.name)
                    {
                        return Err(fail(&full_key, "invalid replaces entry"));
                    }
                    Some(Limit {
                        full_key: full_key.clone(),
                        requests_per_unit: rate.requests_per_unit,
                        unit: unit.unwrap_or(Unit::Second),
                        unlimited: rate.unlimited,
                        shadow_mode: descriptor.shadow_mode,
                    })
                }
            };
            // Metrics options only: the counts are the same.
            let _ = (descriptor.detailed_metric, descriptor.value_to_metric);
            if descriptor.quota_mode {
                return Err(fail(
                    &full_key,
                    "quota_mode (allowed while any quota descriptor has room) is not supported",
                ));
            }
            if descriptor.share_threshold {
                return Err(fail(
                    &full_key,
                    "share_threshold (one counter for every value a wildcard matches) is not supported",
                ));
            }
            let mut node = Node {
                limit,
                ..Node::default()
            };
            node.load(file, &format!("{full_key}."), descriptor.descriptors)?;
            if name.ends_with('*') {
                self.wildcards.push(name.clone());
            }
            self.children.insert(name, node);
        }
        Ok(())
    }
}

/// The limits of every domain.
#[derive(Debug, Default)]
pub struct Config {
    domains: HashMap<String, Node>,
}

impl Config {
    /// Loads `(file name, YAML text)` pairs, one domain each.
    pub fn load(files: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (file, text) in files {
            let root: YamlRoot =
                serde_saphyr::from_str(text).map_err(|err| ConfigError::Parse {
                    file: file.clone(),
                    message: err.to_string(),
                })?;
            if root.domain.is_empty() {
                return Err(ConfigError::Parse {
                    file: file.clone(),
                    message: "the domain is empty".into(),
                });
            }
            if config.domains.contains_key(&root.domain) {
                return Err(ConfigError::Parse {
                    file: file.clone(),
                    message: format!("domain {:?} is configured twice", root.domain),
                });
            }
            let mut node = Node::default();
            node.load(file, &format!("{}.", root.domain), root.descriptors)?;
            config.domains.insert(root.domain, node);
        }
        Ok(config)
    }

    /// The limit a descriptor of `domain` falls under, as envoyproxy/ratelimit finds it.
    pub fn limit(&self, domain: &str, entries: &[(String, String)]) -> Option<&Limit> {
        let mut node = self.domains.get(domain)?;
        let mut found = None;
        for (i, (key, value)) in entries.iter().enumerate() {
            let key_value = format!("{key}_{value}");
            let next = node
                .children
                .get(&key_value)
                .or_else(|| {
                    node.wildcards
                        .iter()
                        .find(|w| key_value.starts_with(w.trim_end_matches('*')))
                        .and_then(|w| node.children.get(w))
                })
                .or_else(|| node.children.get(key));
            let Some(next) = next else {
                break;
            };
            if i + 1 == entries.len() {
                found = next.limit.as_ref();
            }
            if next.children.is_empty() {
                break;
            }
            node = next;
        }
        found
    }
}

/// One descriptor of a request: its entries, and its own hits when set.
#[derive(Debug, Clone)]
pub struct Descriptor {
    /// `(key, value)` entries.
    pub entries: Vec<(String, String)>,
    /// The descriptor's `hits_addend`, overriding the request's.
    pub hits: Option<u64>,
}

/// The status of one descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Over a limit that is not in shadow mode.
    pub over_limit: bool,
    /// Over a limit in shadow mode (counted, not refused).
    pub shadow_over_limit: bool,
    /// Not counted: the counters were full.
    pub uncounted: bool,
    /// The limit it fell under, if any.
    pub limit: Option<Limit>,
    /// Hits left in the window (0 when over).
    pub remaining: u64,
    /// Seconds until the window ends.
    pub reset_seconds: u64,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Any descriptor over a limit that is not in shadow mode.
    pub over_limit: bool,
    /// One per descriptor, in order.
    pub statuses: Vec<Status>,
    /// Descriptors that were not counted because the counters were full.
    pub uncounted: usize,
    /// Descriptors over a shadow-mode limit (counted, not refused).
    pub shadow_over_limit: usize,
}

/// Fixed-window counters.
#[derive(Debug, Default)]
pub struct Limiter {
    state: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Counter key to (hits, end of its window).
    map: HashMap<String, (u64, u64)>,
    /// The earliest end of a window held: before it, dropping ended windows finds nothing.
    next_end: u64,
}

impl Limiter {
    /// Counts `descriptors` of `domain` at `now` (Unix seconds) with the request's
    /// `hits_addend` (0 means 1).
    pub fn check(
        &self,
        config: &Config,
        domain: &str,
        descriptors: &[Descriptor],
        hits_addend: u32,
        now: u64,
    ) -> Decision {
        let request_hits = u64::from(hits_addend.max(1));
        let mut decision = Decision {
            over_limit: false,
            statuses: Vec::with_capacity(descriptors.len()),
            uncounted: 0,
            shadow_over_limit: 0,
        };
        let mut guard = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let state = &mut *guard;
        for descriptor in descriptors {
            let Some(limit) = config
                .limit(domain, &descriptor.entries)
                .filter(|l| !l.unlimited)
            else {
                decision.statuses.push(Status {
                    over_limit: false,
                    shadow_over_limit: false,
                    uncounted: false,
                    limit: None,
                    remaining: 0,
                    reset_seconds: 0,
                });
                continue;
            };
            let hits = descriptor.hits.unwrap_or(request_hits);
            let window = limit.unit.seconds();
            let start = now / window * window;
            let mut key = String::from(domain);
            key.push('_');
            for (k, v) in &descriptor.entries {
                key.push_str(k);
                key.push('_');
                key.push_str(v);
                key.push('_');
            }
            key.push_str(&start.to_string());
            let end = start + window;
            if state.map.len() >= MAX_COUNTERS
                && now >= state.next_end
                && !state.map.contains_key(&key)
            {
                state.map.retain(|_, (_, window_end)| *window_end > now);
                state.next_end = state.map.values().map(|(_, e)| *e).min().unwrap_or(0);
            }
            let mut uncounted = false;
            let after = if let Some((count, _)) = state.map.get_mut(&key) {
                *count = count.saturating_add(hits);
                *count
            } else if state.map.len() < MAX_COUNTERS {
                if state.map.is_empty() || end < state.next_end {
                    state.next_end = end;
                }
                state.map.insert(key, (hits, end));
                hits
            } else {
                decision.uncounted += 1;
                uncounted = true;
                hits
            };
            let limit_value = u64::from(limit.requests_per_unit);
            let over = after > limit_value;
            if over && limit.shadow_mode {
                decision.shadow_over_limit += 1;
            }
            let refused = over && !limit.shadow_mode;
            decision.over_limit |= refused;
            decision.statuses.push(Status {
                over_limit: refused,
                shadow_over_limit: over && limit.shadow_mode,
                uncounted,
                limit: Some(limit.clone()),
                remaining: limit_value.saturating_sub(after),
                reset_seconds: end - now,
            });
        }
        decision
    }

    /// Counters held now.
    pub fn len(&self) -> usize {
        self.state.lock().map_or(0, |c| c.map.len())
    }

    /// No counters held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Unit {
    fn proto(self) -> PbUnit {
        match self {
            Unit::Second => PbUnit::Second,
            Unit::Minute => PbUnit::Minute,
            Unit::Hour => PbUnit::Hour,
            Unit::Day => PbUnit::Day,
            Unit::Week => PbUnit::Week,
            Unit::Month => PbUnit::Month,
            Unit::Year => PbUnit::Year,
        }
    }
}

/// The `envoy.service.ratelimit.v3.RateLimitService` over a [`Config`] and a [`Limiter`].
pub struct Service {
    config: Arc<Config>,
    limiter: Limiter,
    metrics: Arc<Metrics>,
}

impl Service {
    /// A service answering from `config`, with no counts yet, counting its answers in
    /// `metrics`.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Self {
        Service {
            config: Arc::new(config),
            limiter: Limiter::default(),
            metrics,
        }
    }

    /// The answer to `request` at `now` (Unix seconds).
    pub fn respond(&self, request: &RateLimitRequest, now: u64) -> RateLimitResponse {
        let descriptors: Vec<Descriptor> = request
            .descriptors
            .iter()
            .map(|d| Descriptor {
                entries: d
                    .entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect(),
                hits: d.hits_addend.map(|h| h.value),
            })
            .collect();
        let decision = self.limiter.check(
            &self.config,
            &request.domain,
            &descriptors,
            request.hits_addend,
            now,
        );
        for status in &decision.statuses {
            let Some(limit) = &status.limit else {
                continue;
            };
            let result = if status.uncounted {
                "uncounted"
            } else if status.over_limit {
                "over_limit"
            } else if status.shadow_over_limit {
                "shadow_over_limit"
            } else {
                "ok"
            };
            self.metrics
                .rate_limits
                .get_or_create(&RateLimitLabels {
                    limit: limit.full_key.clone(),
                    result,
                })
                .inc();
        }
        let domain = if self.config.domains.contains_key(&request.domain) {
            request.domain.clone()
        } else {
            "unknown".to_string()
        };
        self.metrics
            .rate_limit_requests
            .get_or_create(&RateLimitRequestLabels {
                domain,
                code: if decision.over_limit {
                    "over_limit"
                } else {
                    "ok"
                },
            })
            .inc();
        let code = |over: bool| if over { Code::OverLimit } else { Code::Ok } as i32;
        RateLimitResponse {
            overall_code: code(decision.over_limit),
            statuses: decision
                .statuses
                .iter()
                .map(|status| DescriptorStatus {
                    code: code(status.over_limit),
                    current_limit: status.limit.as_ref().map(|l| PbRateLimit {
                        name: String::new(),
                        requests_per_unit: l.requests_per_unit,
                        unit: l.unit.proto() as i32,
                    }),
                    limit_remaining: u32::try_from(status.remaining).unwrap_or(u32::MAX),
                    duration_until_reset: status.limit.as_ref().map(|_| {
                        envoy_types::pb::google::protobuf::Duration {
                            seconds: i64::try_from(status.reset_seconds).unwrap_or(i64::MAX),
                            nanos: 0,
                        }
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(tonic::Response::new(self.respond(request.get_ref(), now)))
    }
}

#[cfg(test)]
mod tests;
