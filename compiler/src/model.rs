//! The input API: Envoy AI Gateway custom resources as Rust types.
//!
//! These types mirror the upstream CRDs (`aigateway.envoyproxy.io` v1beta1, v1alpha1 and
//! QuotaPolicy v1alpha1) field for field. Their JSON Schema, derived with schemars, carries the
//! CRD's structural constraints (required fields, enums, lengths, patterns, list sizes) and is
//! what [`crate::validate`] checks documents against before they are deserialized; the CEL rules
//! of the CRDs are re-expressed in `validate::rules`. Defaults the API server would apply are
//! serde defaults here; an absent optional field stays absent when written back
//! (`skip_serializing_none` on the types that have one).
//!
//! Types embedded from Envoy Gateway that only matter to the OIDC token exchange (the provider's
//! `backendSettings`, cookie settings, ...) are kept as opaque JSON.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// `aigateway.envoyproxy.io`.
pub const AIGW_GROUP: &str = "aigateway.envoyproxy.io";
/// `gateway.networking.k8s.io`.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// `gateway.envoyproxy.io`.
pub const EG_GROUP: &str = "gateway.envoyproxy.io";

const DNS_SUBDOMAIN_OR_EMPTY: &str =
    r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const KIND: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
const KIND_OR_EMPTY: &str = r"^$|^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
const HOSTNAME: &str = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const HEADER_NAME: &str = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$";
/// Gateway API duration syntax.
pub const DURATION: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// Object metadata: the fields the compiler reads. Others are accepted and ignored.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace; the default namespace when absent.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Creation time, when the input was exported from a cluster.
    pub creation_timestamp: Option<String>,
}

/// A custom resource: metadata plus a typed spec. `status` is accepted and dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource<S> {
    /// `group/version`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Desired state.
    pub spec: S,
    /// Observed state (ignored).
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

/// AIGatewayRoute.
pub type AiGatewayRoute = Resource<AiGatewayRouteSpec>;
/// AIServiceBackend.
pub type AiServiceBackend = Resource<AiServiceBackendSpec>;
/// BackendSecurityPolicy.
pub type BackendSecurityPolicy = Resource<BackendSecurityPolicySpec>;
/// GatewayConfig.
pub type GatewayConfig = Resource<GatewayConfigSpec>;
/// QuotaPolicy.
pub type QuotaPolicy = Resource<QuotaPolicySpec>;

/// Gateway API ParentReference.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    /// Group of the parent (default `gateway.networking.k8s.io`).
    #[serde(default = "default_gateway_group")]
    #[schemars(length(max = 253), pattern(DNS_SUBDOMAIN_OR_EMPTY))]
    pub group: String,
    /// Kind of the parent (default `Gateway`).
    #[serde(default = "default_gateway_kind")]
    #[schemars(length(min = 1, max = 63), pattern(KIND))]
    pub kind: String,
    /// Namespace of the parent (default: the route's).
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub namespace: Option<String>,
    /// Name of the parent.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Listener name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub section_name: Option<String>,
    /// Listener port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

fn default_gateway_group() -> String {
    GATEWAY_GROUP.to_string()
}
fn default_gateway_kind() -> String {
    "Gateway".to_string()
}

/// AIGatewayRoute spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiGatewayRouteSpec {
    /// Gateways the route attaches to.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub parent_refs: Vec<ParentReference>,
    /// Hostnames served.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253), pattern(HOSTNAME)))]
    pub hostnames: Vec<String>,
    /// Routing rules.
    #[schemars(length(max = 15))]
    pub rules: Vec<AiGatewayRouteRule>,
    /// Token costs written as dynamic metadata.
    #[serde(default, rename = "llmRequestCosts")]
    #[schemars(length(max = 36))]
    pub llm_request_costs: Vec<LlmRequestCost>,
}

/// One AIGatewayRoute rule.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiGatewayRouteRule {
    /// Rule name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub name: Option<String>,
    /// Backends.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub backend_refs: Vec<AiGatewayRouteRuleBackendRef>,
    /// Header matches.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub matches: Vec<AiGatewayRouteRuleMatch>,
    /// Request timeouts.
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Idle timeout of streamed responses.
    #[schemars(pattern(DURATION))]
    pub stream_idle_timeout: Option<String>,
    /// `owned_by` in `/v1/models`.
    #[serde(default = "default_owned_by")]
    pub models_owned_by: String,
    /// `created` in `/v1/models` (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub models_created_at: Option<String>,
}

fn default_owned_by() -> String {
    "Envoy AI Gateway".to_string()
}

/// A backend of an AIGatewayRoute rule.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiGatewayRouteRuleBackendRef {
    /// AIServiceBackend (or InferencePool) name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Namespace (default: the route's).
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub namespace: Option<String>,
    /// Group, only for InferencePool.
    #[schemars(length(max = 253), pattern(DNS_SUBDOMAIN_OR_EMPTY))]
    pub group: Option<String>,
    /// Kind, only for InferencePool.
    #[schemars(length(max = 63), pattern(KIND_OR_EMPTY))]
    pub kind: Option<String>,
    /// Model name sent upstream.
    pub model_name_override: Option<String>,
    /// Route-level header mutation.
    pub header_mutation: Option<HttpHeaderMutation>,
    /// Route-level body mutation.
    pub body_mutation: Option<HttpBodyMutation>,
    /// Weight (default 1; 0 disables).
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub weight: i64,
    /// Fallback priority (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 2147483647))]
    pub priority: i64,
}

fn default_weight() -> i64 {
    1
}

/// Header matches of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiGatewayRouteRuleMatch {
    /// Header conditions, all of which must hold.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub headers: Vec<HttpHeaderMatch>,
}

/// Gateway API HTTPHeaderMatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderMatch {
    /// Header name (case-insensitive).
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME))]
    pub name: String,
    /// Match type (default Exact).
    #[serde(default, rename = "type")]
    pub match_type: HeaderMatchType,
    /// Value or regular expression.
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

/// Header match types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HeaderMatchType {
    /// Exact match.
    #[default]
    Exact,
    /// Regular expression.
    RegularExpression,
}

/// Gateway API HTTPRouteTimeouts.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    /// Whole-request timeout.
    #[schemars(pattern(DURATION))]
    pub request: Option<String>,
    /// Per upstream attempt timeout.
    #[schemars(pattern(DURATION))]
    pub backend_request: Option<String>,
}

/// Header mutation (AIServiceBackend or backendRef).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderMutation {
    /// Headers to set.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub set: Vec<HttpHeader>,
    /// Headers to remove.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub remove: Vec<String>,
}

/// A header to set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    /// Header name.
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME))]
    pub name: String,
    /// Header value.
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

/// Body mutation (AIServiceBackend or backendRef).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBodyMutation {
    /// Fields to set.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub set: Vec<HttpBodyField>,
    /// Top-level fields to remove.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub remove: Vec<String>,
}

/// A body field to set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBodyField {
    /// Top-level field name.
    #[schemars(length(min = 1))]
    pub path: String,
    /// JSON value.
    pub value: String,
}

/// LLMRequestCost.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmRequestCost {
    /// Metadata key.
    pub metadata_key: String,
    /// Cost type.
    #[serde(rename = "type")]
    pub cost_type: aigw_filterconfig::CostType,
    /// CEL expression for type CEL.
    pub cel: Option<String>,
}

/// AIServiceBackend spec.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AiServiceBackendSpec {
    /// Output API schema.
    pub schema: VersionedApiSchema,
    /// The Envoy Gateway Backend.
    pub backend_ref: BackendObjectReference,
    /// Backend-level header mutation.
    pub header_mutation: Option<HttpHeaderMutation>,
    /// Backend-level body mutation.
    pub body_mutation: Option<HttpBodyMutation>,
}

/// VersionedAPISchema.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionedApiSchema {
    /// Schema name.
    pub name: aigw_filterconfig::ApiSchema,
    /// Version.
    pub version: Option<String>,
    /// Path prefix.
    pub prefix: Option<String>,
}

/// Gateway API BackendObjectReference.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendObjectReference {
    /// Group (default core).
    #[serde(default)]
    #[schemars(length(max = 253), pattern(DNS_SUBDOMAIN_OR_EMPTY))]
    pub group: String,
    /// Kind (default Service).
    #[serde(default = "default_service_kind")]
    #[schemars(length(min = 1, max = 63), pattern(KIND))]
    pub kind: String,
    /// Name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace (default: the referrer's).
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub namespace: Option<String>,
    /// Port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

fn default_service_kind() -> String {
    "Service".to_string()
}

/// Gateway API SecretObjectReference.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretObjectReference {
    /// Group (default core).
    #[serde(default)]
    #[schemars(length(max = 253), pattern(DNS_SUBDOMAIN_OR_EMPTY))]
    pub group: String,
    /// Kind (default Secret).
    #[serde(default = "default_secret_kind")]
    #[schemars(length(min = 1, max = 63), pattern(KIND))]
    pub kind: String,
    /// Name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace (default: the referrer's).
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub namespace: Option<String>,
}

fn default_secret_kind() -> String {
    "Secret".to_string()
}

/// Gateway API LocalPolicyTargetReference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalPolicyTargetReference {
    /// Group.
    #[schemars(length(max = 253), pattern(DNS_SUBDOMAIN_OR_EMPTY))]
    pub group: String,
    /// Kind.
    #[schemars(length(min = 1, max = 63), pattern(KIND))]
    pub kind: String,
    /// Name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// BackendSecurityPolicy spec.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("maxProperties" = 4))]
pub struct BackendSecurityPolicySpec {
    /// AIServiceBackends (or InferencePools) protected.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub target_refs: Vec<LocalPolicyTargetReference>,
    /// Credential type.
    #[serde(rename = "type")]
    pub policy_type: SecurityPolicyType,
    /// For type APIKey.
    pub api_key: Option<SecretKeyRef>,
    /// For type AzureAPIKey.
    #[serde(rename = "azureAPIKey")]
    pub azure_api_key: Option<SecretKeyRef>,
    /// For type AnthropicAPIKey.
    #[serde(rename = "anthropicAPIKey")]
    pub anthropic_api_key: Option<SecretKeyRef>,
    /// For type AWSCredentials.
    pub aws_credentials: Option<AwsCredentials>,
    /// For type AzureCredentials.
    pub azure_credentials: Option<AzureCredentials>,
    /// For type GCPCredentials.
    pub gcp_credentials: Option<GcpCredentials>,
    /// Per-request credential (v1beta1 only).
    pub credential_override: Option<CredentialOverride>,
}

/// BackendSecurityPolicy types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SecurityPolicyType {
    /// Bearer API key.
    #[serde(rename = "APIKey")]
    ApiKey,
    /// AWS SigV4.
    #[serde(rename = "AWSCredentials")]
    AwsCredentials,
    /// Azure `api-key`.
    #[serde(rename = "AzureAPIKey")]
    AzureApiKey,
    /// Azure Entra ID.
    #[serde(rename = "AzureCredentials")]
    AzureCredentials,
    /// GCP.
    #[serde(rename = "GCPCredentials")]
    GcpCredentials,
    /// Anthropic `x-api-key`.
    #[serde(rename = "AnthropicAPIKey")]
    AnthropicApiKey,
}

impl SecurityPolicyType {
    /// The field of the spec that configures this type (`apiKey` for `APIKey`).
    pub fn field(self) -> &'static str {
        match self {
            SecurityPolicyType::ApiKey => "apiKey",
            SecurityPolicyType::AwsCredentials => "awsCredentials",
            SecurityPolicyType::AzureApiKey => "azureAPIKey",
            SecurityPolicyType::AzureCredentials => "azureCredentials",
            SecurityPolicyType::GcpCredentials => "gcpCredentials",
            SecurityPolicyType::AnthropicApiKey => "anthropicAPIKey",
        }
    }
}

/// `{secretRef}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret (key `apiKey`).
    pub secret_ref: SecretObjectReference,
}

/// AWS credentials.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCredentials {
    /// Region.
    #[schemars(length(min = 1))]
    pub region: String,
    /// Credentials file Secret (key `credentials`).
    pub credentials_file: Option<AwsCredentialsFile>,
    /// OIDC token exchange.
    pub oidc_exchange_token: Option<AwsOidcExchangeToken>,
}

/// AWS credentials file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCredentialsFile {
    /// The Secret.
    pub secret_ref: SecretObjectReference,
    /// Profile (default `default`).
    #[serde(default = "default_profile")]
    pub profile: String,
}

fn default_profile() -> String {
    "default".to_string()
}

/// AWS OIDC exchange.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsOidcExchangeToken {
    /// OIDC client settings.
    pub oidc: Oidc,
    /// Grant type.
    pub grant_type: Option<String>,
    /// Audience.
    pub aud: Option<String>,
    /// Role to assume.
    #[schemars(length(min = 1))]
    pub aws_role_arn: String,
}

/// OIDC exchange (Azure, GCP).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcExchangeToken {
    /// OIDC client settings.
    pub oidc: Oidc,
    /// Grant type.
    pub grant_type: Option<String>,
    /// Audience.
    pub aud: Option<String>,
}

/// Envoy Gateway OIDC settings, as embedded in BackendSecurityPolicy.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Oidc {
    /// Identity provider.
    pub provider: OidcProvider,
    /// Client ID.
    #[serde(rename = "clientID")]
    #[schemars(length(min = 1))]
    pub client_id: Option<String>,
    /// Secret holding the client ID (key `client-id`).
    #[serde(rename = "clientIDRef")]
    pub client_id_ref: Option<SecretObjectReference>,
    /// Secret holding the client secret (key `client-secret`).
    pub client_secret: SecretObjectReference,
    /// Scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Envoy Gateway browser-flow settings, not used by token exchange.
    pub cookie_config: Option<serde_json::Value>,
    /// Not used by token exchange.
    #[schemars(pattern(DNS_SUBDOMAIN))]
    pub cookie_domain: Option<String>,
    /// Not used by token exchange.
    pub cookie_names: Option<serde_json::Value>,
    /// Not used by token exchange.
    #[serde(rename = "csrfTokenTTL")]
    #[schemars(pattern(DURATION))]
    pub csrf_token_ttl: Option<String>,
    /// Not used by token exchange.
    #[serde(rename = "defaultRefreshTokenTTL")]
    #[schemars(pattern(DURATION))]
    pub default_refresh_token_ttl: Option<String>,
    /// Not used by token exchange.
    #[serde(rename = "defaultTokenTTL")]
    #[schemars(pattern(DURATION))]
    pub default_token_ttl: Option<String>,
    /// Not used by token exchange.
    pub deny_redirect: Option<serde_json::Value>,
    /// Not used by token exchange.
    pub disable_token_encryption: Option<bool>,
    /// Not used by token exchange.
    pub forward_access_token: Option<bool>,
    /// Not used by token exchange.
    #[serde(rename = "forwardIDToken")]
    pub forward_id_token: Option<serde_json::Value>,
    /// Not used by token exchange.
    pub logout_path: Option<String>,
    /// Not used by token exchange.
    pub pass_through_auth_header: Option<bool>,
    /// Not used by token exchange.
    #[serde(rename = "redirectURL")]
    pub redirect_url: Option<String>,
    /// Not used by token exchange.
    pub refresh_token: Option<bool>,
}

/// Envoy Gateway OIDC provider.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcProvider {
    /// Issuer URL.
    #[schemars(length(min = 1))]
    pub issuer: String,
    /// Authorization endpoint.
    pub authorization_endpoint: Option<String>,
    /// Token endpoint.
    pub token_endpoint: Option<String>,
    /// End-session endpoint.
    pub end_session_endpoint: Option<String>,
    /// Deprecated single backend (rejected by a CEL rule).
    pub backend_ref: Option<serde_json::Value>,
    /// Backends reaching the provider (Envoy Gateway feature; not used by the extproc).
    pub backend_refs: Option<serde_json::Value>,
    /// Envoy Gateway connection settings (not used by the extproc).
    pub backend_settings: Option<serde_json::Value>,
}

/// Azure credentials.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureCredentials {
    /// Client ID.
    #[serde(rename = "clientID")]
    #[schemars(length(min = 1))]
    pub client_id: String,
    /// Tenant ID.
    #[serde(rename = "tenantID")]
    #[schemars(length(min = 1))]
    pub tenant_id: String,
    /// Client secret Secret (key `client-secret`).
    pub client_secret_ref: Option<SecretObjectReference>,
    /// OIDC exchange.
    pub oidc_exchange_token: Option<OidcExchangeToken>,
}

/// GCP credentials.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpCredentials {
    /// Project name.
    #[schemars(length(min = 1))]
    pub project_name: String,
    /// Region.
    #[schemars(length(min = 1))]
    pub region: String,
    /// Service account key Secret (key `service_account.json`).
    pub credentials_file: Option<GcpCredentialsFile>,
    /// Workload identity federation.
    pub workload_identity_federation_config: Option<GcpWorkloadIdentityFederationConfig>,
}

/// GCP credentials file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpCredentialsFile {
    /// The Secret.
    pub secret_ref: SecretObjectReference,
}

/// GCP workload identity federation.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpWorkloadIdentityFederationConfig {
    /// Project ID of the pool.
    #[serde(rename = "projectID")]
    #[schemars(length(min = 1))]
    pub project_id: String,
    /// Pool name.
    #[schemars(length(min = 1))]
    pub workload_identity_pool_name: String,
    /// Provider name.
    #[schemars(length(min = 1))]
    pub workload_identity_provider_name: String,
    /// OIDC token to federate.
    pub oidc_exchange_token: OidcExchangeToken,
    /// Service account to impersonate.
    pub service_account_impersonation: Option<ServiceAccountImpersonation>,
}

/// Service account impersonation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountImpersonation {
    /// Service account name.
    #[schemars(length(min = 1))]
    pub service_account_name: String,
}

/// Per-request credential source.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct CredentialOverride {
    /// From request headers.
    pub from_request_headers: Option<CredentialFromHeaders>,
    /// From dynamic metadata.
    pub from_dynamic_metadata: Option<CredentialFromMetadata>,
}

/// Credential from request headers.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialFromHeaders {
    /// Header name (or AWS prefix); default per type.
    pub header: Option<String>,
    /// Fall back to the configured credential (default true).
    #[serde(default = "default_true")]
    pub fallback_to_configured: bool,
}

/// Credential from dynamic metadata.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialFromMetadata {
    /// Metadata namespace.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// Metadata key; default per type.
    pub key: Option<String>,
    /// Fall back to the configured credential (default true).
    #[serde(default = "default_true")]
    pub fallback_to_configured: bool,
}

fn default_true() -> bool {
    true
}

/// GatewayConfig spec.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfigSpec {
    /// Extproc workload settings.
    pub ext_proc: Option<GatewayConfigExtProc>,
    /// Gateway-wide costs.
    #[serde(default, rename = "globalLLMRequestCosts")]
    pub global_llm_request_costs: Vec<LlmRequestCost>,
    /// HTTP CONNECT proxy for upstream connections.
    pub forward_proxy: Option<ForwardProxy>,
}

/// `extProc`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfigExtProc {
    /// Container settings.
    pub kubernetes: Option<KubernetesContainerSpec>,
}

/// Envoy Gateway KubernetesContainerSpec.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesContainerSpec {
    /// Environment variables (core/v1 EnvVar).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<serde_json::Value>,
    /// Image with tag or digest.
    pub image: Option<String>,
    /// Image repository; the default tag is kept.
    pub image_repository: Option<String>,
    /// Resources (core/v1 ResourceRequirements).
    pub resources: Option<serde_json::Value>,
    /// Container security context (core/v1 SecurityContext); replaces the default.
    pub security_context: Option<serde_json::Value>,
    /// Extra volume mounts (core/v1 VolumeMount).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<serde_json::Value>,
}

/// Forward proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardProxy {
    /// `host:port`.
    #[schemars(length(min = 1))]
    pub address: String,
}

/// QuotaPolicy spec.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaPolicySpec {
    /// AIServiceBackends the quota applies to.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub target_refs: Vec<LocalPolicyTargetReference>,
    /// Quota over all models (not enforced upstream either).
    pub service_quota: Option<ServiceQuota>,
    /// Per-model quotas.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub per_model_quotas: Vec<PerModelQuota>,
}

/// Service-wide quota.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceQuota {
    /// CEL cost expression.
    pub cost_expression: Option<String>,
    /// Limit.
    pub quota: QuotaValue,
}

/// A limit per duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaValue {
    /// Amount per duration.
    #[schemars(range(min = 0))]
    pub limit: u64,
    /// Duration.
    pub duration: QuotaDuration,
}

/// Quota durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum QuotaDuration {
    /// One second.
    #[serde(rename = "1s")]
    Second,
    /// One minute.
    #[serde(rename = "1m")]
    Minute,
    /// One hour.
    #[serde(rename = "1h")]
    Hour,
    /// One day.
    #[serde(rename = "1d")]
    Day,
}

/// Per-model quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PerModelQuota {
    /// Model (a backendRef modelNameOverride).
    #[schemars(length(min = 1))]
    pub model_name: String,
    /// The quota.
    pub quota: ModelQuota,
}

/// Quota of one model.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelQuota {
    /// CEL cost expression (default `total_tokens`).
    pub cost_expression: Option<String>,
    /// Mode (only Shared).
    #[serde(default)]
    pub mode: QuotaMode,
    /// Bucket for requests no rule selects.
    pub default_bucket: Option<QuotaValue>,
    /// Buckets selected by client attributes.
    #[serde(default)]
    pub bucket_rules: Vec<QuotaBucketRule>,
}

/// Quota modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum QuotaMode {
    /// One bucket shared by all clients the rule selects.
    #[default]
    Shared,
}

/// A quota bucket selected by client attributes.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaBucketRule {
    /// Envoy Gateway RateLimitSelectCondition objects.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub client_selectors: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Limit.
    pub quota: QuotaValue,
    /// Count without enforcing.
    pub shadow_mode: Option<bool>,
}
