//! BackendTrafficPolicy global rate limits for the standalone target, translated as Envoy
//! Gateway v1.8 translates them, plus the configuration Envoy Gateway writes for its rate-limit
//! service (envoyproxy/ratelimit), which `aigw-extproc --ratelimit-config` serves in memory.
//!
//! Mirrored from envoyproxy/gateway v1.8.3:
//! - `internal/gatewayapi/backendtrafficpolicy.go` (`buildGlobalRateLimit`,
//!   `buildRateLimitRule`, `translateRateLimitCost`): rule `i` of policy `ns/name` is named
//!   `ns/name/rule/i`; a header selector without a type is `Exact`; `Distinct` takes no value and
//!   no `invert`; a `PathPrefix` other than `/` becomes the path-separated-prefix regular
//!   expression; a selector must name a header, method, path, source CIDR or query parameter; a
//!   request or response cost is a number or `%DYNAMIC_METADATA(namespace:key)%`.
//! - `internal/xds/translator/ratelimit.go`:
//!   - The HTTP connection manager of a listener with rate-limited routes gets one
//!     `envoy.filters.http.ratelimit` filter for the listener's domain
//!     (`<gateway ns>/<gateway>/<listener>`) and one `envoy.filters.http.ratelimit/<ns>/<policy>`
//!     per policy with `shared` rules, in domain order. Each calls cluster `ratelimit_cluster`,
//!     with `x-envoy-ratelimited` off, the draft-03 `x-ratelimit-*` headers, and fails open
//!     (Envoy Gateway's `failClosed: false`).
//!   - Every route gets a `RateLimitPerRoute` per domain in `typed_per_filter_config`. A rule's
//!     actions are a `generic_key` naming the route (or, when shared, the rule), then one action
//!     per header (`request_headers` for `Distinct`, else `header_value_match` with
//!     `expect_match` false when inverted), method, path, source CIDR and query parameter, or a
//!     `generic_key` `rule-<i>-match--1` when the rule selects everything. Several methods make
//!     one rate limit each. The request cost is the `hits_addend`; a response cost adds the same
//!     actions again with `apply_on_stream_done`, so both count on one counter.
//!   - The service's descriptors: per domain, a descriptor keyed by the route (or the shared
//!     rule), under it one chain per rule (`rule-<i>-match-<j>`, `-method`, `-path`,
//!     `masked_remote_address` / `remote_address`, query parameters), the limit on the last link,
//!     `shadow_mode` on every link. Rule indices count the shared and the other rules apart.
//!
//! - `internal/gatewayapi/backendtrafficpolicy.go` (`buildLocalRateLimit`) and
//!   `internal/xds/translator/local_ratelimit.go`: `rateLimit.local` takes its default bucket
//!   from the one rule without client selectors (at most one; else 4294967295 a second), every
//!   rule's unit must be a multiple of the default's, and the other rules become descriptors.
//!   The HTTP connection manager gets `envoy.filters.http.local_ratelimit` (stat prefix
//!   `http_local_rate_limiter`, at most 10,000 dynamic descriptors) before the global rate-limit
//!   filters; each route a `LocalRateLimit` with the default token bucket, filter enabled and
//!   enforced at 100%, the draft-03 headers unless the default rule turns them off, one
//!   descriptor and rate limit per rule and method (the same actions as the global ones, without
//!   the route's key, source CIDRs keyed `rule-<i>-masked-remote-address` and
//!   `rule-<i>-remote-address`), and `always_consume_default_token_bucket` false.
//!
//! Deliberate differences: the service's domains are written sorted (Envoy Gateway's order
//! comes from a Go map), and `ratelimit_cluster` is the Unix socket of the local service.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::envoy::{items, text, typed};

/// The rate-limit filter's name.
pub const FILTER: &str = "envoy.filters.http.ratelimit";
/// The local rate-limit filter's name.
pub const LOCAL_FILTER: &str = "envoy.filters.http.local_ratelimit";
const LOCAL_TYPE: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const LOCAL_STAT_PREFIX: &str = "http_local_rate_limiter";
/// The cluster of the rate-limit service, as Envoy Gateway names it.
pub const CLUSTER: &str = "ratelimit_cluster";
const PER_ROUTE: &str = "envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute";

/// How a selector matches a value.
#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Exact(String),
    Regex(String),
    Prefix(String),
    /// Any value, each value its own counter.
    Distinct,
}

impl Matcher {
    fn string_match(&self) -> Value {
        match self {
            Matcher::Exact(v) => json!({"exact": v}),
            Matcher::Regex(v) => json!({"safe_regex": {"regex": v}}),
            Matcher::Prefix(v) => json!({"prefix": v}),
            Matcher::Distinct => json!({}),
        }
    }
}

/// A condition on a named header or query parameter.
#[derive(Debug, Clone, PartialEq)]
struct Selector {
    name: String,
    matcher: Matcher,
    invert: bool,
}

/// A source CIDR condition.
#[derive(Debug, Clone, PartialEq)]
struct Cidr {
    cidr: String,
    prefix: String,
    len: u32,
    distinct: bool,
    invert: bool,
}

/// A request or response cost: a number, or a format such as `%DYNAMIC_METADATA(ns:key)%`.
#[derive(Debug, Clone, PartialEq)]
struct Cost {
    number: Option<u64>,
    format: Option<String>,
}

impl Cost {
    fn to_envoy(&self) -> Value {
        let mut out = Map::new();
        if let Some(n) = self.number {
            out.insert("number".into(), json!(n));
        }
        if let Some(f) = &self.format {
            out.insert("format".into(), json!(f));
        }
        Value::Object(out)
    }
}

/// One rule of a BackendTrafficPolicy's `rateLimit.global` (Envoy Gateway's IR rule).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `<ns>/<policy>/rule/<index>`.
    name: String,
    requests: u64,
    unit: String,
    headers: Vec<Selector>,
    methods: Vec<Selector>,
    path: Option<Selector>,
    cidr: Option<Cidr>,
    query: Vec<Selector>,
    request_cost: Option<Cost>,
    response_cost: Option<Cost>,
    shared: bool,
    shadow: bool,
    /// `OFF` or `DRAFT_VERSION_03`, when the rule overrides the listener's choice.
    x_ratelimit: Option<&'static str>,
    /// The limit from dynamic metadata (namespace, key).
    limit_from: Option<(String, String)>,
}

impl Rule {
    fn matches_anything(&self) -> bool {
        self.headers.is_empty()
            && self.methods.is_empty()
            && self.path.is_none()
            && self.cidr.is_none()
            && self.query.is_empty()
    }

    /// The domain of the rule on a listener: its policy's when shared, else the listener's.
    fn domain(&self, listener: &str) -> String {
        if self.shared {
            strip_rule_index(&self.name)
        } else {
            listener.to_string()
        }
    }
}

/// `stripRuleIndexSuffix`: the policy part of a rule name.
fn strip_rule_index(name: &str) -> String {
    match name.rfind("/rule/") {
        Some(i) => name[..i].to_string(),
        None => name.replacen('/', "-", 1),
    }
}

/// Go's `regexp.QuoteMeta`.
fn quote_meta(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Envoy Gateway's path-separated prefix as a regular expression (`regex.PathSeparatedPrefixRegex`).
fn path_separated_prefix_regex(prefix: &str) -> String {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    format!("^{}(/.*|\\?.*|#.*|;.*|$)", quote_meta(trimmed))
}

fn check_regex(value: &str) -> Result<(), String> {
    regex::Regex::new(value)
        .map(|_| ())
        .map_err(|err| format!("invalid regular expression {value:?}: {err}"))
}

/// The rules of a BackendTrafficPolicy's `spec.rateLimit` that the global rate-limit service
/// enforces (`global`, or the deprecated `type: Global`), or why Envoy Gateway refuses them.
pub fn global_rules(namespace: &str, name: &str, rate_limit: &Value) -> Result<Vec<Rule>, String> {
    let global = match text(rate_limit, "/type") {
        Some("Global") | None => rate_limit.get("global"),
        Some("Local") => None,
        Some(other) => return Err(format!("invalid rateLimit type: {other}")),
    };
    let Some(global) = global else {
        if text(rate_limit, "/type") == Some("Global") {
            return Err("global configuration empty for rateLimit".into());
        }
        return Ok(Vec::new());
    };
    items(global, "/rules")
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            rule_of(rule, format!("{namespace}/{name}/rule/{i}"))
                .map_err(|err| format!("rules[{i}]: {err}"))
        })
        .collect()
}

/// A BackendTrafficPolicy's `rateLimit.local`, as Envoy Gateway's IR holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalPolicy {
    default_requests: u64,
    default_unit: String,
    /// The default rule turns the `x-ratelimit-*` headers off.
    headers_off: bool,
    rules: Vec<Rule>,
}

/// The seconds of a rate-limit unit (`ratelimit.UnitToSeconds`).
fn unit_seconds(unit: &str) -> u64 {
    match unit {
        "Second" => 1,
        "Minute" => 60,
        "Hour" => 3_600,
        "Day" => 86_400,
        "Week" => 7 * 86_400,
        "Month" => 30 * 86_400,
        "Year" => 365 * 86_400,
        _ => 0,
    }
}

/// The local rate limit of a BackendTrafficPolicy's `spec.rateLimit` (`local`, or the
/// deprecated `type: Local`), or why Envoy Gateway refuses it.
pub fn local_policy(
    namespace: &str,
    name: &str,
    rate_limit: &Value,
) -> Result<Option<LocalPolicy>, String> {
    let local = match text(rate_limit, "/type") {
        Some("Local") | None => rate_limit.get("local"),
        _ => None,
    };
    let Some(local) = local else {
        if text(rate_limit, "/type") == Some("Local") {
            return Err("local configuration empty for rateLimit".into());
        }
        return Ok(None);
    };
    let rules = items(local, "/rules");
    let mut default: Option<(u64, String, bool)> = None;
    for rule in rules {
        if items(rule, "/clientSelectors").is_empty() {
            if default.is_some() {
                return Err(
                    "local rateLimit can not have more than one rule without clientSelectors"
                        .into(),
                );
            }
            default = Some((
                rule.pointer("/limit/requests")
                    .and_then(Value::as_u64)
                    .ok_or("limit.requests is missing")?,
                text(rule, "/limit/unit").unwrap_or("Second").to_string(),
                text(rule, "/xRateLimitHeaders") == Some("Disabled"),
            ));
        }
    }
    let (default_requests, default_unit, headers_off) =
        default.unwrap_or((u64::from(u32::MAX), "Second".into(), false));
    let default_seconds = unit_seconds(&default_unit);
    for rule in rules {
        let seconds = unit_seconds(text(rule, "/limit/unit").unwrap_or_default());
        if default_seconds == 0 || !seconds.is_multiple_of(default_seconds) {
            return Err(
                "local rateLimit rule limit unit must be a multiple of the default limit unit"
                    .into(),
            );
        }
    }
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if items(rule, "/clientSelectors").is_empty() {
            continue;
        }
        out.push(
            rule_of(rule, format!("{namespace}/{name}/rule/{i}"))
                .map_err(|err| format!("rules[{i}]: {err}"))?,
        );
    }
    Ok(Some(LocalPolicy {
        default_requests,
        default_unit,
        headers_off,
        rules: out,
    }))
}

fn token_bucket(requests: u64, unit: &str) -> Value {
    json!({
        "max_tokens": requests,
        "tokens_per_fill": requests,
        "fill_interval": format!("{}s", unit_seconds(unit)),
    })
}

/// The route's `typed_per_filter_config` entry for a local rate limit.
pub fn local_route_config(policy: &LocalPolicy) -> Value {
    let mut rate_limits = Vec::new();
    let mut descriptors = Vec::new();
    for (index, rule) in policy.rules.iter().enumerate() {
        let methods: Vec<Option<&Selector>> = if rule.methods.is_empty() {
            vec![None]
        } else {
            rule.methods.iter().map(Some).collect()
        };
        for method in methods {
            let mut actions = Vec::new();
            let mut entries = Vec::new();
            let mut both = |action: Value, key: String, value: Option<String>| {
                actions.push(action);
                let mut entry = json!({"key": key});
                if let Some(value) = value {
                    entry["value"] = json!(value);
                }
                entries.push(entry);
            };
            for (m, header) in rule.headers.iter().enumerate() {
                let key = rule_key(index, m as i64);
                if header.matcher == Matcher::Distinct {
                    both(
                        json!({"request_headers": {"header_name": header.name, "descriptor_key": key}}),
                        key,
                        None,
                    );
                } else {
                    both(
                        header_value_match(&key, &header.name, header),
                        key.clone(),
                        Some(key),
                    );
                }
            }
            // The method and the path, each matched on its pseudo-header.
            let pseudo = [("method", method), ("path", rule.path.as_ref())];
            for (name, selector) in pseudo {
                if let Some(selector) = selector {
                    let key = format!("rule-{index}-{name}");
                    let action = header_value_match(&key, &format!(":{name}"), selector);
                    both(action, key.clone(), Some(key));
                }
            }
            if let Some(cidr) = &rule.cidr {
                let masked = format!("rule-{index}-masked-remote-address");
                let value = cidr_value(cidr);
                both(
                    remote_address_match(&masked, &value, cidr),
                    masked,
                    Some(value),
                );
                if cidr.distinct {
                    let remote = format!("rule-{index}-remote-address");
                    both(
                        remote_address_match(&remote, DOWNSTREAM_ADDRESS, cidr),
                        remote,
                        None,
                    );
                }
            }
            let offset = rule.headers.len();
            for (m, query) in rule.query.iter().enumerate() {
                let key = rule_key(index, (offset + m) as i64);
                if query.matcher == Matcher::Distinct {
                    both(query_action(&key, query), key, None);
                } else {
                    both(query_action(&key, query), key.clone(), Some(key));
                }
            }
            let mut limit = json!({"actions": actions});
            if let Some(option) = rule.x_ratelimit {
                limit["x_ratelimit_option"] = json!(option);
            }
            rate_limits.push(limit);
            let mut descriptor = json!({
                "entries": entries,
                "token_bucket": token_bucket(rule.requests, &rule.unit),
            });
            if rule.shadow {
                descriptor["shadow_mode"] = json!(true);
            }
            descriptors.push(descriptor);
        }
    }
    let percent = json!({"default_value": {"numerator": 100, "denominator": "HUNDRED"}});
    let mut config = json!({
        "stat_prefix": LOCAL_STAT_PREFIX,
        "token_bucket": token_bucket(policy.default_requests, &policy.default_unit),
        "filter_enabled": percent,
        "filter_enforced": percent,
        "enable_x_ratelimit_headers": if policy.headers_off { "OFF" } else { "DRAFT_VERSION_03" },
        "always_consume_default_token_bucket": false,
    });
    if !descriptors.is_empty() {
        config["descriptors"] = json!(descriptors);
        config["rate_limits"] = json!(rate_limits);
    }
    typed(LOCAL_TYPE, config)
}

/// The local rate-limit filter of a listener's HTTP connection manager.
pub fn local_http_filter() -> Value {
    json!({
        "name": LOCAL_FILTER,
        "typed_config": typed(LOCAL_TYPE, json!({
            "stat_prefix": LOCAL_STAT_PREFIX,
            "max_dynamic_descriptors": 10_000,
        })),
    })
}

const DOWNSTREAM_ADDRESS: &str = "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%";

fn cidr_value(cidr: &Cidr) -> String {
    if cidr.invert {
        format!("invert:{}", cidr.cidr)
    } else {
        cidr.cidr.clone()
    }
}

fn remote_address_match(key: &str, value: &str, cidr: &Cidr) -> Value {
    json!({"remote_address_match": {
        "descriptor_key": key,
        "descriptor_value": value,
        "address_matcher": {
            "ranges": [{"address_prefix": cidr.prefix, "prefix_len": cidr.len}],
            "invert_match": cidr.invert,
        },
    }})
}

fn query_action(key: &str, query: &Selector) -> Value {
    if query.matcher == Matcher::Distinct {
        json!({"query_parameters": {"query_parameter_name": query.name, "descriptor_key": key}})
    } else {
        json!({"query_parameter_value_match": {
            "descriptor_key": key,
            "descriptor_value": key,
            "expect_match": !query.invert,
            "query_parameters": [{"name": query.name, "string_match": query.matcher.string_match()}],
        }})
    }
}

fn rule_of(rule: &Value, name: String) -> Result<Rule, String> {
    let requests = rule
        .pointer("/limit/requests")
        .and_then(Value::as_u64)
        .ok_or("limit.requests is missing")?;
    let unit = text(rule, "/limit/unit")
        .ok_or("limit.unit is missing")?
        .to_string();
    let mut out = Rule {
        name,
        requests,
        unit,
        headers: Vec::new(),
        methods: Vec::new(),
        path: None,
        cidr: None,
        query: Vec::new(),
        request_cost: None,
        response_cost: None,
        shared: rule.get("shared").and_then(Value::as_bool).unwrap_or(false),
        shadow: rule
            .get("shadowMode")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        x_ratelimit: match text(rule, "/xRateLimitHeaders") {
            Some("Disabled") => Some("OFF"),
            Some("DraftVersion03") => Some("DRAFT_VERSION_03"),
            _ => None,
        },
        limit_from: rule.pointer("/limit/fromMetadata").map(|m| {
            (
                text(m, "/namespace").unwrap_or_default().to_string(),
                text(m, "/key").unwrap_or_default().to_string(),
            )
        }),
    };
    for selector in items(rule, "/clientSelectors") {
        let empty = ["headers", "methods", "queryParams"]
            .iter()
            .all(|k| items(selector, &format!("/{k}")).is_empty())
            && selector.get("path").is_none()
            && selector.get("sourceCIDR").is_none();
        if empty {
            return Err("unable to translate rateLimit. At least one of the header or method or path or sourceCIDR or queryParameters must be specified".into());
        }
        for header in items(selector, "/headers") {
            out.headers.push(header_selector(header)?);
        }
        for method in items(selector, "/methods") {
            out.methods.push(Selector {
                name: ":method".into(),
                matcher: Matcher::Exact(text(method, "/value").unwrap_or_default().into()),
                invert: method
                    .get("invert")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
        }
        if let Some(path) = selector.get("path") {
            out.path = Some(path_selector(path)?);
        }
        if let Some(source) = selector.get("sourceCIDR") {
            out.cidr = Some(cidr_selector(source)?);
        }
        for query in items(selector, "/queryParams") {
            out.query.push(query_selector(query)?);
        }
    }
    let cost = |pointer: &str| {
        rule.pointer(pointer).map(|c| Cost {
            number: c.get("number").and_then(Value::as_u64),
            format: c.get("metadata").map(|m| {
                format!(
                    "%DYNAMIC_METADATA({}:{})%",
                    text(m, "/namespace").unwrap_or_default(),
                    text(m, "/key").unwrap_or_default()
                )
            }),
        })
    };
    out.request_cost = cost("/cost/request");
    out.response_cost = cost("/cost/response");
    Ok(out)
}

/// A header of a client selector, as Envoy Gateway translates it.
fn header_selector(header: &Value) -> Result<Selector, String> {
    let name = text(header, "/name").unwrap_or_default().to_string();
    let value = text(header, "/value");
    let invert = header
        .get("invert")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let matcher = match (text(header, "/type"), value) {
        (None | Some("Exact"), Some(v)) => Matcher::Exact(v.into()),
        (Some("RegularExpression"), Some(v)) => {
            check_regex(v)?;
            Matcher::Regex(v.into())
        }
        (Some("Distinct"), None) => {
            if invert {
                return Err("unable to translate rateLimit.Invert is not applicable for distinct header match type".into());
            }
            Matcher::Distinct
        }
        _ => {
            return Err("unable to translate rateLimit. Either the header.Type is not valid or the header is missing a value".into());
        }
    };
    Ok(Selector {
        name,
        matcher,
        invert,
    })
}

/// The path of a client selector, as Envoy Gateway translates it.
fn path_selector(path: &Value) -> Result<Selector, String> {
    let value = text(path, "/value").unwrap_or_default();
    let matcher = match text(path, "/type").unwrap_or("PathPrefix") {
        "PathPrefix" if value == "/" => Matcher::Prefix(value.into()),
        "PathPrefix" => Matcher::Regex(path_separated_prefix_regex(value)),
        "Exact" => Matcher::Exact(value.into()),
        "RegularExpression" => {
            check_regex(value)?;
            Matcher::Regex(value.into())
        }
        _ => return Err("unable to translate rateLimit: invalid path type.".into()),
    };
    Ok(Selector {
        name: ":path".into(),
        matcher,
        invert: path.get("invert").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The source CIDR of a client selector.
fn cidr_selector(source: &Value) -> Result<Cidr, String> {
    let cidr = text(source, "/value").unwrap_or_default();
    let (prefix, len) = parse_cidr(cidr)
        .ok_or_else(|| format!("unable to translate rateLimit: invalid CIDR {cidr:?}"))?;
    Ok(Cidr {
        cidr: format!("{prefix}/{len}"),
        prefix,
        len,
        distinct: text(source, "/type") == Some("Distinct"),
        invert: source
            .get("invert")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// A query parameter of a client selector, as Envoy Gateway translates it.
fn query_selector(query: &Value) -> Result<Selector, String> {
    let name = text(query, "/name").unwrap_or_default();
    if name.is_empty() {
        return Err("name is required when QueryParamMatch is specified".into());
    }
    let value = text(query, "/value").filter(|v| !v.is_empty());
    let invert = query
        .get("invert")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let kind = text(query, "/type").unwrap_or("Exact");
    let matcher = match (kind, value) {
        ("Exact", Some(v)) => Matcher::Exact(v.into()),
        ("RegularExpression", Some(v)) => {
            check_regex(v)?;
            Matcher::Regex(v.into())
        }
        ("Exact" | "RegularExpression", None) => {
            return Err(format!(
                "value is required for {kind} query parameter match"
            ));
        }
        ("Distinct", _) if invert => {
            return Err("unable to translate rateLimit.Invert is not applicable for distinct query parameter match type".into());
        }
        ("Distinct", Some(_)) => {
            return Err("unable to translate rateLimit.Value is not applicable for distinct query parameter match type".into());
        }
        ("Distinct", None) => Matcher::Distinct,
        (other, _) => return Err(format!("invalid query parameter match type: {other}")),
    };
    Ok(Selector {
        name: name.to_string(),
        matcher,
        invert,
    })
}

/// The address and prefix length of a CIDR, the address masked to the prefix.
fn parse_cidr(cidr: &str) -> Option<(String, u32)> {
    let (address, len) = cidr.split_once('/')?;
    let len: u32 = len.parse().ok()?;
    let ip: std::net::IpAddr = address.parse().ok()?;
    let masked = match ip {
        std::net::IpAddr::V4(v4) if len <= 32 => {
            let bits = u32::from(v4) & u32::MAX.checked_shl(32 - len).unwrap_or(0);
            std::net::Ipv4Addr::from(bits).to_string()
        }
        std::net::IpAddr::V6(v6) if len <= 128 => {
            let bits = u128::from(v6) & u128::MAX.checked_shl(128 - len).unwrap_or(0);
            std::net::Ipv6Addr::from(bits).to_string()
        }
        _ => return None,
    };
    Some((masked, len))
}

fn generic_key(key: &str) -> Value {
    json!({"generic_key": {"descriptor_key": key, "descriptor_value": key}})
}

fn header_value_match(key: &str, header: &str, selector: &Selector) -> Value {
    json!({"header_value_match": {
        "descriptor_key": key,
        "descriptor_value": key,
        "expect_match": !selector.invert,
        "headers": [{"name": header, "string_match": selector.matcher.string_match()}],
    }})
}

fn rule_key(rule: usize, matched: i64) -> String {
    format!("rule-{rule}-match-{matched}")
}

/// The index of rule `i` among the rules of its kind (shared or not) of one route.
fn domain_rule_index(rules: &[Rule], i: usize) -> usize {
    let shared = rules[i].shared;
    rules[..i].iter().filter(|r| r.shared == shared).count()
}

/// The actions of rule `i` on route `route` for one method match (or none).
fn actions(route: &str, rules: &[Rule], i: usize, method: Option<&Selector>) -> Vec<Value> {
    let rule = &rules[i];
    let index = domain_rule_index(rules, i);
    let mut out = vec![generic_key(if rule.shared { &rule.name } else { route })];
    for (m, header) in rule.headers.iter().enumerate() {
        let key = rule_key(index, m as i64);
        out.push(if header.matcher == Matcher::Distinct {
            json!({"request_headers": {"header_name": header.name, "descriptor_key": key}})
        } else {
            header_value_match(&key, &header.name, header)
        });
    }
    if let Some(method) = method {
        out.push(header_value_match(
            &format!("rule-{index}-method"),
            ":method",
            method,
        ));
    }
    if let Some(path) = &rule.path {
        out.push(header_value_match(
            &format!("rule-{index}-path"),
            ":path",
            path,
        ));
    }
    if let Some(cidr) = &rule.cidr {
        out.push(remote_address_match(
            "masked_remote_address",
            &cidr_value(cidr),
            cidr,
        ));
        if cidr.distinct {
            out.push(remote_address_match(
                "remote_address",
                DOWNSTREAM_ADDRESS,
                cidr,
            ));
        }
    }
    let offset = rule.headers.len();
    for (m, query) in rule.query.iter().enumerate() {
        let key = rule_key(index, (offset + m) as i64);
        out.push(query_action(&key, query));
    }
    if rule.matches_anything() {
        out.push(generic_key(&rule_key(index, -1)));
    }
    out
}

/// The route's `typed_per_filter_config` entries for `rules` on listener `listener` (domain
/// `<gateway ns>/<gateway>/<listener>`): filter name → `RateLimitPerRoute`.
pub fn route_filter_configs(listener: &str, route: &str, rules: &[Rule]) -> Map<String, Value> {
    let mut by_domain: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (i, rule) in rules.iter().enumerate() {
        let methods: Vec<Option<&Selector>> = if rule.methods.is_empty() {
            vec![None]
        } else {
            rule.methods.iter().map(Some).collect()
        };
        for method in methods {
            let actions = actions(route, rules, i, method);
            let mut limit = json!({"actions": actions});
            if let Some(option) = rule.x_ratelimit {
                limit["x_ratelimit_option"] = json!(option);
            }
            if let Some((namespace, key)) = &rule.limit_from {
                limit["limit"] = json!({"dynamic_metadata": {"metadata_key": {
                    "key": namespace,
                    "path": [{"key": key}],
                }}});
            }
            let mut response = limit.clone();
            if let Some(cost) = &rule.request_cost {
                limit["hits_addend"] = cost.to_envoy();
            }
            let entries = by_domain.entry(rule.domain(listener)).or_default();
            entries.push(limit);
            if let Some(cost) = &rule.response_cost {
                response["apply_on_stream_done"] = json!(true);
                response["hits_addend"] = cost.to_envoy();
                entries.push(response);
            }
        }
    }
    by_domain
        .into_iter()
        .map(|(domain, rate_limits)| {
            (
                filter_name(listener, &domain),
                typed(
                    PER_ROUTE,
                    json!({"domain": domain, "rate_limits": rate_limits}),
                ),
            )
        })
        .collect()
}

fn filter_name(listener: &str, domain: &str) -> String {
    if domain == listener {
        FILTER.to_string()
    } else {
        format!("{FILTER}/{domain}")
    }
}

/// The rate-limit filters of a listener's HTTP connection manager whose routes use `domains`
/// (the listener's own among them when any route is limited), in domain order.
pub fn http_filters(listener: &str, domains: &BTreeSet<String>) -> Vec<Value> {
    let mut all = domains.clone();
    all.insert(listener.to_string());
    all.iter()
        .map(|domain| {
            json!({
                "name": filter_name(listener, domain),
                "typed_config": typed("envoy.extensions.filters.http.ratelimit.v3.RateLimit", json!({
                    "domain": domain,
                    "rate_limit_service": {
                        "grpc_service": {"envoy_grpc": {"cluster_name": CLUSTER}},
                        "transport_api_version": "V3",
                    },
                    "disable_x_envoy_ratelimited_header": true,
                    "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                })),
            })
        })
        .collect()
}

/// The domains the rules of a route use on a listener.
pub fn domains(listener: &str, rules: &[Rule]) -> BTreeSet<String> {
    rules.iter().map(|r| r.domain(listener)).collect()
}

/// The rate-limit service's descriptors, by domain, built route by route.
#[derive(Debug, Default)]
pub struct ServiceConfig {
    domains: BTreeMap<String, Vec<Value>>,
}

impl ServiceConfig {
    /// Adds the descriptors of `rules` on `route` of `listener`.
    pub fn add(&mut self, listener: &str, route: &str, rules: &[Rule]) {
        for (i, rule) in rules.iter().enumerate() {
            let top_key = if rule.shared { &rule.name } else { route };
            let chain = chain(rules, i);
            let domain = self.domains.entry(rule.domain(listener)).or_default();
            let top = match domain.iter().position(|d| d["key"] == json!(top_key)) {
                Some(p) => p,
                None => {
                    domain.push(json!({"key": top_key, "value": top_key, "descriptors": []}));
                    domain.len() - 1
                }
            };
            let Some(children) = domain[top]["descriptors"].as_array_mut() else {
                continue;
            };
            if !children.contains(&chain) {
                children.push(chain);
            }
        }
    }

    /// Whether no route is limited.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// One envoyproxy/ratelimit document per domain: (domain, YAML-ready value).
    pub fn documents(&self) -> Vec<(String, Value)> {
        self.domains
            .iter()
            .map(|(domain, descriptors)| {
                (
                    domain.clone(),
                    json!({"name": domain, "domain": domain, "descriptors": descriptors}),
                )
            })
            .collect()
    }
}

/// The descriptor chain of rule `i`, the limit on its last link.
fn chain(rules: &[Rule], i: usize) -> Value {
    let rule = &rules[i];
    let index = domain_rule_index(rules, i);
    let mut links: Vec<(String, Option<String>)> = Vec::new();
    for (m, header) in rule.headers.iter().enumerate() {
        let key = rule_key(index, m as i64);
        let value = (header.matcher != Matcher::Distinct).then(|| key.clone());
        links.push((key, value));
    }
    if !rule.methods.is_empty() {
        let key = format!("rule-{index}-method");
        links.push((key.clone(), Some(key)));
    }
    if rule.path.is_some() {
        let key = format!("rule-{index}-path");
        links.push((key.clone(), Some(key)));
    }
    if let Some(cidr) = &rule.cidr {
        links.push(("masked_remote_address".into(), Some(cidr_value(cidr))));
        if cidr.distinct {
            links.push(("remote_address".into(), None));
        }
    }
    let offset = rule.headers.len();
    for (m, query) in rule.query.iter().enumerate() {
        let key = rule_key(index, (offset + m) as i64);
        let value = (query.matcher != Matcher::Distinct).then(|| key.clone());
        links.push((key, value));
    }
    if rule.matches_anything() {
        let key = rule_key(index, -1);
        links.push((key.clone(), Some(key)));
    }
    let mut out: Option<Value> = None;
    for (n, (key, value)) in links.into_iter().rev().enumerate() {
        let mut link = json!({"key": key});
        if let Some(value) = value {
            link["value"] = json!(value);
        }
        if n == 0 {
            link["rate_limit"] = json!({
                "requests_per_unit": rule.requests,
                "unit": rule.unit.to_ascii_uppercase(),
            });
        }
        if let Some(inner) = out.take() {
            link["descriptors"] = json!([inner]);
        }
        if rule.shadow {
            link["shadow_mode"] = json!(true);
        }
        out = Some(link);
    }
    out.unwrap_or(Value::Null)
}

/// The file of a domain's configuration under the output's `ratelimit/` folder: the domain with
/// `/` as `_` (Kubernetes names have no `_`, so two domains never share a file).
pub fn file_name(domain: &str) -> String {
    format!("{}.yaml", domain.replace('/', "_"))
}

#[cfg(test)]
mod tests;
