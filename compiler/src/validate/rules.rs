//! The CEL rules (`x-kubernetes-validations`) of the upstream AI Gateway CRDs, re-expressed in
//! Rust over the typed resources, with the same messages the API server would print. Also the
//! checks upstream's controller makes on a single object (CEL cost expressions compile and yield
//! an integer).
//!
//! Not re-expressed: the rules inside the Envoy Gateway `OIDC.provider.backendSettings` type,
//! which the compiler keeps opaque because the extproc does not use it.

use std::collections::BTreeMap;

use aigw_filterconfig::CostType;

use super::schema::Violation;
use crate::diag::FieldPath;
use crate::model::{
    AiGatewayRouteSpec, AiServiceBackendSpec, BackendSecurityPolicySpec, GatewayConfigSpec,
    LlmRequestCost, Oidc, QuotaPolicySpec, SecurityPolicyType,
};

/// API version of the document being checked; v1alpha1 differs in a few rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `v1alpha1`.
    V1Alpha1,
    /// `v1beta1`.
    V1Beta1,
}

fn sorted(mut violations: Vec<Violation>) -> Vec<Violation> {
    violations.sort_by(|a, b| (&a.path, &a.message).cmp(&(&b.path, &b.message)));
    violations
}

fn violation(path: FieldPath, message: impl Into<String>) -> Violation {
    Violation {
        path,
        message: message.into(),
    }
}

/// AIGatewayRoute rules.
pub fn route(spec: &AiGatewayRouteSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let spec_path = FieldPath::root().key("spec");
    for (i, parent) in spec.parent_refs.iter().enumerate() {
        if parent.kind != "Gateway" {
            out.push(violation(
                spec_path.key("parentRefs").index(i).key("kind"),
                "only Gateway is supported",
            ));
        }
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for rule in &spec.rules {
        if let Some(name) = &rule.name {
            *names.entry(name.as_str()).or_default() += 1;
        }
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let rule_path = spec_path.key("rules").index(i);
        if let Some(name) = &rule.name {
            if names.get(name.as_str()).copied().unwrap_or(0) > 1 {
                out.push(violation(
                    rule_path.key("name"),
                    "rule name must be unique within the route",
                ));
            }
            if name == "route-not-found" {
                out.push(violation(
                    rule_path.key("name"),
                    "rule name route-not-found is reserved",
                ));
            }
        }
        let pools = rule
            .backend_refs
            .iter()
            .filter(|r| r.group.is_some() && r.kind.is_some())
            .count();
        let plain = rule
            .backend_refs
            .iter()
            .filter(|r| r.group.is_none() && r.kind.is_none())
            .count();
        if pools > 0 && plain > 0 {
            out.push(violation(
                rule_path.key("backendRefs"),
                "cannot mix InferencePool and AIServiceBackend references in the same rule",
            ));
        }
        if pools > 0 && rule.backend_refs.len() != 1 {
            out.push(violation(
                rule_path.key("backendRefs"),
                "only one InferencePool backend is allowed per rule",
            ));
        }
        for (j, backend_ref) in rule.backend_refs.iter().enumerate() {
            let ref_path = rule_path.key("backendRefs").index(j);
            if backend_ref.group.is_some() != backend_ref.kind.is_some() {
                out.push(violation(
                    ref_path.clone(),
                    "group and kind must be specified together",
                ));
            }
            if let Some(group) = &backend_ref.group
                && (group != "inference.networking.k8s.io"
                    || backend_ref.kind.as_deref() != Some("InferencePool"))
            {
                out.push(violation(
                    ref_path.key("group"),
                    "only InferencePool from inference.networking.k8s.io group is supported",
                ));
            }
        }
        if let Some(timeouts) = &rule.timeouts
            && let (Some(request), Some(backend)) = (&timeouts.request, &timeouts.backend_request)
            && let (Some(request), Some(backend)) =
                (parse_duration_ms(request), parse_duration_ms(backend))
            && request != 0
            && backend > request
        {
            out.push(violation(
                rule_path.key("timeouts"),
                "backendRequest timeout cannot be longer than request timeout",
            ));
        }
        if let Some(created) = &rule.models_created_at
            && parse_rfc3339(created).is_none()
        {
            out.push(violation(
                rule_path.key("modelsCreatedAt"),
                format!("{created:?} is not an RFC 3339 date-time"),
            ));
        }
    }
    out.extend(costs(
        &spec.llm_request_costs,
        &spec_path.key("llmRequestCosts"),
    ));
    sorted(out)
}

/// AIServiceBackend rules.
pub fn service_backend(spec: &AiServiceBackendSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let path = FieldPath::root().key("spec").key("backendRef");
    let r = &spec.backend_ref;
    if !(r.kind == "Backend" && r.group == "gateway.envoyproxy.io") {
        out.push(violation(
            path.clone(),
            "BackendRef must be a Backend resource of Envoy Gateway. See https://github.com/envoyproxy/ai-gateway/issues/902 for more details.",
        ));
    }
    if r.group.is_empty() && r.kind == "Service" && r.port.is_none() {
        out.push(violation(path, "Must have port for Service reference"));
    }
    sorted(out)
}

/// BackendSecurityPolicy rules.
pub fn security_policy(spec: &BackendSecurityPolicySpec, version: Version) -> Vec<Violation> {
    let mut out = Vec::new();
    let path = FieldPath::root().key("spec");
    use SecurityPolicyType as T;
    // Each type, and whether the field that configures it is set.
    let set = [
        (T::ApiKey, spec.api_key.is_some()),
        (T::AwsCredentials, spec.aws_credentials.is_some()),
        (T::AzureApiKey, spec.azure_api_key.is_some()),
        (T::AzureCredentials, spec.azure_credentials.is_some()),
        (T::GcpCredentials, spec.gcp_credentials.is_some()),
        (T::AnthropicApiKey, spec.anthropic_api_key.is_some()),
    ];
    let own_field = spec.policy_type.field();
    let own_set = set
        .iter()
        .any(|(t, present)| *t == spec.policy_type && *present);
    let others_set = set
        .iter()
        .any(|(t, present)| *t != spec.policy_type && *present);
    if !own_set || others_set {
        let type_name = serde_json::to_value(spec.policy_type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        out.push(violation(
            path.clone(),
            format!("When type is {type_name}, only {own_field} field should be set"),
        ));
    }
    for (i, target) in spec.target_refs.iter().enumerate() {
        let ok = (target.group == "aigateway.envoyproxy.io" && target.kind == "AIServiceBackend")
            || (target.group == "inference.networking.k8s.io" && target.kind == "InferencePool");
        if !ok {
            out.push(violation(
                path.key("targetRefs").index(i),
                "targetRefs must reference AIServiceBackend or InferencePool resources",
            ));
        }
    }
    credential_rules(spec, version, &path, &mut out);
    credential_override_rules(spec, version, &path, &mut out);
    let max_properties = match version {
        Version::V1Alpha1 => 3,
        Version::V1Beta1 => 4,
    };
    let properties = 1
        + usize::from(!spec.target_refs.is_empty())
        + set.iter().filter(|(_, present)| *present).count()
        + usize::from(spec.credential_override.is_some());
    if properties > max_properties {
        out.push(violation(
            path,
            format!("must have at most {max_properties} properties"),
        ));
    }
    sorted(out)
}

/// The rules of the OIDC, Azure and GCP credential sources of a BackendSecurityPolicy.
fn credential_rules(
    spec: &BackendSecurityPolicySpec,
    version: Version,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if let Some(aws) = &spec.aws_credentials
        && let Some(exchange) = &aws.oidc_exchange_token
    {
        out.extend(oidc(
            &exchange.oidc,
            &path
                .key("awsCredentials")
                .key("oidcExchangeToken")
                .key("oidc"),
        ));
    }
    if let Some(azure) = &spec.azure_credentials {
        let azure_path = path.key("azureCredentials");
        if azure.client_secret_ref.is_some() == azure.oidc_exchange_token.is_some() {
            out.push(violation(
                azure_path.clone(),
                "Exactly one of clientSecretRef or oidcExchangeToken must be specified",
            ));
        }
        if let Some(exchange) = &azure.oidc_exchange_token {
            out.extend(oidc(
                &exchange.oidc,
                &azure_path.key("oidcExchangeToken").key("oidc"),
            ));
        }
    }
    if let Some(gcp) = &spec.gcp_credentials {
        let gcp_path = path.key("gcpCredentials");
        let file = gcp.credentials_file.is_some();
        let federation = gcp.workload_identity_federation_config.is_some();
        match version {
            Version::V1Beta1 if file && federation => out.push(violation(
                gcp_path.clone(),
                "At most one of credentialsFile or workloadIdentityFederationConfig may be specified",
            )),
            Version::V1Alpha1 if file == federation => out.push(violation(
                gcp_path.clone(),
                "Exactly one of credentialsFile or workloadIdentityFederationConfig must be specified",
            )),
            _ => {}
        }
        if let Some(wif) = &gcp.workload_identity_federation_config {
            out.extend(oidc(
                &wif.oidc_exchange_token.oidc,
                &gcp_path
                    .key("workloadIdentityFederationConfig")
                    .key("oidcExchangeToken")
                    .key("oidc"),
            ));
        }
    }
}

/// `credentialOverride`: v1beta1 only, with exactly one source.
fn credential_override_rules(
    spec: &BackendSecurityPolicySpec,
    version: Version,
    path: &FieldPath,
    out: &mut Vec<Violation>,
) {
    if let Some(overrides) = &spec.credential_override {
        let override_path = path.key("credentialOverride");
        if version == Version::V1Alpha1 {
            out.push(violation(
                override_path,
                "unknown field: credentialOverride exists only in aigateway.envoyproxy.io/v1beta1",
            ));
        } else if overrides.from_request_headers.is_some()
            == overrides.from_dynamic_metadata.is_some()
        {
            out.push(violation(
                override_path,
                "exactly one of fromRequestHeaders or fromDynamicMetadata must be set",
            ));
        }
    }
}

fn oidc(oidc: &Oidc, path: &FieldPath) -> Vec<Violation> {
    let mut out = Vec::new();
    if oidc.client_id.is_some() == oidc.client_id_ref.is_some() {
        out.push(violation(
            path.clone(),
            "only one of clientID or clientIDRef must be set",
        ));
    }
    let forward_id_to_authorization = oidc
        .forward_id_token
        .as_ref()
        .and_then(|t| t.get("header"))
        .and_then(|h| h.as_str())
        .is_some_and(|h| h.eq_ignore_ascii_case("authorization"));
    if oidc.forward_access_token == Some(true) && forward_id_to_authorization {
        out.push(violation(
            path.clone(),
            "forwardAccessToken cannot be true when forwardIDToken.header is Authorization",
        ));
    }
    if oidc.provider.backend_ref.is_some() {
        out.push(violation(
            path.key("provider"),
            "BackendRefs must be used, backendRef is not supported.",
        ));
    }
    out
}

/// GatewayConfig rules.
pub fn gateway_config(spec: &GatewayConfigSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let path = FieldPath::root().key("spec");
    if let Some(k8s) = spec.ext_proc.as_ref().and_then(|e| e.kubernetes.as_ref()) {
        let k8s_path = path.key("extProc").key("kubernetes");
        if k8s.image.is_some() && k8s.image_repository.is_some() {
            out.push(violation(
                k8s_path.clone(),
                "Either image or imageRepository can be set.",
            ));
        }
        if let Some(image) = &k8s.image
            && !image_re().is_match(image)
        {
            out.push(violation(
                k8s_path.key("image"),
                "Image must include a tag and allowed characters only (e.g., 'repo:tag').",
            ));
        }
        if let Some(repo) = &k8s.image_repository
            && !repository_re().is_match(repo)
        {
            out.push(violation(
                k8s_path.key("imageRepository"),
                "ImageRepository must contain only allowed characters and must not include a tag.",
            ));
        }
    }
    let mut keys = BTreeMap::new();
    for (i, cost) in spec.global_llm_request_costs.iter().enumerate() {
        if let Some(first) = keys.insert(cost.metadata_key.as_str(), i) {
            out.push(violation(
                path.key("globalLLMRequestCosts")
                    .index(i)
                    .key("metadataKey"),
                format!(
                    "duplicate metadataKey {:?} (also at index {first})",
                    cost.metadata_key
                ),
            ));
        }
    }
    out.extend(costs(
        &spec.global_llm_request_costs,
        &path.key("globalLLMRequestCosts"),
    ));
    sorted(out)
}

fn image_re() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"^[a-zA-Z0-9._-]+(:[0-9]+)?(/[a-zA-Z0-9._/-]+)?(:[a-zA-Z0-9._-]+)?(@sha256:[a-z0-9]+)?$")
            .unwrap_or_else(|_| never_matching())
    })
}

fn repository_re() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"^[a-zA-Z0-9._-]+(:[0-9]+)?[a-zA-Z0-9._/-]+$")
            .unwrap_or_else(|_| never_matching())
    })
}

fn never_matching() -> regex::Regex {
    // `[^\s\S]` matches nothing; it always compiles.
    regex::Regex::new(r"[^\s\S]").unwrap_or_else(|_| never_matching())
}

/// QuotaPolicy rules.
pub fn quota_policy(spec: &QuotaPolicySpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let path = FieldPath::root().key("spec");
    if !spec
        .target_refs
        .iter()
        .all(|r| r.group == "aigateway.envoyproxy.io" && r.kind == "AIServiceBackend")
    {
        out.push(violation(
            path.key("targetRefs"),
            "targetRefs must reference AIServiceBackend resources",
        ));
    }
    for (i, quota) in spec.per_model_quotas.iter().enumerate() {
        let quota_path = path.key("perModelQuotas").index(i).key("quota");
        for (j, rule) in quota.quota.bucket_rules.iter().enumerate() {
            for (k, selector) in rule.client_selectors.iter().enumerate() {
                let any = ["headers", "methods", "path", "sourceCIDR", "queryParams"]
                    .iter()
                    .any(|key| selector.contains_key(*key));
                if !any {
                    out.push(violation(
                        quota_path.key("bucketRules").index(j).key("clientSelectors").index(k),
                        "at least one of headers, methods, path, sourceCIDR or queryParams must be specified",
                    ));
                }
            }
        }
        if let Some(expression) = &quota.quota.cost_expression
            && let Err(message) = check_cost_expression(expression)
        {
            out.push(violation(quota_path.key("costExpression"), message));
        }
    }
    if let Some(expression) = spec
        .service_quota
        .as_ref()
        .and_then(|q| q.cost_expression.as_ref())
        && let Err(message) = check_cost_expression(expression)
    {
        out.push(violation(
            path.key("serviceQuota").key("costExpression"),
            message,
        ));
    }
    sorted(out)
}

fn costs(costs: &[LlmRequestCost], path: &FieldPath) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, cost) in costs.iter().enumerate() {
        let cost_path = path.index(i);
        if cost.metadata_key.is_empty() {
            out.push(violation(cost_path.key("metadataKey"), "must not be empty"));
        }
        match (cost.cost_type, cost.cel.as_deref()) {
            (CostType::CEL, None) | (CostType::CEL, Some("")) => {
                out.push(violation(
                    cost_path.key("cel"),
                    "a CEL expression is required when type is CEL",
                ));
            }
            (CostType::CEL, Some(expression)) => {
                if let Err(message) = check_cost_expression(expression) {
                    out.push(violation(cost_path.key("cel"), message));
                }
            }
            _ => {}
        }
    }
    out
}

/// The variables a cost expression may read, with the sample values it is test-evaluated with.
pub const COST_VARIABLES: [&str; 9] = [
    "model",
    "backend",
    "route_name",
    "input_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
    "total_tokens",
    "reasoning_tokens",
];

/// Compiles a cost expression and evaluates it on sample token counts, as upstream's controller
/// does: it must yield a non-negative integer.
pub fn check_cost_expression(expression: &str) -> Result<(), String> {
    // Many routes share one expression; the verdict depends on the text alone.
    static VERDICTS: std::sync::OnceLock<std::sync::Mutex<BTreeMap<String, Result<(), String>>>> =
        std::sync::OnceLock::new();
    let verdicts = VERDICTS.get_or_init(Default::default);
    if let Some(verdict) = verdicts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(expression)
    {
        return verdict.clone();
    }
    let verdict = evaluate_cost_expression(expression);
    verdicts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(expression.to_string(), verdict.clone());
    verdict
}

fn evaluate_cost_expression(expression: &str) -> Result<(), String> {
    let program = cel::Program::compile(expression).map_err(|err| {
        format!(
            "CEL expression does not compile: {}",
            one_line(&err.to_string())
        )
    })?;
    for (strings, count) in [
        (("gpt-4o", "default/backend", "default/route"), 1u64),
        (("", "", ""), 0u64),
    ] {
        let mut context = cel::Context::default();
        context.add_variable_from_value("model", strings.0);
        context.add_variable_from_value("backend", strings.1);
        context.add_variable_from_value("route_name", strings.2);
        for name in &COST_VARIABLES[3..] {
            context.add_variable_from_value(*name, count);
        }
        match program.execute(&context) {
            Ok(cel::Value::UInt(_)) => {}
            Ok(cel::Value::Int(value)) if value >= 0 => {}
            Ok(cel::Value::Int(value)) => {
                return Err(format!(
                    "CEL expression yields a negative cost ({value}) for sample token counts"
                ));
            }
            Ok(other) => {
                return Err(format!(
                    "CEL expression must yield an integer, but yields {:?}",
                    other.type_of()
                ));
            }
            Err(err) => {
                return Err(format!(
                    "CEL expression fails on sample token counts: {}",
                    one_line(&err.to_string())
                ));
            }
        }
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses a Gateway API duration (`1h30m`, `500ms`) into milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else {
            return None;
        };
        total = total.checked_add(number.checked_mul(unit)?)?;
        rest = &rest[len..];
    }
    Some(total)
}

/// Parses an RFC 3339 date-time into Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if bytes[13] != b':'
        || bytes[16] != b':'
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    // Days from civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn route_spec(yaml: &str) -> AiGatewayRouteSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn messages(violations: Vec<Violation>) -> Vec<String> {
        violations
            .into_iter()
            .map(|v| format!("{}: {}", v.path, v.message))
            .collect()
    }

    #[test]
    fn parent_refs_must_be_gateways() {
        let spec = route_spec("parentRefs: [{name: a, kind: Service}]\nrules: []\n");
        assert_eq!(
            messages(route(&spec)),
            vec!["spec.parentRefs[0].kind: only Gateway is supported"]
        );
    }

    #[test]
    fn rule_names_are_unique_and_not_reserved() {
        let spec = route_spec("rules: [{name: a}, {name: a}, {name: route-not-found}]\n");
        assert_eq!(
            messages(route(&spec)),
            vec![
                "spec.rules[0].name: rule name must be unique within the route",
                "spec.rules[1].name: rule name must be unique within the route",
                "spec.rules[2].name: rule name route-not-found is reserved",
            ]
        );
    }

    #[test]
    fn inference_pool_rules() {
        let mixed = route_spec(
            "rules: [{backendRefs: [{name: a}, {name: p, group: inference.networking.k8s.io, kind: InferencePool}]}]\n",
        );
        let found = messages(route(&mixed));
        assert!(found.contains(&"spec.rules[0].backendRefs: cannot mix InferencePool and AIServiceBackend references in the same rule".to_string()));
        assert!(
            found.contains(
                &"spec.rules[0].backendRefs: only one InferencePool backend is allowed per rule"
                    .to_string()
            )
        );
        let half =
            route_spec("rules: [{backendRefs: [{name: p, group: inference.networking.k8s.io}]}]\n");
        assert!(messages(route(&half)).contains(
            &"spec.rules[0].backendRefs[0]: group and kind must be specified together".to_string()
        ));
        let wrong =
            route_spec("rules: [{backendRefs: [{name: p, group: example.com, kind: Pool}]}]\n");
        assert_eq!(
            messages(route(&wrong)),
            vec![
                "spec.rules[0].backendRefs[0].group: only InferencePool from inference.networking.k8s.io group is supported"
            ]
        );
    }

    #[test]
    fn backend_request_timeout_not_longer_than_request() {
        let spec = route_spec(
            "rules: [{timeouts: {request: 10s, backendRequest: 1m}}, {timeouts: {request: 0s, backendRequest: 1m}}]\n",
        );
        assert_eq!(
            messages(route(&spec)),
            vec![
                "spec.rules[0].timeouts: backendRequest timeout cannot be longer than request timeout"
            ]
        );
    }

    #[test]
    fn cost_expressions_compile_and_yield_integers() {
        assert!(check_cost_expression("input_tokens * 2u + output_tokens").is_ok());
        assert!(check_cost_expression("model == 'gpt-4o' ? 1 : 2").is_ok());
        assert!(check_cost_expression("input_tokens +").is_err());
        assert!(
            check_cost_expression("'text'")
                .unwrap_err()
                .contains("integer")
        );
        assert!(
            check_cost_expression("0 - 5")
                .unwrap_err()
                .contains("negative")
        );
        assert!(check_cost_expression("unknown_variable").is_err());
        let spec = route_spec(
            "rules: []\nllmRequestCosts: [{metadataKey: a, type: CEL}, {metadataKey: b, type: CEL, cel: 'x +'}]\n",
        );
        let found = messages(route(&spec));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("spec.llmRequestCosts[0].cel: a CEL expression is required"));
        assert!(
            found[1].starts_with("spec.llmRequestCosts[1].cel: CEL expression does not compile")
        );
    }

    #[test]
    fn service_backend_must_reference_an_eg_backend() {
        let spec: AiServiceBackendSpec = serde_json::from_value(
            serde_json::json!({"schema": {"name": "OpenAI"}, "backendRef": {"name": "svc"}}),
        )
        .unwrap();
        let found = messages(service_backend(&spec));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with(
            "spec.backendRef: BackendRef must be a Backend resource of Envoy Gateway"
        ));
        assert_eq!(
            found[1],
            "spec.backendRef: Must have port for Service reference"
        );
    }

    fn bsp(json: serde_json::Value) -> BackendSecurityPolicySpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn security_policy_type_must_match_its_field() {
        let spec =
            bsp(serde_json::json!({"type": "APIKey", "azureAPIKey": {"secretRef": {"name": "s"}}}));
        assert_eq!(
            messages(security_policy(&spec, Version::V1Beta1)),
            vec!["spec: When type is APIKey, only apiKey field should be set"]
        );
        let ok = bsp(
            serde_json::json!({"type": "AWSCredentials", "awsCredentials": {"region": "us-east-1"}}),
        );
        assert!(security_policy(&ok, Version::V1Beta1).is_empty());
    }

    #[test]
    fn security_policy_targets_and_azure_and_gcp_rules() {
        let spec = bsp(serde_json::json!({
            "type": "AzureCredentials",
            "targetRefs": [{"group": "", "kind": "Service", "name": "x"}],
            "azureCredentials": {"clientID": "c", "tenantID": "t"}
        }));
        assert_eq!(
            messages(security_policy(&spec, Version::V1Beta1)),
            vec![
                "spec.azureCredentials: Exactly one of clientSecretRef or oidcExchangeToken must be specified",
                "spec.targetRefs[0]: targetRefs must reference AIServiceBackend or InferencePool resources",
            ]
        );
        let adc = bsp(
            serde_json::json!({"type": "GCPCredentials", "gcpCredentials": {"projectName": "p", "region": "r"}}),
        );
        assert!(security_policy(&adc, Version::V1Beta1).is_empty());
        assert_eq!(
            messages(security_policy(&adc, Version::V1Alpha1)),
            vec![
                "spec.gcpCredentials: Exactly one of credentialsFile or workloadIdentityFederationConfig must be specified"
            ]
        );
    }

    #[test]
    fn credential_override_is_v1beta1_only() {
        let spec = bsp(serde_json::json!({
            "type": "APIKey", "apiKey": {"secretRef": {"name": "s"}},
            "credentialOverride": {"fromRequestHeaders": {}}
        }));
        assert!(security_policy(&spec, Version::V1Beta1).is_empty());
        assert_eq!(security_policy(&spec, Version::V1Alpha1).len(), 1);
    }

    #[test]
    fn gateway_config_image_rules() {
        let spec: GatewayConfigSpec = serde_json::from_value(serde_json::json!({
            "extProc": {"kubernetes": {"image": "bad image", "imageRepository": "repo:tag:x"}}
        }))
        .unwrap();
        let found = messages(gateway_config(&spec));
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn quota_selectors_need_a_condition() {
        let spec: QuotaPolicySpec = serde_json::from_value(serde_json::json!({
            "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "b"}],
            "perModelQuotas": [{"modelName": "m", "quota": {"bucketRules": [{"clientSelectors": [{}], "quota": {"limit": 1, "duration": "1m"}}]}}]
        })).unwrap();
        assert_eq!(
            messages(quota_policy(&spec)),
            vec![
                "spec.perModelQuotas[0].quota.bucketRules[0].clientSelectors[0]: at least one of headers, methods, path, sourceCIDR or queryParams must be specified"
            ]
        );
    }

    #[test]
    fn durations_and_dates_parse() {
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("10x"), None);
        assert_eq!(parse_rfc3339("2025-01-01T00:00:00Z"), Some(1_735_689_600));
        assert_eq!(
            parse_rfc3339("2025-01-01T01:00:00+01:00"),
            Some(1_735_689_600)
        );
        assert_eq!(parse_rfc3339("2025-13-01T00:00:00Z"), None);
    }
}
