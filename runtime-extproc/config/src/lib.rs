//! The filter configuration contract between `aigw build` and `aigw-extproc`.
//!
//! The compiler writes one [`FilterConfig`] per extproc instance (a ConfigMap in Kubernetes, a file
//! for the standalone target); the extproc reads it at start and on every change. Both sides use
//! these types, so the contract is declared once. The crate owns:
//!
//! - the type tree and its serde representation (camelCase keys, unknown fields rejected, an
//!   absent optional field omitted: `skip_serializing_none` on the types that have one);
//! - the [`API_VERSION`] it speaks, checked by [`FilterConfig::from_json_value`];
//! - structural checks that need no I/O ([`FilterConfig::check`]): every backend a rule names exists,
//!   names are unique, weights are sane.
//!
//! It owns no Kubernetes types and no secret values: credentials appear only as file paths under
//! the mount root, which the extproc reads (and re-reads when they change).

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// The `apiVersion` this crate reads and writes.
pub const API_VERSION: &str = "aigw.envoyproxy.io/filterconfig/v1alpha1";

/// Dynamic metadata namespace the extproc writes costs and request facts into (same as upstream).
pub const METADATA_NAMESPACE: &str = "io.envoy.ai_gateway";

/// Header carrying the model name read from the request body.
pub const MODEL_HEADER: &str = "x-ai-eg-model";

/// Key under [`METADATA_NAMESPACE`] saying how Envoy's own error replies (timeouts, resets,
/// bodies over the buffer limit) to a request must be shaped: `openai` or `anthropic`, set by
/// the extproc when a request reaches an AI endpoint; empty once the extproc has answered the
/// request itself. The generated Envoy configuration reads it (local reply mappers).
pub const ERROR_SHAPE_KEY: &str = "error_shape";

/// Prefix of the response code details of the extproc's own answers (`aigw_model_not_found`):
/// the generated local reply configuration leaves replies with it as they are.
pub const SHAPED_REPLY_PREFIX: &str = "aigw_";

/// Header carrying the backend the extproc selected; the generated routes match on it.
pub const SELECTED_BACKEND_HEADER: &str = "x-ai-eg-selected-backend";

/// Header carrying the rule the extproc selected, for rules whose attempts are processed by the
/// upstream filter ([`RouteRule::cluster`]): its value is the rule's cluster name, and the
/// generated HTTPRoute rule matches on it.
pub const SELECTED_RULE_HEADER: &str = "x-aigw-rule";

/// Request header carrying the client's `:authority` from the router to the extproc in the rule
/// cluster, while the request's own `:authority` names the rule's virtual host
/// ([`RouteRule::authority`]). Set by the router (a client's value is overwritten), removed
/// before the request leaves.
pub const CLIENT_AUTHORITY_HEADER: &str = "x-aigw-authority";

/// Domain of the hostnames of [`RouteRule::authority`].
pub const RULE_HOST_DOMAIN: &str = "aigw.internal";

/// gRPC initial metadata key naming the role of the filter that opened an ext_proc stream.
pub const ROLE_METADATA: &str = "x-aigw-role";

/// [`ROLE_METADATA`] value of the ext_proc filter in each rule cluster, which processes one
/// attempt: the request translated and signed for the backend the attempt reached.
pub const UPSTREAM_ROLE: &str = "upstream";

/// Dynamic metadata namespace the filter of a rule cluster keeps, across the attempts of one
/// request, the values request headers had before its first change to them (key
/// [`ATTEMPT_ORIGINALS_KEY`], a struct of header name to string, or null for a header that was
/// absent). Envoy hands every attempt the same request header map, so an attempt starts from
/// what the one before it left; it restores these first. The namespace never reaches a provider.
pub const ATTEMPT_METADATA_NAMESPACE: &str = "aigw.attempt";

/// Key of the original header values in [`ATTEMPT_METADATA_NAMESPACE`].
pub const ATTEMPT_ORIGINALS_KEY: &str = "originals";

/// Default request body limit when the compiler is not told otherwise (bytes).
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 32 * 1024 * 1024;

/// Errors found when reading or checking a filter config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The document is not valid for this contract (syntax, unknown field, wrong type).
    #[error("invalid filter config: {0}")]
    Invalid(String),
    /// The document speaks another contract version.
    #[error(
        "filter config apiVersion {found:?} is not supported: this build reads {expected:?}; \
         rebuild the config with a matching `aigw build`"
    )]
    UnsupportedVersion {
        /// The version found in the document.
        found: String,
        /// The version this build reads.
        expected: &'static str,
    },
    /// A cross-reference inside the document does not hold.
    #[error("inconsistent filter config: {0}")]
    Inconsistent(String),
}

/// Root of the filter configuration served by one extproc instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterConfig {
    /// Contract version; must equal [`API_VERSION`].
    pub api_version: String,
    /// Requests whose body is larger than this many bytes are answered 413.
    pub max_request_body_bytes: u64,
    /// AIGatewayRoutes served by this instance, ordered by namespace then name.
    pub routes: Vec<Route>,
    /// Every backend any rule can select, ordered by name.
    pub backends: Vec<Backend>,
    /// Gateway-wide costs (GatewayConfig `globalLLMRequestCosts`); route costs win per metadata key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub global_costs: Vec<LlmRequestCost>,
    /// Further routes and backends in part files beside this one, for a configuration too large
    /// for one Kubernetes object. The configuration is this file's routes and backends followed
    /// by each part's, in this order, and is used only when every part is present and matches
    /// its checksum (see [`FilterConfig::absorb`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<ConfigPart>,
}

/// A part file of a sharded configuration, as its root names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigPart {
    /// Path of the part file, relative to the folder of the root file.
    pub path: String,
    /// SHA-256 of the part file's bytes, lower-case hex. A part that does not match belongs to
    /// another version of the configuration (a volume caught mid-update) and is not used.
    pub sha256: String,
}

/// The content of one part file: a run of routes, in order, with the backends they name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterConfigPart {
    /// Contract version; must equal [`API_VERSION`].
    pub api_version: String,
    /// Routes, continuing the root's order.
    pub routes: Vec<Route>,
    /// The backends these routes name.
    pub backends: Vec<Backend>,
}

impl FilterConfigPart {
    /// Reads a part from its JSON form, version first, as [`FilterConfig::from_json_value`].
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        check_version(&value)?;
        serde_json::from_value(value).map_err(|err| ConfigError::Invalid(err.to_string()))
    }
}

/// One AIGatewayRoute as the extproc sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// `<namespace>/<name>` of the AIGatewayRoute (also the `route_name` metadata and CEL variable).
    pub name: String,
    /// Hostnames the route serves, as in Gateway API (`*.example.com` wildcards allowed). Empty: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Rules in declaration order; the first rule whose matches hold picks the backend.
    pub rules: Vec<RouteRule>,
    /// Token costs written as dynamic metadata at the end of each response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub costs: Vec<LlmRequestCost>,
    /// Models listed by `/v1/models` for requests this route serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<Model>,
}

/// One rule of an AIGatewayRoute.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRule {
    /// The rule's name, when the AIGatewayRoute gives one.
    pub name: Option<String>,
    /// Alternatives: the rule applies when any match holds. Empty: the rule always applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RuleMatch>,
    /// Candidate backends; one is picked by weight.
    pub backends: Vec<WeightedBackend>,
    /// The Envoy cluster of the HTTPRoute rule that carries this rule's requests
    /// (`httproute/<ns>/<name>/rule/<i>`), when Envoy chooses the backend: then the extproc on
    /// the router only selects the rule, Envoy balances and fails over between the cluster's
    /// localities `<cluster>/backend/<j>` (the backends with weight > 0, in order), and the
    /// extproc in the cluster translates each attempt for the backend it reached. Absent: the
    /// extproc picks the backend by weight and translates on the router.
    pub cluster: Option<String>,
    /// The `:authority` the extproc on the router sets for a rule with a [`cluster`]
    /// (`<httproute>.<ns>.aigw.internal`): the only hostname of the generated HTTPRoute that
    /// carries the rule, so Envoy finds the rule's routes by its virtual host (a hash lookup)
    /// instead of trying every rule of the Gateway in turn. The client's authority travels in
    /// [`CLIENT_AUTHORITY_HEADER`] to the extproc in the cluster, which puts it back (or the
    /// backend's host). Absent: the rule's routes match on any host.
    ///
    /// [`cluster`]: RouteRule::cluster
    pub authority: Option<String>,
}

/// A set of header conditions that must all hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMatch {
    /// Header conditions; `x-ai-eg-model` is filled from the request body before matching.
    pub headers: Vec<HeaderMatch>,
}

/// A Gateway API header match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name, lower-cased.
    pub name: String,
    /// How `value` is compared.
    #[serde(rename = "type")]
    pub match_type: HeaderMatchType,
    /// Exact value, or a regular expression matched against the whole header value.
    pub value: String,
}

/// Comparison used by a [`HeaderMatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HeaderMatchType {
    /// Byte-for-byte equality.
    Exact,
    /// RE2-style regular expression that must match the whole value.
    RegularExpression,
}

/// A backend reference with its share of traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedBackend {
    /// Name of an entry in [`FilterConfig::backends`].
    pub backend: String,
    /// Relative weight; 0 means never selected.
    pub weight: u32,
    /// Fallback tier: lower is preferred (0 = primary).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// One (route, rule, backendRef) target: an AIServiceBackend as reached from one rule.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// `<backendNamespace>/<backendName>/route/<routeName>/rule/<ruleIndex>/ref/<refIndex>`, the
    /// value of the selected-backend header and of the `backend_name` metadata.
    pub name: String,
    /// `<namespace>/<name>` of the AIServiceBackend.
    pub service_backend: String,
    /// API schema the backend speaks.
    pub schema: BackendSchema,
    /// Model name sent upstream instead of the one the client asked for.
    pub model_name_override: Option<String>,
    /// Host the upstream request goes to, when the compiler knows it (used for request signing).
    pub upstream_host: Option<String>,
    /// How the extproc authenticates to the backend.
    pub auth: Option<BackendAuth>,
    /// Header changes for the upstream request (backend-level merged with route-level).
    pub header_mutation: Option<HeaderMutation>,
    /// Top-level JSON body changes for the upstream request.
    pub body_mutation: Option<BodyMutation>,
}

/// API schema of a backend, with its version or path prefix.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSchema {
    /// Schema name.
    pub name: ApiSchema,
    /// Version: Azure `api-version`, Anthropic-on-cloud `anthropic_version`, Cohere path version.
    pub version: Option<String>,
    /// Path prefix for OpenAI and Anthropic (default `v1`).
    pub prefix: Option<String>,
}

/// The API schemas upstream supports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum ApiSchema {
    /// OpenAI and every OpenAI-compatible server.
    OpenAI,
    /// Cohere native API (v2).
    Cohere,
    /// AWS Bedrock Converse / InvokeModel.
    AWSBedrock,
    /// Azure OpenAI deployments.
    AzureOpenAI,
    /// Gemini on GCP Vertex AI.
    GCPVertexAI,
    /// Claude on GCP Vertex AI.
    GCPAnthropic,
    /// Anthropic native API.
    Anthropic,
    /// Claude on AWS Bedrock InvokeModel.
    AWSAnthropic,
}

impl ApiSchema {
    /// Every schema, in declaration order.
    pub const ALL: [ApiSchema; 8] = [
        ApiSchema::OpenAI,
        ApiSchema::Cohere,
        ApiSchema::AWSBedrock,
        ApiSchema::AzureOpenAI,
        ApiSchema::GCPVertexAI,
        ApiSchema::GCPAnthropic,
        ApiSchema::Anthropic,
        ApiSchema::AWSAnthropic,
    ];

    /// The name as written in CRDs and in this contract.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiSchema::OpenAI => "OpenAI",
            ApiSchema::Cohere => "Cohere",
            ApiSchema::AWSBedrock => "AWSBedrock",
            ApiSchema::AzureOpenAI => "AzureOpenAI",
            ApiSchema::GCPVertexAI => "GCPVertexAI",
            ApiSchema::GCPAnthropic => "GCPAnthropic",
            ApiSchema::Anthropic => "Anthropic",
            ApiSchema::AWSAnthropic => "AWSAnthropic",
        }
    }

    /// The OpenTelemetry GenAI `gen_ai.provider.name` (metrics, logs, traces).
    pub fn gen_ai_provider_name(self) -> &'static str {
        match self {
            ApiSchema::OpenAI => "openai",
            ApiSchema::AzureOpenAI => "azure.openai",
            ApiSchema::AWSBedrock => "aws.bedrock",
            ApiSchema::AWSAnthropic => "aws.anthropic",
            ApiSchema::GCPVertexAI => "gcp.vertex_ai",
            ApiSchema::GCPAnthropic => "gcp.anthropic",
            ApiSchema::Anthropic => "anthropic",
            ApiSchema::Cohere => "cohere",
        }
    }
}

/// Path prefixes of the AI endpoints clients call: only these reach the extproc. Every
/// endpoint path the extproc serves starts with one of them (its tests check it).
pub const AI_PATH_PREFIXES: [&str; 4] = ["/anthropic", "/cohere", "/tokenize", "/v1"];

impl BackendSchema {
    /// The path prefix of the requests sent to this backend: what the extproc rewrites
    /// `:path` to (`/` when the endpoints sit at the root).
    pub fn upstream_prefix(&self) -> String {
        match self.name {
            ApiSchema::AzureOpenAI => "/openai".to_string(),
            ApiSchema::AWSBedrock | ApiSchema::AWSAnthropic => "/model".to_string(),
            ApiSchema::GCPVertexAI | ApiSchema::GCPAnthropic => "/v1".to_string(),
            ApiSchema::Cohere => format!(
                "/{}",
                self.version.as_deref().unwrap_or("v2").trim_matches('/')
            ),
            ApiSchema::OpenAI | ApiSchema::Anthropic => {
                format!("/{}", self.api_prefix())
            }
        }
    }

    /// The API prefix of an OpenAI or Anthropic server, without slashes (`v1` unless set; empty
    /// when the endpoints sit at the root).
    pub fn api_prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("v1").trim_matches('/')
    }
}

/// Credentials for a backend. Secret material is referenced by file path only.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendAuth {
    /// The credential itself.
    pub credential: Credential,
    /// Per-request credential taken from a header or from dynamic metadata.
    pub credential_override: Option<CredentialOverride>,
}

/// The credential kinds, one per BackendSecurityPolicy type.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Credential {
    /// `Authorization: Bearer <key>`.
    #[serde(rename = "APIKey", rename_all = "camelCase")]
    ApiKey {
        /// File holding the key.
        key_file: String,
    },
    /// `api-key: <key>` (Azure OpenAI).
    #[serde(rename = "AzureAPIKey", rename_all = "camelCase")]
    AzureApiKey {
        /// File holding the key.
        key_file: String,
    },
    /// `x-api-key: <key>` (Anthropic).
    #[serde(rename = "AnthropicAPIKey", rename_all = "camelCase")]
    AnthropicApiKey {
        /// File holding the key.
        key_file: String,
    },
    /// AWS SigV4 signing (service `bedrock`).
    #[serde(rename = "AWSCredentials", rename_all = "camelCase")]
    Aws {
        /// Signing region (the host's region wins when the host encodes one).
        region: String,
        /// Shared credentials file (INI). Absent: environment, web identity, container credentials,
        /// the default shared credentials file, then instance metadata.
        credentials_file: Option<String>,
        /// Profile inside the credentials file.
        profile: Option<String>,
        /// Exchange an OIDC token for AWS credentials with STS `AssumeRoleWithWebIdentity`.
        oidc_exchange: Option<AwsOidcExchange>,
    },
    /// Entra ID token for Azure OpenAI (`Authorization: Bearer`).
    #[serde(rename = "AzureCredentials", rename_all = "camelCase")]
    Azure {
        /// Application (client) ID.
        client_id: String,
        /// Directory (tenant) ID.
        tenant_id: String,
        /// File holding the client secret (client-credentials flow).
        client_secret_file: Option<String>,
        /// Obtain an OIDC token and exchange it with Entra ID (federated credentials).
        oidc_exchange: Option<OidcExchange>,
    },
    /// GCP OAuth token (`Authorization: Bearer`, path prefixed with project and region).
    #[serde(rename = "GCPCredentials", rename_all = "camelCase")]
    Gcp {
        /// GCP project name.
        project_name: String,
        /// GCP region.
        region: String,
        /// Service account key file. Absent (and no federation): application default credentials.
        credentials_file: Option<String>,
        /// Workload identity federation.
        workload_identity_federation: Option<GcpWorkloadIdentityFederation>,
    },
}

impl Credential {
    /// The OIDC token request whose token the credential exchanges, if it exchanges one.
    pub fn oidc_exchange_mut(&mut self) -> Option<&mut OidcExchange> {
        match self {
            Credential::Aws { oidc_exchange, .. } => oidc_exchange.as_mut().map(|e| &mut e.oidc),
            Credential::Azure { oidc_exchange, .. } => oidc_exchange.as_mut(),
            Credential::Gcp {
                workload_identity_federation,
                ..
            } => workload_identity_federation.as_mut().map(|f| &mut f.oidc),
            Credential::ApiKey { .. }
            | Credential::AzureApiKey { .. }
            | Credential::AnthropicApiKey { .. } => None,
        }
    }
}

/// An OIDC client-credentials token request, whose token is then exchanged with a cloud provider.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcExchange {
    /// Issuer URL of the identity provider.
    pub issuer: String,
    /// Token endpoint, when it differs from the issuer's discovery document.
    pub token_endpoint: Option<String>,
    /// OAuth client ID.
    pub client_id: String,
    /// File holding the OAuth client secret.
    pub client_secret_file: String,
    /// Scopes requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Grant type for the exchange, when not the provider default.
    pub grant_type: Option<String>,
    /// Audience for the exchange, when not the provider default.
    pub aud: Option<String>,
}

/// OIDC exchange for AWS: an [`OidcExchange`] plus the role to assume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsOidcExchange {
    /// The OIDC token request.
    pub oidc: OidcExchange,
    /// ARN of the role assumed with the OIDC token.
    pub aws_role_arn: String,
}

/// GCP workload identity federation settings.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpWorkloadIdentityFederation {
    /// Project ID that owns the workload identity pool.
    pub project_id: String,
    /// Workload identity pool name.
    pub workload_identity_pool_name: String,
    /// Workload identity provider name.
    pub workload_identity_provider_name: String,
    /// Service account impersonated with the federated token, if any.
    pub service_account_name: Option<String>,
    /// The OIDC token request whose token is federated.
    pub oidc: OidcExchange,
}

/// Where a per-request credential comes from.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialOverride {
    /// Request header holding the credential (AWS: prefix of the three headers). Removed upstream.
    pub header_name: Option<String>,
    /// Dynamic metadata namespace holding the credential.
    pub metadata_namespace: Option<String>,
    /// Dynamic metadata key holding the credential.
    pub metadata_key: Option<String>,
    /// Use the configured credential when the request carries none (else 401).
    pub fallback_to_configured: bool,
}

/// Header changes applied to the upstream request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMutation {
    /// Headers set (lower-cased names, sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Headers removed (lower-cased, sorted, unique).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    /// Lower-cased header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// Top-level JSON body changes applied to the upstream request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyMutation {
    /// Fields set; `value` is JSON text (a bare word is taken as a string).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<BodyField>,
    /// Top-level fields removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A top-level body field and its JSON value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyField {
    /// Top-level field name.
    pub path: String,
    /// JSON text of the value.
    pub value: String,
}

/// A cost computed from token usage and written as dynamic metadata.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmRequestCost {
    /// Metadata key under [`METADATA_NAMESPACE`].
    pub metadata_key: String,
    /// What is counted.
    #[serde(rename = "type")]
    pub cost_type: CostType,
    /// CEL expression (only for [`CostType::CEL`]); checked to compile by the compiler.
    pub cel: Option<String>,
    /// Only for requests to this AIServiceBackend (`<namespace>/<name>`).
    pub service_backend: Option<String>,
    /// Only for requests whose upstream model is this one.
    pub model: Option<String>,
}

/// Token counts a cost can be based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum CostType {
    /// Input (prompt) tokens.
    InputToken,
    /// Cached input tokens.
    CachedInputToken,
    /// Input tokens written to the cache.
    CacheCreationInputToken,
    /// Output (completion) tokens.
    OutputToken,
    /// Input plus output tokens.
    TotalToken,
    /// Reasoning tokens.
    ReasoningToken,
    /// A CEL expression over the token counts, model, backend and route.
    CEL,
}

/// A model listed by `/v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Model {
    /// Model name (the Exact `x-ai-eg-model` match value).
    pub id: String,
    /// `owned_by` field.
    pub owned_by: String,
    /// `created` field, Unix seconds.
    pub created: i64,
}

impl FilterConfig {
    /// An empty configuration of the current version.
    pub fn new(max_request_body_bytes: u64) -> Self {
        FilterConfig {
            api_version: API_VERSION.to_string(),
            max_request_body_bytes,
            routes: Vec::new(),
            backends: Vec::new(),
            global_costs: Vec::new(),
            parts: Vec::new(),
        }
    }

    /// Adds a part's routes and backends after those already held; call [`FilterConfig::check`]
    /// once every part is in.
    pub fn absorb(&mut self, part: FilterConfigPart) {
        self.routes.extend(part.routes);
        self.backends.extend(part.backends);
    }

    /// Reads a configuration from its JSON form, checks the version first (so an old or new file
    /// gets a version message, not a field error), then the structure and cross-references.
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        check_version(&value)?;
        let config: FilterConfig = decode(value)?;
        config.check()?;
        Ok(config)
    }

    /// Checks the cross-references that serde cannot: unique names, existing backends, CEL present
    /// exactly for CEL costs.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut backends = BTreeSet::new();
        for backend in &self.backends {
            if !backends.insert(backend.name.as_str()) {
                return Err(ConfigError::Inconsistent(format!(
                    "backend {:?} is declared twice",
                    backend.name
                )));
            }
        }
        let mut routes = BTreeSet::new();
        let mut clusters = BTreeSet::new();
        for route in &self.routes {
            if !routes.insert(route.name.as_str()) {
                return Err(ConfigError::Inconsistent(format!(
                    "route {:?} is declared twice",
                    route.name
                )));
            }
            for (index, rule) in route.rules.iter().enumerate() {
                for target in &rule.backends {
                    if !backends.contains(target.backend.as_str()) {
                        return Err(ConfigError::Inconsistent(format!(
                            "route {:?} rule {index} names unknown backend {:?}",
                            route.name, target.backend
                        )));
                    }
                }
                if let Some(cluster) = &rule.cluster
                    && !clusters.insert(cluster.as_str())
                {
                    return Err(ConfigError::Inconsistent(format!(
                        "route {:?} rule {index}: cluster {cluster:?} belongs to another rule too",
                        route.name
                    )));
                }
            }
            check_costs(&route.costs)?;
        }
        check_costs(&self.global_costs)
    }
}

fn check_version(value: &serde_json::Value) -> Result<(), ConfigError> {
    match value.get("apiVersion").and_then(serde_json::Value::as_str) {
        Some(API_VERSION) => Ok(()),
        Some(other) => Err(ConfigError::UnsupportedVersion {
            found: other.to_string(),
            expected: API_VERSION,
        }),
        None => Err(ConfigError::Invalid(
            "missing string field `apiVersion`".into(),
        )),
    }
}

fn check_costs(costs: &[LlmRequestCost]) -> Result<(), ConfigError> {
    for cost in costs {
        let has_cel = cost
            .cel
            .as_deref()
            .is_some_and(|cel| !cel.trim().is_empty());
        match (cost.cost_type, has_cel) {
            (CostType::CEL, false) => {
                return Err(ConfigError::Inconsistent(format!(
                    "cost {:?} has type CEL but no expression",
                    cost.metadata_key
                )));
            }
            (CostType::CEL, true) | (_, false) => {}
            (_, true) => {
                return Err(ConfigError::Inconsistent(format!(
                    "cost {:?} has an expression but type {:?}",
                    cost.metadata_key, cost.cost_type
                )));
            }
        }
    }
    Ok(())
}

fn decode(value: serde_json::Value) -> Result<FilterConfig, ConfigError> {
    serde_json::from_value(value).map_err(|err| ConfigError::Invalid(err.to_string()))
}

/// The JSON Schema of [`FilterConfig`].
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(FilterConfig)).unwrap_or(serde_json::Value::Null)
}

/// The JSON Schema of a part file ([`FilterConfigPart`]).
pub fn part_json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(FilterConfigPart)).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> serde_json::Value {
        json!({
            "apiVersion": API_VERSION,
            "maxRequestBodyBytes": 1024,
            "routes": [{
                "name": "default/route",
                "rules": [{
                    "matches": [{"headers": [{"name": "x-ai-eg-model", "type": "Exact", "value": "gpt-4o"}]}],
                    "backends": [{"backend": "default/openai/route/route/rule/0/ref/0", "weight": 1}]
                }],
                "costs": [{"metadataKey": "tokens", "type": "CEL", "cel": "input_tokens + output_tokens"}]
            }],
            "backends": [{
                "name": "default/openai/route/route/rule/0/ref/0",
                "serviceBackend": "default/openai",
                "schema": {"name": "OpenAI", "prefix": "v1"},
                "auth": {"credential": {"type": "APIKey", "keyFile": "/etc/aigw/secrets/openai/apiKey"}}
            }]
        })
    }

    /// `ALL` lists every schema once, and every name the JSON Schema allows is one of them.
    #[test]
    fn every_schema_is_listed_once_with_its_identity() {
        let names: Vec<&str> = ApiSchema::ALL.iter().map(|s| s.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        // The JSON Schema lists every variant (`oneOf` of `const`s): each must be in `ALL`.
        let schema = serde_json::to_value(schemars::schema_for!(ApiSchema)).unwrap_or_default();
        let mut allowed: Vec<&str> = schema["oneOf"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(schema["enum"].as_array().into_iter().flatten())
            .filter_map(|v| v.get("const").unwrap_or(v).as_str())
            .collect();
        allowed.sort_unstable();
        assert_eq!(allowed, unique, "ApiSchema::ALL and the enum differ");
        for name in &names {
            let parsed: ApiSchema =
                serde_json::from_value(json!(name)).unwrap_or(ApiSchema::OpenAI);
            assert_eq!(parsed.as_str(), *name);
        }
        for schema in ApiSchema::ALL {
            assert!(!schema.gen_ai_provider_name().is_empty());
            let backend = BackendSchema {
                name: schema,
                version: None,
                prefix: None,
            };
            assert!(backend.upstream_prefix().starts_with('/'), "{schema:?}");
        }
    }

    #[test]
    fn upstream_prefixes_follow_the_schema_version_and_prefix() {
        let of = |name, version: Option<&str>, prefix: Option<&str>| {
            BackendSchema {
                name,
                version: version.map(str::to_string),
                prefix: prefix.map(str::to_string),
            }
            .upstream_prefix()
        };
        assert_eq!(of(ApiSchema::OpenAI, None, None), "/v1");
        assert_eq!(of(ApiSchema::OpenAI, None, Some("/api/v2/")), "/api/v2");
        assert_eq!(of(ApiSchema::OpenAI, None, Some("")), "/");
        assert_eq!(of(ApiSchema::Cohere, Some("v3"), None), "/v3");
        assert_eq!(of(ApiSchema::Cohere, None, None), "/v2");
        assert_eq!(
            of(ApiSchema::AzureOpenAI, Some("2024-10-21"), None),
            "/openai"
        );
        assert_eq!(of(ApiSchema::AWSAnthropic, None, None), "/model");
        assert_eq!(of(ApiSchema::GCPVertexAI, None, None), "/v1");
    }

    #[test]
    fn reads_a_valid_config_and_round_trips() -> Result<(), ConfigError> {
        let config = FilterConfig::from_json_value(sample())?;
        assert_eq!(config.backends[0].schema.name, ApiSchema::OpenAI);
        assert!(matches!(
            config.backends[0].auth.as_ref().map(|a| &a.credential),
            Some(Credential::ApiKey { key_file }) if key_file == "/etc/aigw/secrets/openai/apiKey"
        ));
        let back =
            serde_json::to_value(&config).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        assert_eq!(back, sample());
        Ok(())
    }

    #[test]
    fn rejects_other_versions_with_a_version_message() {
        let mut doc = sample();
        doc["apiVersion"] = json!("aigw.envoyproxy.io/filterconfig/v9");
        let err = FilterConfig::from_json_value(doc).err();
        assert!(
            matches!(err, Some(ConfigError::UnsupportedVersion { ref found, .. }) if found.ends_with("v9"))
        );
    }

    #[test]
    fn rejects_unknown_fields() {
        let mut doc = sample();
        doc["routes"][0]["surprise"] = json!(true);
        assert!(matches!(
            FilterConfig::from_json_value(doc),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn rejects_dangling_backend() {
        let mut doc = sample();
        doc["routes"][0]["rules"][0]["backends"][0]["backend"] = json!("nope");
        let err = FilterConfig::from_json_value(doc).err();
        assert!(
            matches!(err, Some(ConfigError::Inconsistent(ref m)) if m.contains("unknown backend"))
        );
    }

    #[test]
    fn rejects_cel_cost_without_expression() {
        let mut doc = sample();
        doc["routes"][0]["costs"][0]
            .as_object_mut()
            .map(|cost| cost.remove("cel"));
        let err = FilterConfig::from_json_value(doc).err();
        assert!(
            matches!(err, Some(ConfigError::Inconsistent(ref m)) if m.contains("no expression"))
        );
    }

    #[test]
    fn oidc_exchanges_are_found_in_every_credential_that_has_one() {
        let oidc = OidcExchange {
            issuer: "https://issuer.example.com".into(),
            token_endpoint: None,
            client_id: "client".into(),
            client_secret_file: "/secret".into(),
            scopes: Vec::new(),
            grant_type: None,
            aud: None,
        };
        let mut credentials = [
            Credential::Aws {
                region: "us-east-1".into(),
                credentials_file: None,
                profile: None,
                oidc_exchange: Some(AwsOidcExchange {
                    oidc: oidc.clone(),
                    aws_role_arn: "arn".into(),
                }),
            },
            Credential::Azure {
                client_id: "c".into(),
                tenant_id: "t".into(),
                client_secret_file: None,
                oidc_exchange: Some(oidc.clone()),
            },
            Credential::Gcp {
                project_name: "p".into(),
                region: "r".into(),
                credentials_file: None,
                workload_identity_federation: Some(GcpWorkloadIdentityFederation {
                    project_id: "p".into(),
                    workload_identity_pool_name: "pool".into(),
                    workload_identity_provider_name: "provider".into(),
                    service_account_name: None,
                    oidc: oidc.clone(),
                }),
            },
        ];
        for credential in &mut credentials {
            assert_eq!(credential.oidc_exchange_mut(), Some(&mut oidc.clone()));
        }
        let mut key = Credential::ApiKey {
            key_file: "/key".into(),
        };
        assert_eq!(key.oidc_exchange_mut(), None);
        let mut plain_aws = Credential::Aws {
            region: "us-east-1".into(),
            credentials_file: None,
            profile: None,
            oidc_exchange: None,
        };
        assert_eq!(plain_aws.oidc_exchange_mut(), None);
    }

    #[test]
    fn schema_names_every_api_schema() {
        let schema = json_schema().to_string();
        for name in ApiSchema::ALL {
            assert!(
                schema.contains(name.as_str()),
                "{name:?} missing from schema"
            );
        }
    }
}
