//! AWS SigV4 signing for Bedrock (service `bedrock`) and the AWS credentials it signs with.
//!
//! [`sign_at`] signs what Envoy will send: the method, `https://<host><path>` (query included)
//! and the sha256 of the body. The signed headers are `host`, `x-amz-date` and, with temporary
//! credentials, `x-amz-security-token` (never `content-length` or anything a proxy may change),
//! and no `x-amz-content-sha256` header is added, as botocore does for bedrock-runtime. The
//! canonical URI is the request path, dot segments removed, URI-encoded once more, exactly as
//! botocore and the AWS SDKs compute it: a model ID sent as `...-v1:0` is signed as `...-v1%3A0`
//! and one sent as `...-v1%3A0` is signed as `...-v1%253A0`. The region is the one a
//! `bedrock-runtime` host names ([`region_for`]), else the configured one.
//!
//! A [`Signer`] takes its credentials, in order of precedence, from:
//! 1. a shared credentials file (`credentialsFile`, INI, profile default `default`), read
//!    when the configuration is built (the configuration reloads when the file changes);
//! 2. an OIDC exchange (`oidcExchangeToken`): a client-credentials token from the identity
//!    provider, exchanged with STS `AssumeRoleWithWebIdentity`, refreshed before it expires;
//! 3. otherwise the default chain, resolved in the background on every refresh:
//!    - `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//!    - web identity (IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` (re-read on every refresh),
//!      `AWS_ROLE_ARN`, `AWS_ROLE_SESSION_NAME`, exchanged with STS;
//!    - container credentials (EKS Pod Identity, ECS): `AWS_CONTAINER_CREDENTIALS_FULL_URI` or
//!      `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, authorized by the token in
//!      `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `AWS_CONTAINER_AUTHORIZATION_TOKEN`;
//!    - the shared credentials file `AWS_SHARED_CREDENTIALS_FILE` (default
//!      `~/.aws/credentials`), profile `AWS_PROFILE` (default `default`);
//!    - EC2 instance metadata (IMDSv2) at `AWS_EC2_METADATA_SERVICE_ENDPOINT` (default
//!      `http://169.254.169.254`), unless `AWS_EC2_METADATA_DISABLED=true`.
//!
//! STS is `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else `https://sts.<region>.amazonaws.com`.
//! Errors name files, profiles, variables and endpoints, never a key, secret or token.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use aigw_filterconfig::AwsOidcExchange;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde_json::Value;

use super::refresh::{Fetch, FetchFuture, Fetched, Refreshing};
use super::{Applied, AuthError, UpstreamCall, http, oidc};
use crate::config::Secret;
use crate::time::parse_rfc3339;

/// Suffixes of the per-request credential headers, after the configured prefix.
pub const OVERRIDE_SUFFIXES: [&str; 3] = ["access-key-id", "secret-access-key", "session-token"];

/// The signing name of Bedrock (runtime and control plane).
const SERVICE: &str = "bedrock";
/// The region a Bedrock runtime host names.
const REGION_FROM_HOST: &str = r"(?:^|\.)bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.(?:vpce\.amazonaws\.com|amazonaws\.com|api\.aws)$";
/// Default instance metadata endpoint.
const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Base of `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS).
const ECS_ENDPOINT: &str = "http://169.254.170.2";
/// How long one instance metadata call may take (off EC2 it never answers).
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one container credentials call may take.
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime asked for an IMDSv2 session token.
const IMDS_TOKEN_TTL: &str = "21600";

/// One set of AWS credentials.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// When temporary credentials expire.
    pub expires_at: Option<SystemTime>,
}

/// The signing region: the one the host names when it is a Bedrock runtime endpoint
/// (`bedrock-runtime[-fips].<region>.amazonaws.com`, `.api.aws`, or a VPC endpoint), else
/// `configured`. A port on the host is ignored.
pub fn region_for(configured: &str, host: &str) -> String {
    static PATTERN: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let host = strip_port(host);
    PATTERN
        .get_or_init(|| regex::Regex::new(REGION_FROM_HOST).ok())
        .as_ref()
        .and_then(|pattern| pattern.captures(host))
        .and_then(|captures| captures.get(1))
        .map_or_else(|| configured.to_string(), |m| m.as_str().to_string())
}

/// `host` without a trailing `:<port>` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

/// Signs `call` with `credentials` for `region` at `time`. Returns the `authorization`,
/// `x-amz-date` and (with a session token) `x-amz-security-token` headers to set.
pub fn sign_at(
    credentials: &AwsCredentials,
    region: &str,
    call: &UpstreamCall<'_>,
    time: SystemTime,
) -> Result<Applied, AuthError> {
    let invalid = |what: String| AuthError::Invalid(format!("cannot sign the AWS request: {what}"));
    if call.host.is_empty() {
        return Err(invalid("it has no host".into()));
    }
    if region.is_empty() {
        return Err(invalid(format!("no region for {}", call.host)));
    }
    if !call.path.starts_with('/') {
        return Err(invalid("the path does not start with /".into()));
    }
    let identity: Identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.as_str(),
        credentials.secret_access_key.expose(),
        credentials
            .session_token
            .as_ref()
            .map(|token| token.expose().to_string()),
        None,
        "aigw",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|err| invalid(err.to_string()))?
        .into();
    let request = SignableRequest::new(
        call.method,
        format!("https://{}{}", call.host, call.path),
        std::iter::once(("host", call.host)),
        SignableBody::Bytes(call.body),
    )
    .map_err(|err| invalid(format!("{}{}: {err}", call.host, call.path)))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|err| invalid(err.to_string()))?
        .into_parts();
    let (headers, _params) = instructions.into_parts();
    let value = |name: &str| {
        headers
            .iter()
            .find(|header| header.name() == name)
            .map(|header| header.value().to_string())
    };
    let mut applied = Applied::default();
    for name in ["authorization", "x-amz-date"] {
        let value = value(name).ok_or_else(|| invalid(format!("the signer set no {name}")))?;
        applied.headers.push((name.to_string(), value));
    }
    if credentials.session_token.is_some() {
        let token = value("x-amz-security-token")
            .ok_or_else(|| invalid("the signer set no x-amz-security-token".into()))?;
        applied
            .headers
            .push(("x-amz-security-token".to_string(), token));
    }
    Ok(applied)
}

/// Looks up an environment variable (non-empty values only).
type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A non-empty environment variable of this process.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Signs requests for one backend.
#[derive(Debug)]
pub struct Signer {
    region: String,
    credentials: Arc<Refreshing<AwsCredentials>>,
}

impl Signer {
    /// Builds the signer of a backend's `AWSCredentials`: from the shared credentials file
    /// (`profile`, default `default`), else the OIDC exchange, else the default chain (see the
    /// module documentation). `base` resolves the relative paths of the OIDC settings. The
    /// OIDC exchange and the default chain need the async runtime, unless the chain finds
    /// keys in the environment.
    pub fn from_config(
        region: &str,
        credentials_file: Option<&Path>,
        profile: Option<&str>,
        oidc: Option<&AwsOidcExchange>,
        base: &Path,
    ) -> Result<Signer, String> {
        Signer::build(
            region,
            credentials_file,
            profile,
            oidc,
            base,
            Arc::new(process_env),
        )
    }

    fn build(
        region: &str,
        credentials_file: Option<&Path>,
        profile: Option<&str>,
        oidc: Option<&AwsOidcExchange>,
        base: &Path,
        env: Env,
    ) -> Result<Signer, String> {
        let credentials = if let Some(file) = credentials_file {
            let profile = profile.filter(|p| !p.is_empty()).unwrap_or("default");
            let credentials = read_credentials_file(file, profile)?;
            Refreshing::fixed(
                format!("AWS credentials ({} profile {profile})", file.display()),
                credentials,
            )
        } else if let Some(exchange) = oidc {
            let fetch = OidcExchangeFetch {
                exchange: exchange.clone(),
                base: base.to_path_buf(),
                sts: sts_endpoint(env.as_ref(), region),
            };
            Refreshing::start(
                format!(
                    "AWS credentials (OIDC exchange for role {})",
                    exchange.aws_role_arn
                ),
                fetch,
            )?
        } else if let Some(credentials) = from_environment(env.as_ref())? {
            Refreshing::fixed("AWS credentials (environment)", credentials)
        } else {
            Refreshing::start(
                "AWS credentials (default chain)",
                DefaultChain {
                    env,
                    region: region.to_string(),
                },
            )?
        };
        Ok(Signer {
            region: region.to_string(),
            credentials,
        })
    }

    /// Signs `call` with the configured credentials.
    pub fn sign(&self, call: &UpstreamCall<'_>) -> Result<Applied, AuthError> {
        let credentials = self.credentials.get()?;
        self.sign_with(&credentials, call)
    }

    /// Signs `call` with `credentials` (a per-request override).
    pub fn sign_with(
        &self,
        credentials: &AwsCredentials,
        call: &UpstreamCall<'_>,
    ) -> Result<Applied, AuthError> {
        sign_at(
            credentials,
            &region_for(&self.region, call.host),
            call,
            SystemTime::now(),
        )
    }

    /// Waits until credentials are available.
    pub async fn ready(&self, timeout: Duration) -> bool {
        self.credentials.ready(timeout).await
    }
}

// ---------------------------------------------------------------------------------------------
// Shared credentials files

/// The `[profile]` sections of an INI file, in order: name, then (lower-case key, value).
type Sections = Vec<(String, Vec<(String, String)>)>;

/// Parses a shared credentials file. Errors give line numbers, never a line's content.
fn parse_ini(text: &str) -> Result<Sections, String> {
    let mut sections: Sections = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .ok_or_else(|| format!("line {number} is not a [profile] header"))?;
            sections.push((name.to_string(), Vec::new()));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {number} is not `key = value`"));
        };
        let Some((_, entries)) = sections.last_mut() else {
            return Err(format!("line {number} precedes the first [profile] header"));
        };
        entries.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(sections)
}

/// A key of `profile` (the last one wins when a profile or key repeats).
fn ini_value<'a>(sections: &'a Sections, profile: &str, key: &str) -> Option<&'a str> {
    sections
        .iter()
        .filter(|(name, _)| name == profile)
        .flat_map(|(_, entries)| entries.iter())
        .filter(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
        .next_back()
}

/// The static credentials of `profile` in the shared credentials file `text`; `None` when the
/// profile does not exist. `path` names the file in errors.
fn profile_credentials(
    path: &Path,
    text: &str,
    profile: &str,
) -> Result<Option<AwsCredentials>, String> {
    let file = path.display();
    let sections = parse_ini(text).map_err(|err| format!("AWS credentials file {file}: {err}"))?;
    if !sections.iter().any(|(name, _)| name == profile) {
        return Ok(None);
    }
    let required = |key: &str| {
        ini_value(&sections, profile, key)
            .ok_or_else(|| format!("AWS credentials file {file}: profile {profile} has no {key}"))
    };
    Ok(Some(AwsCredentials {
        access_key_id: required("aws_access_key_id")?.to_string(),
        secret_access_key: Secret::new(required("aws_secret_access_key")?),
        session_token: ini_value(&sections, profile, "aws_session_token").map(Secret::new),
        expires_at: None,
    }))
}

/// Reads the credentials of `profile` from the shared credentials file `path`.
fn read_credentials_file(path: &Path, profile: &str) -> Result<AwsCredentials, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read AWS credentials file {}: {err}", path.display()))?;
    profile_credentials(path, &text, profile)?.ok_or_else(|| {
        format!(
            "AWS credentials file {}: profile {profile} not found",
            path.display()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Answers of STS, container and instance metadata endpoints

/// The text of the first `<tag>` element in `xml`, entities decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}");
    let mut from = 0;
    while let Some(found) = xml[from..].find(&open) {
        let start = from + found + open.len();
        let rest = &xml[start..];
        match rest.chars().next() {
            Some('>') => {
                let body = &rest[1..];
                let end = body.find(&format!("</{tag}>"))?;
                return Some(xml_unescape(body[..end].trim()));
            }
            Some(c) if c.is_whitespace() => {
                let close = rest.find('>')?;
                if rest[..close].ends_with('/') {
                    return Some(String::new());
                }
                let body = &rest[close + 1..];
                let end = body.find(&format!("</{tag}>"))?;
                return Some(xml_unescape(body[..end].trim()));
            }
            _ => from = start,
        }
    }
    None
}

/// Decodes the XML entities of `text`.
fn xml_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let decoded = after.find(';').and_then(|end| {
            let entity = &after[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &after[len..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The object holding `AccessKeyId` in a JSON answer (at any depth).
fn json_credentials(value: &Value) -> Option<&serde_json::Map<String, Value>> {
    let object = value.as_object()?;
    if object.contains_key("AccessKeyId") {
        return Some(object);
    }
    object.values().find_map(json_credentials)
}

/// A JSON field as text (numbers too).
fn json_text(object: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match object.get(key)? {
        Value::String(text) => Some(text.trim().to_string()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
    .filter(|text| !text.is_empty())
}

/// Credentials fields found in an answer, before validation.
struct Answer {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    expiration: Option<String>,
}

impl Answer {
    /// Reads an XML (STS) or JSON (STS, container, instance metadata) answer.
    fn parse(body: &[u8], what: &str) -> Result<Answer, String> {
        let text = std::str::from_utf8(body)
            .map_err(|_| format!("{what}: the answer is not UTF-8 text"))?
            .trim();
        if text.starts_with('{') {
            let value: Value = serde_json::from_str(text)
                .map_err(|err| format!("{what}: the answer is not JSON: {err}"))?;
            let object = json_credentials(&value)
                .ok_or_else(|| format!("{what}: the answer carries no AccessKeyId"))?;
            if let Some(code) = json_text(object, "Code").filter(|code| code != "Success") {
                return Err(format!("{what}: the answer's Code is {code}"));
            }
            return Ok(Answer {
                access_key_id: json_text(object, "AccessKeyId"),
                secret_access_key: json_text(object, "SecretAccessKey"),
                session_token: json_text(object, "Token")
                    .or_else(|| json_text(object, "SessionToken")),
                expiration: json_text(object, "Expiration"),
            });
        }
        let scope = xml_text(text, "Credentials").unwrap_or_else(|| text.to_string());
        let field = |tag: &str| xml_text(&scope, tag).filter(|v| !v.is_empty());
        Ok(Answer {
            access_key_id: field("AccessKeyId"),
            secret_access_key: field("SecretAccessKey"),
            session_token: field("SessionToken").or_else(|| field("Token")),
            expiration: field("Expiration"),
        })
    }

    /// The credentials; an error names the missing field, never a value.
    fn into_credentials(self, what: &str) -> Result<Fetched<AwsCredentials>, String> {
        let missing = |field: &str| format!("{what}: the answer carries no {field}");
        let expires_at = match self.expiration {
            Some(text) => Some(
                parse_time(&text)
                    .ok_or_else(|| format!("{what}: cannot read the Expiration {text:?}"))?,
            ),
            None => None,
        };
        let credentials = AwsCredentials {
            access_key_id: self.access_key_id.ok_or_else(|| missing("AccessKeyId"))?,
            secret_access_key: Secret::new(
                self.secret_access_key
                    .ok_or_else(|| missing("SecretAccessKey"))?,
            ),
            session_token: self.session_token.map(Secret::new),
            expires_at,
        };
        Ok(Fetched {
            value: credentials,
            expires_at,
        })
    }
}

/// Parses an RFC 3339 time (`2024-06-20T15:04:05Z`, fractions and offsets allowed, see
/// [`parse_rfc3339`]) or a number of seconds since the epoch.
fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        // A time no clock can hold (`1e30`) is no time at all, never a panic.
        return Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|since| SystemTime::UNIX_EPOCH.checked_add(since));
    }
    parse_rfc3339(text)
}

// ---------------------------------------------------------------------------------------------
// STS

/// The STS endpoint: `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, or the regional one.
fn sts_endpoint(env: &(dyn Fn(&str) -> Option<String> + Send + Sync), region: &str) -> String {
    if let Some(url) = env("AWS_ENDPOINT_URL_STS").or_else(|| env("AWS_ENDPOINT_URL")) {
        return url.trim().to_string();
    }
    let region = if region.is_empty() {
        "us-east-1"
    } else {
        region
    };
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sts.{region}.{domain}")
}

/// A role session name when none is configured.
fn default_session_name() -> String {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("aigw-extproc-{millis}")
}

/// Exchanges a web identity token for temporary credentials (an unauthenticated STS call).
async fn assume_role_with_web_identity(
    endpoint: &str,
    role_arn: &str,
    session_name: &str,
    token: &str,
) -> Result<Fetched<AwsCredentials>, String> {
    let what = format!("STS AssumeRoleWithWebIdentity for {role_arn}");
    let body = http::form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token),
    ]);
    let request = http::client()?
        .post(endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let answer = http::send(request, &what, &[token]).await?;
    Answer::parse(&answer, &what)?.into_credentials(&what)
}

/// Temporary credentials from an OIDC client-credentials token exchanged with STS.
struct OidcExchangeFetch {
    exchange: AwsOidcExchange,
    base: PathBuf,
    sts: String,
}

impl OidcExchangeFetch {
    async fn credentials(&self) -> Result<Fetched<AwsCredentials>, String> {
        let token = oidc::client_credentials_token(&self.exchange.oidc, &self.base).await?;
        assume_role_with_web_identity(
            &self.sts,
            &self.exchange.aws_role_arn,
            &default_session_name(),
            &token,
        )
        .await
    }
}

impl Fetch for OidcExchangeFetch {
    type Output = AwsCredentials;

    fn fetch(&self) -> FetchFuture<'_, AwsCredentials> {
        Box::pin(self.credentials())
    }
}

// ---------------------------------------------------------------------------------------------
// The default chain

/// Static keys from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
fn from_environment(
    env: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Result<Option<AwsCredentials>, String> {
    let id = env("AWS_ACCESS_KEY_ID");
    let secret = env("AWS_SECRET_ACCESS_KEY");
    match (id, secret) {
        (None, None) => Ok(None),
        (Some(id), Some(secret)) => Ok(Some(AwsCredentials {
            access_key_id: id.trim().to_string(),
            secret_access_key: Secret::new(secret.trim()),
            session_token: env("AWS_SESSION_TOKEN").map(|t| Secret::new(t.trim())),
            expires_at: None,
        })),
        (Some(_), None) => {
            Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".to_string())
        }
        (None, Some(_)) => {
            Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".to_string())
        }
    }
}

/// Whether a container credentials URL over plain HTTP points at a host the SDKs trust:
/// loopback, or the ECS / EKS Pod Identity agent addresses.
fn container_host_allowed(url: &reqwest::Url) -> bool {
    if url.scheme() == "https" {
        return true;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            ip.is_loopback()
                || ip.octets() == [169, 254, 170, 2]
                || ip.octets() == [169, 254, 170, 23]
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.segments() == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23]
        }
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// The default credential chain, resolved afresh on every refresh.
struct DefaultChain {
    env: Env,
    region: String,
}

/// What a source of the chain found.
enum Found {
    /// Credentials.
    Credentials(Fetched<AwsCredentials>),
    /// The source is not set up here (why, for the error when no source is).
    NotConfigured(String),
}

impl DefaultChain {
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).map(|v| v.trim().to_string())
    }

    async fn resolve(&self) -> Result<Fetched<AwsCredentials>, String> {
        let mut skipped = Vec::new();
        for step in 0..5 {
            let found = match step {
                0 => match from_environment(self.env.as_ref())? {
                    Some(credentials) => Found::Credentials(Fetched {
                        value: credentials,
                        expires_at: None,
                    }),
                    None => Found::NotConfigured("AWS_ACCESS_KEY_ID is not set".into()),
                },
                1 => self.web_identity().await?,
                2 => self.container().await?,
                3 => self.shared_file().await?,
                _ => self.instance_metadata().await?,
            };
            match found {
                Found::Credentials(credentials) => return Ok(credentials),
                Found::NotConfigured(why) => skipped.push(why),
            }
        }
        Err(format!("no AWS credentials found: {}", skipped.join("; ")))
    }

    /// IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, exchanged with STS.
    async fn web_identity(&self) -> Result<Found, String> {
        let (file, role) = match (
            self.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
            self.var("AWS_ROLE_ARN"),
        ) {
            (None, _) => return not_configured("AWS_WEB_IDENTITY_TOKEN_FILE is not set"),
            (Some(_), None) => {
                return Err("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not".into());
            }
            (Some(file), Some(role)) => (file, role),
        };
        let token = oidc::read_trimmed(Path::new(&file))
            .map_err(|err| format!("web identity token: {err}"))?;
        let session = self
            .var("AWS_ROLE_SESSION_NAME")
            .unwrap_or_else(default_session_name);
        let endpoint = sts_endpoint(self.env.as_ref(), &self.region);
        let credentials = assume_role_with_web_identity(&endpoint, &role, &session, &token).await?;
        found(credentials)
    }

    /// EKS Pod Identity / ECS: the container credentials endpoint.
    async fn container(&self) -> Result<Found, String> {
        let url = match (
            self.var("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            self.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
        ) {
            (Some(full), _) => full,
            (None, Some(relative)) => format!("{ECS_ENDPOINT}{relative}"),
            (None, None) => {
                return not_configured("AWS_CONTAINER_CREDENTIALS_FULL_URI is not set");
            }
        };
        let parsed = reqwest::Url::parse(&url)
            .map_err(|err| format!("container credentials: the endpoint is not a URL: {err}"))?;
        if !container_host_allowed(&parsed) {
            return Err(format!(
                "container credentials: {} is neither HTTPS nor a loopback or container agent address",
                parsed.host_str().unwrap_or_default()
            ));
        }
        let token = match self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(file) => Some(
                oidc::read_trimmed(Path::new(&file))
                    .map_err(|err| format!("container credentials token: {err}"))?,
            ),
            None => self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        };
        let mut request = http::client()?
            .get(parsed)
            .timeout(CONTAINER_TIMEOUT)
            .header("accept", "application/json");
        if let Some(token) = &token {
            request = request.header("authorization", token.as_str());
        }
        let what = "container credentials";
        let sent: Vec<&str> = token.iter().map(String::as_str).collect();
        let answer = http::send(request, what, &sent).await?;
        found(Answer::parse(&answer, what)?.into_credentials(what)?)
    }

    /// `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`), profile `AWS_PROFILE`.
    async fn shared_file(&self) -> Result<Found, String> {
        let path = match self.var("AWS_SHARED_CREDENTIALS_FILE") {
            Some(path) => PathBuf::from(path),
            None => match self.var("HOME").or_else(|| self.var("USERPROFILE")) {
                Some(home) => Path::new(&home).join(".aws").join("credentials"),
                None => return not_configured("no home directory for ~/.aws/credentials"),
            },
        };
        let profile = self.var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return not_configured(&format!("{} does not exist", path.display()));
            }
            Err(err) => {
                return Err(format!(
                    "cannot read AWS credentials file {}: {err}",
                    path.display()
                ));
            }
        };
        match profile_credentials(&path, &text, &profile)? {
            Some(credentials) => found(Fetched {
                value: credentials,
                expires_at: None,
            }),
            None => not_configured(&format!("{} has no profile {profile}", path.display())),
        }
    }

    /// EC2 instance metadata, IMDSv2.
    async fn instance_metadata(&self) -> Result<Found, String> {
        if self
            .var("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return not_configured("AWS_EC2_METADATA_DISABLED is true");
        }
        let base = self
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| IMDS_ENDPOINT.to_string());
        let base = base.trim_end_matches('/');
        let client = http::client()?;
        let what = "instance metadata";
        let token = http::send(
            client
                .put(format!("{base}/latest/api/token"))
                .timeout(IMDS_TIMEOUT)
                .header("x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL),
            what,
            &[],
        )
        .await?;
        let token = String::from_utf8(token)
            .map_err(|_| format!("{what}: the session token is not text"))?;
        let token = token.trim();
        let roles_url = format!("{base}/latest/meta-data/iam/security-credentials/");
        let roles = http::send(
            client
                .get(&roles_url)
                .timeout(IMDS_TIMEOUT)
                .header("x-aws-ec2-metadata-token", token),
            what,
            &[token],
        )
        .await?;
        let roles = String::from_utf8_lossy(&roles);
        let role = roles
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .ok_or_else(|| format!("{what}: the instance has no IAM role"))?;
        let answer = http::send(
            client
                .get(format!("{roles_url}{role}"))
                .timeout(IMDS_TIMEOUT)
                .header("x-aws-ec2-metadata-token", token),
            what,
            &[token],
        )
        .await?;
        found(Answer::parse(&answer, what)?.into_credentials(what)?)
    }
}

/// A source result: credentials.
fn found(credentials: Fetched<AwsCredentials>) -> Result<Found, String> {
    Ok(Found::Credentials(credentials))
}

/// A source result: not set up.
fn not_configured(why: &str) -> Result<Found, String> {
    Ok(Found::NotConfigured(why.to_string()))
}

impl Fetch for DefaultChain {
    type Output = AwsCredentials;

    fn fetch(&self) -> FetchFuture<'_, AwsCredentials> {
        Box::pin(async move {
            let credentials = self.resolve().await?;
            tracing::debug!(
                expires_at = ?credentials.expires_at,
                "resolved AWS credentials from the default chain"
            );
            Ok(credentials)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use aigw_filterconfig::OidcExchange;

    use super::super::azure::test_server::{Server, TempDir, env, fixture};
    use super::*;

    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const ROLE: &str = "arn:aws:iam::123456789012:role/aigw-bedrock";
    /// 2099-01-01T00:00:00Z.
    const FAR_EXPIRY: u64 = 4_070_908_800;

    fn call<'a>(host: &'a str, path: &'a str, body: &'a [u8]) -> UpstreamCall<'a> {
        UpstreamCall {
            method: "POST",
            host,
            path,
            body,
            headers: &[],
            metadata: None,
        }
    }

    fn keys(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: KEY_ID.into(),
            secret_access_key: Secret::new(SECRET),
            session_token: token.map(Secret::new),
            expires_at: None,
        }
    }

    fn lookup(vars: &[(&str, &str)]) -> Env {
        Arc::new(env(vars))
    }

    fn chain(vars: &[(&str, &str)]) -> DefaultChain {
        DefaultChain {
            env: lookup(vars),
            region: "us-east-1".into(),
        }
    }

    fn sts_answer(key_id: &str) -> String {
        format!(
            r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:aigw:extproc</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/aigw-bedrock/session</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:session</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>FwoGZXIvYXdzEXAMPLE/token+with&amp;entity==</SessionToken>
      <SecretAccessKey>sts-secret-access-key</SecretAccessKey>
      <Expiration>2099-01-01T00:00:00Z</Expiration>
      <AccessKeyId>{key_id}</AccessKeyId>
    </Credentials>
    <Provider>oidc.eks.us-east-1.amazonaws.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
        )
    }

    const METADATA_ANSWER: &str = r#"{"Code":"Success","LastUpdated":"2024-06-20T15:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAIMDSEXAMPLE","SecretAccessKey":"imds-secret","Token":"imds-session-token","Expiration":"2099-01-01T00:00:00Z"}"#;

    fn far_expiry() -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(FAR_EXPIRY))
    }

    // ---- SigV4, against botocore

    #[test]
    fn signatures_match_botocore() {
        let cases: Value = serde_json::from_str(&fixture("sigv4/cases.json")).unwrap();
        let cases = cases["cases"].as_array().unwrap();
        assert!(cases.len() >= 10, "{} cases", cases.len());
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let text = |key: &str| case[key].as_str().unwrap();
            let region = region_for(text("configured_region"), text("host"));
            assert_eq!(region, text("region"), "{name}: region");
            let credentials = AwsCredentials {
                access_key_id: text("access_key_id").into(),
                secret_access_key: Secret::new(text("secret_access_key")),
                session_token: case["session_token"].as_str().map(Secret::new),
                expires_at: None,
            };
            let call = UpstreamCall {
                method: text("method"),
                host: text("host"),
                path: text("path"),
                body: text("body").as_bytes(),
                headers: &[],
                metadata: None,
            };
            let time =
                SystemTime::UNIX_EPOCH + Duration::from_secs(case["unix_time"].as_u64().unwrap());
            let applied = sign_at(&credentials, &region, &call, time).unwrap();
            let expected = &case["expected"];
            let mut want = vec![
                (
                    "authorization".to_string(),
                    expected["authorization"].as_str().unwrap().to_string(),
                ),
                (
                    "x-amz-date".to_string(),
                    expected["x-amz-date"].as_str().unwrap().to_string(),
                ),
            ];
            if let Some(token) = expected["x-amz-security-token"].as_str() {
                want.push(("x-amz-security-token".to_string(), token.to_string()));
            }
            assert_eq!(
                applied.headers,
                want,
                "{name}: botocore's canonical request was\n{}",
                text("canonical_request")
            );
            assert_eq!(applied.path, None);
        }
    }

    #[test]
    fn the_signature_covers_path_body_and_time() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_718_895_845);
        let host = "bedrock-runtime.us-east-1.amazonaws.com";
        let base = sign_at(
            &keys(None),
            "us-east-1",
            &call(host, "/model/a:0/converse", b"{}"),
            time,
        )
        .unwrap();
        let variants = [
            sign_at(
                &keys(None),
                "us-east-1",
                &call(host, "/model/a%3A0/converse", b"{}"),
                time,
            ),
            sign_at(
                &keys(None),
                "us-east-1",
                &call(host, "/model/a:0/converse", b"{ }"),
                time,
            ),
            sign_at(
                &keys(None),
                "us-west-2",
                &call(host, "/model/a:0/converse", b"{}"),
                time,
            ),
            sign_at(
                &keys(None),
                "us-east-1",
                &call(host, "/model/a:0/converse", b"{}"),
                time + Duration::from_secs(1),
            ),
        ];
        for variant in variants {
            assert_ne!(variant.unwrap().headers[0], base.headers[0]);
        }
        assert!(base.headers[0].1.contains("SignedHeaders=host;x-amz-date,"));
    }

    #[test]
    fn unsignable_calls_are_rejected() {
        let now = SystemTime::now();
        for (region, host, path) in [
            ("us-east-1", "", "/model/x/converse"),
            ("", "bedrock.example.com", "/model/x/converse"),
            ("us-east-1", "bedrock.example.com", "model/x/converse"),
            ("us-east-1", "bedrock.example.com", "/model/x y/converse"),
        ] {
            let err = sign_at(&keys(None), region, &call(host, path, b""), now).unwrap_err();
            assert_eq!(err.status(), 500, "{err}");
            assert!(!err.to_string().contains(SECRET));
        }
    }

    #[test]
    fn region_comes_from_bedrock_runtime_hosts() {
        for (host, region) in [
            ("bedrock-runtime.us-east-1.amazonaws.com", "us-east-1"),
            (
                "bedrock-runtime-fips.us-gov-west-1.amazonaws.com",
                "us-gov-west-1",
            ),
            ("bedrock-runtime.eu-central-1.api.aws", "eu-central-1"),
            (
                "vpce-01-ab.bedrock-runtime.ap-southeast-2.vpce.amazonaws.com",
                "ap-southeast-2",
            ),
            ("bedrock-runtime.us-east-1.amazonaws.com:443", "us-east-1"),
            (
                "bedrock-runtime.us-east-1.amazonaws.com.example.org",
                "configured-1",
            ),
            ("xbedrock-runtime.us-east-1.amazonaws.com", "configured-1"),
            ("bedrock.us-east-1.amazonaws.com", "configured-1"),
            (
                "bedrock-runtime.cn-north-1.amazonaws.com.cn",
                "configured-1",
            ),
            ("bedrock-proxy.internal:8080", "configured-1"),
            ("[::1]:8080", "configured-1"),
            ("", "configured-1"),
        ] {
            assert_eq!(region_for("configured-1", host), region, "{host}");
        }
    }

    #[test]
    fn signer_signs_for_the_host_region() {
        let signer = Signer::build(
            "us-west-2",
            None,
            None,
            None,
            Path::new("/"),
            lookup(&[
                ("AWS_ACCESS_KEY_ID", KEY_ID),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
            ]),
        )
        .unwrap();
        let on_host = signer
            .sign(&call(
                "bedrock-runtime.eu-west-3.amazonaws.com",
                "/model/m/invoke",
                b"{}",
            ))
            .unwrap();
        assert!(
            on_host.headers[0]
                .1
                .contains("/eu-west-3/bedrock/aws4_request")
        );
        let custom = signer
            .sign(&call("llm-proxy.internal", "/model/m/invoke", b"{}"))
            .unwrap();
        assert!(
            custom.headers[0]
                .1
                .contains("/us-west-2/bedrock/aws4_request")
        );
        assert_eq!(custom.headers.len(), 2);

        let with_token = signer
            .sign_with(
                &keys(Some("override-token")),
                &call("llm-proxy.internal", "/m", b""),
            )
            .unwrap();
        assert_eq!(
            with_token.headers[2],
            (
                "x-amz-security-token".to_string(),
                "override-token".to_string()
            )
        );
        assert!(
            with_token.headers[0]
                .1
                .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,")
        );
    }

    // ---- shared credentials files

    const INI: &str = "\
# shared credentials
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = default/secret+key

; a comment
[ bedrock ]
AWS_ACCESS_KEY_ID=AKIABEDROCK
aws_secret_access_key=bedrock-secret
aws_session_token =  bedrock-session-token

[incomplete]
aws_access_key_id = AKIAINCOMPLETE
aws_secret_access_key =
";

    #[test]
    fn credentials_files_are_parsed_by_profile() {
        let path = Path::new("/etc/aws/credentials");
        let default = profile_credentials(path, INI, "default").unwrap().unwrap();
        assert_eq!(default.access_key_id, "AKIADEFAULT");
        assert_eq!(default.secret_access_key.expose(), "default/secret+key");
        assert!(default.session_token.is_none());
        let bedrock = profile_credentials(path, INI, "bedrock").unwrap().unwrap();
        assert_eq!(bedrock.access_key_id, "AKIABEDROCK");
        assert_eq!(bedrock.secret_access_key.expose(), "bedrock-secret");
        assert_eq!(
            bedrock.session_token.as_ref().map(Secret::expose),
            Some("bedrock-session-token")
        );
        assert!(profile_credentials(path, INI, "other").unwrap().is_none());
    }

    #[test]
    fn credentials_file_errors_name_file_and_profile_only() {
        let dir = TempDir::new("aws-ini");
        let file = dir.write("credentials", INI);
        let err = read_credentials_file(&file, "incomplete").unwrap_err();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(
            err.contains("profile incomplete has no aws_secret_access_key"),
            "{err}"
        );
        assert!(!err.contains("AKIAINCOMPLETE"), "{err}");

        let err = read_credentials_file(&file, "missing").unwrap_err();
        assert!(err.ends_with("profile missing not found"), "{err}");

        let err = read_credentials_file(&dir.path().join("absent"), "default").unwrap_err();
        assert!(err.contains("cannot read AWS credentials file"), "{err}");

        let broken = dir.write(
            "broken",
            "[default]\naws_access_key_id = AKIA\nwJalrXUtnFEMI-secret-on-its-own\n",
        );
        let err = read_credentials_file(&broken, "default").unwrap_err();
        assert!(err.contains("line 3 is not `key = value`"), "{err}");
        assert!(!err.contains("wJalrXUtnFEMI"), "{err}");

        let orphan = dir.write("orphan", "aws_access_key_id = AKIA\n[default]\n");
        let err = read_credentials_file(&orphan, "default").unwrap_err();
        assert!(
            err.contains("line 1 precedes the first [profile] header"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_credentials_file_configures_a_static_signer() {
        let dir = TempDir::new("aws-file-signer");
        let file = dir.write("credentials", INI);
        for (profile, key_id) in [(None, "AKIADEFAULT"), (Some("bedrock"), "AKIABEDROCK")] {
            let signer = Signer::build(
                "us-east-1",
                Some(&file),
                profile,
                None,
                dir.path(),
                lookup(&[]),
            )
            .unwrap();
            assert!(signer.ready(Duration::from_millis(1)).await);
            let applied = signer
                .sign(&call(
                    "bedrock-runtime.us-east-1.amazonaws.com",
                    "/model/m/converse",
                    b"{}",
                ))
                .unwrap();
            assert!(
                applied.headers[0]
                    .1
                    .starts_with(&format!("AWS4-HMAC-SHA256 Credential={key_id}/")),
                "{:?}",
                applied.headers
            );
            assert_eq!(applied.headers.len(), if profile.is_some() { 3 } else { 2 });
        }
        let err = Signer::build(
            "us-east-1",
            Some(&file),
            Some("nope"),
            None,
            dir.path(),
            lookup(&[]),
        )
        .unwrap_err();
        assert!(err.contains("profile nope not found"), "{err}");
    }

    #[test]
    fn environment_keys_need_no_runtime() {
        let signer = Signer::build(
            "us-east-1",
            None,
            None,
            None,
            Path::new("/"),
            lookup(&[
                ("AWS_ACCESS_KEY_ID", "AKIAENV"),
                ("AWS_SECRET_ACCESS_KEY", "env-secret"),
                ("AWS_SESSION_TOKEN", "env-token"),
            ]),
        )
        .unwrap();
        let applied = signer
            .sign(&call("bedrock-runtime.us-east-1.amazonaws.com", "/", b""))
            .unwrap();
        assert!(applied.headers[0].1.contains("Credential=AKIAENV/"));
        assert_eq!(applied.headers[2].1, "env-token");

        let err = Signer::build(
            "us-east-1",
            None,
            None,
            None,
            Path::new("/"),
            lookup(&[("AWS_ACCESS_KEY_ID", "AKIAENV")]),
        )
        .unwrap_err();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is not"), "{err}");
    }

    // ---- answers

    #[test]
    fn answers_are_read_from_xml_and_json() {
        let what = "test";
        let xml = Answer::parse(sts_answer("ASIASTS").as_bytes(), what)
            .unwrap()
            .into_credentials(what)
            .unwrap();
        assert_eq!(xml.value.access_key_id, "ASIASTS");
        assert_eq!(
            xml.value.secret_access_key.expose(),
            "sts-secret-access-key"
        );
        assert_eq!(
            xml.value.session_token.as_ref().map(Secret::expose),
            Some("FwoGZXIvYXdzEXAMPLE/token+with&entity==")
        );
        assert_eq!(xml.expires_at, far_expiry());
        assert_eq!(xml.value.expires_at, far_expiry());

        let json = r#"{"AssumeRoleWithWebIdentityResponse":{"AssumeRoleWithWebIdentityResult":{"Credentials":{"AccessKeyId":"ASIAJSON","SecretAccessKey":"json-secret","SessionToken":"json-token","Expiration":4070908800.0}}}}"#;
        let json = Answer::parse(json.as_bytes(), what)
            .unwrap()
            .into_credentials(what)
            .unwrap();
        assert_eq!(json.value.access_key_id, "ASIAJSON");
        assert_eq!(
            json.value.session_token.as_ref().map(Secret::expose),
            Some("json-token")
        );
        assert_eq!(json.expires_at, far_expiry());

        let err = Answer::parse(
            b"<Credentials><AccessKeyId>A</AccessKeyId></Credentials>",
            what,
        )
        .unwrap()
        .into_credentials(what)
        .unwrap_err();
        assert_eq!(err, "test: the answer carries no SecretAccessKey");
        let err = Answer::parse(br#"{"Code":"Failed","AccessKeyId":"A"}"#, what)
            .err()
            .unwrap();
        assert_eq!(err, "test: the answer's Code is Failed");
    }

    #[test]
    fn times_are_parsed() {
        // RFC 3339 itself is tested in crate::time; here: what this reader adds around it.
        let at = |s: u64, n: u32| Some(SystemTime::UNIX_EPOCH + Duration::new(s, n));
        assert_eq!(parse_time("2024-06-20T15:04:05Z"), at(1_718_895_845, 0));
        assert_eq!(
            parse_time(" 2024-06-20T17:04:05+02:00\n"),
            at(1_718_895_845, 0)
        );
        assert_eq!(parse_time("2099-01-01T00:00:00Z"), far_expiry());
        assert_eq!(parse_time("1718895845"), at(1_718_895_845, 0));
        assert_eq!(parse_time(" 1718895845.5 "), at(1_718_895_845, 500_000_000));
        for bad in [
            "",
            "2024-06-20",
            "2024-13-01T00:00:00Z",
            "2024-06-20T15:04:05",
            "yesterday",
            "-1",
            "NaN",
            "inf",
            "1e30",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let shown = format!("{:?}", keys(Some("session-token-value")));
        assert!(shown.contains(KEY_ID));
        assert!(
            !shown.contains(SECRET) && !shown.contains("session-token-value"),
            "{shown}"
        );
    }

    #[test]
    fn sts_endpoints() {
        let none = |_: &str| None;
        assert_eq!(
            sts_endpoint(&none, "eu-west-1"),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint(&none, "cn-north-1"),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        let general = env(&[("AWS_ENDPOINT_URL", "http://localstack:4566")]);
        assert_eq!(
            sts_endpoint(&general, "eu-west-1"),
            "http://localstack:4566"
        );
        let both = env(&[
            ("AWS_ENDPOINT_URL", "http://localstack:4566"),
            ("AWS_ENDPOINT_URL_STS", "http://sts.local:8080"),
        ]);
        assert_eq!(sts_endpoint(&both, "eu-west-1"), "http://sts.local:8080");
    }

    // ---- the default chain, against local servers

    #[tokio::test]
    async fn web_identity_exchanges_the_token_file_with_sts() {
        let sts = Server::start(&[("/", 200, &sts_answer("ASIAIRSA"))]).await;
        let dir = TempDir::new("aws-irsa");
        let token_file = dir.write("token", "eyJhbGciOiJSUzI1NiJ9.first-token.sig\n");
        let token_path = token_file.display().to_string();
        let chain = chain(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_path),
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_ROLE_SESSION_NAME", "extproc-session"),
            ("AWS_ENDPOINT_URL_STS", &sts.base),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]);
        let fetched = chain.fetch().await.unwrap();
        assert_eq!(fetched.value.access_key_id, "ASIAIRSA");
        assert_eq!(fetched.expires_at, far_expiry());

        let request = sts.one("/");
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(request.header("authorization"), None);
        let form = request.form();
        assert_eq!(form["Action"], "AssumeRoleWithWebIdentity");
        assert_eq!(form["Version"], "2011-06-15");
        assert_eq!(form["RoleArn"], ROLE);
        assert_eq!(form["RoleSessionName"], "extproc-session");
        assert_eq!(
            form["WebIdentityToken"],
            "eyJhbGciOiJSUzI1NiJ9.first-token.sig"
        );

        // The projected token rotates; every refresh reads it again.
        dir.write("token", "eyJhbGciOiJSUzI1NiJ9.second-token.sig");
        chain.fetch().await.unwrap();
        let requests = sts.requests_to("/");
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[1].form()["WebIdentityToken"],
            "eyJhbGciOiJSUzI1NiJ9.second-token.sig"
        );
        assert!(requests[1].form()["RoleSessionName"] == "extproc-session");
    }

    #[tokio::test]
    async fn sts_refusals_are_reported_without_the_token() {
        let refusal = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>No OpenIDConnect provider found in your account</Message></Error></ErrorResponse>"#;
        let sts = Server::start(&[("/", 400, refusal)]).await;
        let dir = TempDir::new("aws-irsa-refused");
        let token_file = dir.write("token", "secret-web-identity-token");
        let token_path = token_file.display().to_string();
        let err = chain(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_path),
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_ENDPOINT_URL_STS", &sts.base),
        ])
        .fetch()
        .await
        .unwrap_err();
        assert!(err.contains("answered 400"), "{err}");
        assert!(err.contains("InvalidIdentityToken"), "{err}");
        assert!(!err.contains("secret-web-identity-token"), "{err}");
        let session = &sts.one("/").form()["RoleSessionName"];
        assert!(session.starts_with("aigw-extproc-"), "{session}");

        let err = chain(&[("AWS_WEB_IDENTITY_TOKEN_FILE", &token_path)])
            .fetch()
            .await
            .unwrap_err();
        assert!(err.contains("AWS_ROLE_ARN is not"), "{err}");
    }

    #[tokio::test]
    async fn container_credentials_send_the_authorization_token() {
        let answer = r#"{"AccessKeyId":"ASIAPODIDENTITY","SecretAccessKey":"pod-secret","Token":"pod-session-token","AccountId":"123456789012","Expiration":"2099-01-01T00:00:00Z"}"#;
        let agent = Server::start(&[("/v1/credentials", 200, answer)]).await;
        let dir = TempDir::new("aws-pod-identity");
        let token_file = dir.write("eks-pod-identity-token", "pod-identity-jwt\n");
        let token_path = token_file.display().to_string();
        let full_uri = agent.url("/v1/credentials");
        let fetched = chain(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full_uri),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_path),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ignored-literal"),
        ])
        .fetch()
        .await
        .unwrap();
        assert_eq!(fetched.value.access_key_id, "ASIAPODIDENTITY");
        assert_eq!(fetched.value.secret_access_key.expose(), "pod-secret");
        assert_eq!(
            fetched.value.session_token.as_ref().map(Secret::expose),
            Some("pod-session-token")
        );
        assert_eq!(fetched.expires_at, far_expiry());
        let request = agent.one("/v1/credentials");
        assert_eq!(request.method, "GET");
        assert_eq!(request.header("authorization"), Some("pod-identity-jwt"));

        // Without a token file, the literal token.
        chain(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full_uri),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "literal-token"),
        ])
        .fetch()
        .await
        .unwrap();
        let requests = agent.requests_to("/v1/credentials");
        assert_eq!(requests[1].header("authorization"), Some("literal-token"));
    }

    #[tokio::test]
    async fn container_credentials_over_http_only_from_trusted_hosts() {
        let err = chain(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://credentials.example.com/v1/credentials",
        )])
        .fetch()
        .await
        .unwrap_err();
        assert!(
            err.contains("credentials.example.com is neither HTTPS"),
            "{err}"
        );
        let allowed = |url: &str| container_host_allowed(&reqwest::Url::parse(url).unwrap());
        assert!(allowed("http://169.254.170.23/v1/credentials"));
        assert!(allowed("http://169.254.170.2/v2/credentials/x"));
        assert!(allowed("http://[fd00:ec2::23]/v1/credentials"));
        assert!(allowed("http://127.0.0.1:8080/creds"));
        assert!(allowed("http://localhost/creds"));
        assert!(allowed("https://credentials.example.com/creds"));
        assert!(!allowed("http://10.0.0.1/creds"));
    }

    #[tokio::test]
    async fn instance_metadata_uses_a_session_token() {
        let imds = Server::start(&[
            ("/latest/api/token", 200, "imds-session-v2-token"),
            (
                "/latest/meta-data/iam/security-credentials/",
                200,
                "aigw-instance-role\n",
            ),
            (
                "/latest/meta-data/iam/security-credentials/aigw-instance-role",
                200,
                METADATA_ANSWER,
            ),
        ])
        .await;
        let fetched = chain(&[(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            &format!("{}/", imds.base),
        )])
        .fetch()
        .await
        .unwrap();
        assert_eq!(fetched.value.access_key_id, "ASIAIMDSEXAMPLE");
        assert_eq!(
            fetched.value.session_token.as_ref().map(Secret::expose),
            Some("imds-session-token")
        );
        assert_eq!(fetched.expires_at, far_expiry());

        let put = imds.one("/latest/api/token");
        assert_eq!(put.method, "PUT");
        assert_eq!(
            put.header("x-aws-ec2-metadata-token-ttl-seconds"),
            Some("21600")
        );
        for path in [
            "/latest/meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/security-credentials/aigw-instance-role",
        ] {
            let get = imds.one(path);
            assert_eq!(get.method, "GET");
            assert_eq!(
                get.header("x-aws-ec2-metadata-token"),
                Some("imds-session-v2-token")
            );
        }
    }

    #[tokio::test]
    async fn the_chain_takes_the_first_configured_source() {
        let server = Server::start(&[("/", 200, &sts_answer("ASIAIRSA"))]).await;
        let dir = TempDir::new("aws-chain");
        let token = dir
            .write("token", "web-identity-token")
            .display()
            .to_string();
        let file = dir.write("credentials", INI).display().to_string();
        let base = server.base.clone();
        let everything = [
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.as_str()),
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_ENDPOINT_URL_STS", base.as_str()),
            ("AWS_SHARED_CREDENTIALS_FILE", file.as_str()),
            ("AWS_PROFILE", "bedrock"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        let first = |skip: usize| chain(&everything[skip..]);
        assert_eq!(
            first(0).fetch().await.unwrap().value.access_key_id,
            "AKIAENV"
        );
        assert!(server.requests().is_empty());
        assert_eq!(
            first(2).fetch().await.unwrap().value.access_key_id,
            "ASIAIRSA"
        );
        assert_eq!(server.requests().len(), 1);
        let from_file = first(5).fetch().await.unwrap();
        assert_eq!(from_file.value.access_key_id, "AKIABEDROCK");
        assert_eq!(from_file.expires_at, None);
        assert_eq!(server.requests().len(), 1);

        let home = dir.path().display().to_string();
        let err = chain(&[
            ("HOME", home.as_str()),
            ("AWS_PROFILE", "bedrock"),
            ("AWS_EC2_METADATA_DISABLED", "TRUE"),
        ])
        .fetch()
        .await
        .unwrap_err();
        assert_eq!(
            err,
            format!(
                "no AWS credentials found: AWS_ACCESS_KEY_ID is not set; \
                 AWS_WEB_IDENTITY_TOKEN_FILE is not set; AWS_CONTAINER_CREDENTIALS_FULL_URI is not set; \
                 {} does not exist; AWS_EC2_METADATA_DISABLED is true",
                dir.path().join(".aws").join("credentials").display()
            )
        );
    }

    #[tokio::test]
    async fn the_default_chain_signer_becomes_ready() {
        let server = Server::start(&[("/", 200, &sts_answer("ASIACHAIN"))]).await;
        let dir = TempDir::new("aws-chain-signer");
        let token = dir
            .write("token", "web-identity-token")
            .display()
            .to_string();
        let signer = Signer::build(
            "us-east-1",
            None,
            None,
            None,
            dir.path(),
            lookup(&[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", &token),
                ("AWS_ROLE_ARN", ROLE),
                ("AWS_ENDPOINT_URL_STS", &server.base),
            ]),
        )
        .unwrap();
        assert!(signer.ready(Duration::from_secs(10)).await);
        let applied = signer
            .sign(&call(
                "bedrock-runtime.us-east-1.amazonaws.com",
                "/model/m/converse",
                b"{}",
            ))
            .unwrap();
        assert!(applied.headers[0].1.contains("Credential=ASIACHAIN/"));
        assert_eq!(
            applied.headers[2].1,
            "FwoGZXIvYXdzEXAMPLE/token+with&entity=="
        );
    }

    #[tokio::test]
    async fn oidc_exchange_assumes_the_role_with_the_idp_token() {
        let idp_answer =
            r#"{"access_token":"idp-access-token","token_type":"Bearer","expires_in":3600}"#;
        let server = Server::start(&[
            ("/idp/token", 200, idp_answer),
            ("/sts", 200, &sts_answer("ASIAOIDC")),
        ])
        .await;
        let dir = TempDir::new("aws-oidc");
        dir.write("idp-secret", "idp-client-secret\n");
        let exchange = AwsOidcExchange {
            oidc: OidcExchange {
                issuer: server.base.clone(),
                token_endpoint: Some(server.url("/idp/token")),
                client_id: "aigw-extproc".into(),
                client_secret_file: "idp-secret".into(),
                scopes: vec!["sts".into()],
                grant_type: None,
                aud: None,
            },
            aws_role_arn: ROLE.into(),
        };
        let sts_url = server.url("/sts");
        let signer = Signer::build(
            "us-east-1",
            None,
            None,
            Some(&exchange),
            dir.path(),
            lookup(&[
                ("AWS_ENDPOINT_URL_STS", &sts_url),
                // The OIDC exchange wins over the default chain.
                ("AWS_ACCESS_KEY_ID", "AKIAENV"),
                ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ]),
        )
        .unwrap();
        assert!(signer.ready(Duration::from_secs(10)).await);
        let applied = signer
            .sign(&call(
                "bedrock-runtime.us-east-1.amazonaws.com",
                "/model/m/converse",
                b"{}",
            ))
            .unwrap();
        assert!(applied.headers[0].1.contains("Credential=ASIAOIDC/"));

        let idp = server.one("/idp/token").form();
        assert_eq!(idp["grant_type"], "client_credentials");
        assert_eq!(idp["client_secret"], "idp-client-secret");
        let sts = server.one("/sts").form();
        assert_eq!(sts["Action"], "AssumeRoleWithWebIdentity");
        assert_eq!(sts["RoleArn"], ROLE);
        assert_eq!(sts["WebIdentityToken"], "idp-access-token");
    }
}
