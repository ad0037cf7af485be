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

use super::oidc::SecretFileError;
use super::process_env;
use super::refresh::{self, Fetch, FetchFuture, Fetched, Refreshing};
use super::{Applied, AuthError, CredentialError, UpstreamCall, http, oidc};
use crate::redact::Secret;
use aigw_filterconfig::AwsOidcExchange;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

mod answer;
use answer::{Answer, AnswerError};

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

/// What is wrong with the AWS configuration or an AWS answer, beyond the causes all providers
/// share ([`CredentialError`]). Messages name files, profiles, variables and endpoints, never
/// a key, secret or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// One variable of a pair is set, the other is not.
    #[error("{set} is set but {unset} is not")]
    HalfSet {
        /// The variable that is set.
        set: &'static str,
        /// The one that is missing.
        unset: &'static str,
    },
    /// The web identity token file could not be read.
    #[error("web identity token: {0}")]
    WebIdentityToken(SecretFileError),
    /// The container credentials endpoint is not a URL.
    #[error("container credentials: the endpoint is not a URL: {0}")]
    ContainerUrl(String),
    /// The container credentials endpoint is plain HTTP to a host the SDKs do not trust.
    #[error(
        "container credentials: {host} is neither HTTPS nor a loopback or container agent address"
    )]
    UntrustedContainerHost {
        /// The host of the endpoint.
        host: String,
    },
    /// The container authorization token file could not be read.
    #[error("container credentials token: {0}")]
    ContainerToken(SecretFileError),
    /// Instance metadata answered a session token that is not text.
    #[error("instance metadata: the session token is not text")]
    MetadataTokenNotText,
    /// Instance metadata lists no IAM role.
    #[error("instance metadata: the instance has no IAM role")]
    NoInstanceRole,
    /// An answer carries no usable credentials.
    #[error("{what}: {problem}")]
    Answer {
        /// What was asked (`STS AssumeRoleWithWebIdentity for <role>`, ...).
        what: String,
        /// What is wrong with the answer.
        problem: AnswerError,
    },
    /// No source of the default chain is configured here.
    #[error("no AWS credentials found: {}", .skipped.join("; "))]
    NotFound {
        /// Why each source was skipped.
        skipped: Vec<String>,
    },
}

/// The credentials in the answer `body` to `what`.
fn credentials_in(body: &[u8], what: &str) -> Result<Fetched<AwsCredentials>, CredentialError> {
    Answer::parse(body)
        .and_then(Answer::into_credentials)
        .map_err(|problem| {
            AwsError::Answer {
                what: what.to_string(),
                problem,
            }
            .into()
        })
}

/// Looks up an environment variable (non-empty values only).
type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

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
    ) -> Result<Signer, CredentialError> {
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
    ) -> Result<Signer, CredentialError> {
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

/// What is wrong with a shared credentials file. Messages name the file, the profile and line
/// numbers, never a line's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsFileError {
    /// The file could not be read.
    #[error("cannot read AWS credentials file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The error of the read.
        reason: String,
    },
    /// A line is not INI.
    #[error("AWS credentials file {path}: {syntax}")]
    Syntax {
        /// The file.
        path: String,
        /// The line and what is wrong with it.
        syntax: IniError,
    },
    /// The profile is not in the file.
    #[error("AWS credentials file {path}: profile {profile} not found")]
    NoProfile {
        /// The file.
        path: String,
        /// The profile asked for.
        profile: String,
    },
    /// The profile lacks a key.
    #[error("AWS credentials file {path}: profile {profile} has no {key}")]
    MissingKey {
        /// The file.
        path: String,
        /// The profile.
        profile: String,
        /// The key.
        key: &'static str,
    },
}

/// A line of a shared credentials file that is not INI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IniError {
    /// `[` without a name and `]`.
    #[error("line {0} is not a [profile] header")]
    BadHeader(usize),
    /// Neither a header nor `key = value`.
    #[error("line {0} is not `key = value`")]
    NotKeyValue(usize),
    /// A key before any header.
    #[error("line {0} precedes the first [profile] header")]
    BeforeHeader(usize),
}

/// Parses a shared credentials file. Errors give line numbers, never a line's content.
fn parse_ini(text: &str) -> Result<Sections, IniError> {
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
                .ok_or(IniError::BadHeader(number))?;
            sections.push((name.to_string(), Vec::new()));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(IniError::NotKeyValue(number));
        };
        let Some((_, entries)) = sections.last_mut() else {
            return Err(IniError::BeforeHeader(number));
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
) -> Result<Option<AwsCredentials>, CredentialsFileError> {
    let file = || path.display().to_string();
    let sections = parse_ini(text).map_err(|syntax| CredentialsFileError::Syntax {
        path: file(),
        syntax,
    })?;
    if !sections.iter().any(|(name, _)| name == profile) {
        return Ok(None);
    }
    let required = |key: &'static str| {
        ini_value(&sections, profile, key).ok_or_else(|| CredentialsFileError::MissingKey {
            path: file(),
            profile: profile.to_string(),
            key,
        })
    };
    Ok(Some(AwsCredentials {
        access_key_id: required("aws_access_key_id")?.to_string(),
        secret_access_key: Secret::new(required("aws_secret_access_key")?),
        session_token: ini_value(&sections, profile, "aws_session_token").map(Secret::new),
        expires_at: None,
    }))
}

/// Reads the credentials of `profile` from the shared credentials file `path`.
fn read_credentials_file(
    path: &Path,
    profile: &str,
) -> Result<AwsCredentials, CredentialsFileError> {
    let text = std::fs::read_to_string(path).map_err(|err| CredentialsFileError::Unreadable {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    profile_credentials(path, &text, profile)?.ok_or_else(|| CredentialsFileError::NoProfile {
        path: path.display().to_string(),
        profile: profile.to_string(),
    })
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
) -> Result<Fetched<AwsCredentials>, CredentialError> {
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
    credentials_in(&answer, &what)
}

/// Temporary credentials from an OIDC client-credentials token exchanged with STS.
struct OidcExchangeFetch {
    exchange: AwsOidcExchange,
    base: PathBuf,
    sts: String,
}

impl OidcExchangeFetch {
    async fn credentials(&self) -> Result<Fetched<AwsCredentials>, CredentialError> {
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
        refresh::boxed(self.credentials())
    }
}

// ---------------------------------------------------------------------------------------------
// The default chain

/// Static keys from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
fn from_environment(
    env: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Result<Option<AwsCredentials>, CredentialError> {
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
        (Some(_), None) => Err(AwsError::HalfSet {
            set: "AWS_ACCESS_KEY_ID",
            unset: "AWS_SECRET_ACCESS_KEY",
        }
        .into()),
        (None, Some(_)) => Err(AwsError::HalfSet {
            set: "AWS_SECRET_ACCESS_KEY",
            unset: "AWS_ACCESS_KEY_ID",
        }
        .into()),
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

    async fn resolve(&self) -> Result<Fetched<AwsCredentials>, CredentialError> {
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
        Err(AwsError::NotFound { skipped }.into())
    }

    /// IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, exchanged with STS.
    async fn web_identity(&self) -> Result<Found, CredentialError> {
        let (file, role) = match (
            self.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
            self.var("AWS_ROLE_ARN"),
        ) {
            (None, _) => return not_configured("AWS_WEB_IDENTITY_TOKEN_FILE is not set"),
            (Some(_), None) => {
                return Err(AwsError::HalfSet {
                    set: "AWS_WEB_IDENTITY_TOKEN_FILE",
                    unset: "AWS_ROLE_ARN",
                }
                .into());
            }
            (Some(file), Some(role)) => (file, role),
        };
        let token = oidc::read_trimmed(Path::new(&file)).map_err(AwsError::WebIdentityToken)?;
        let session = self
            .var("AWS_ROLE_SESSION_NAME")
            .unwrap_or_else(default_session_name);
        let endpoint = sts_endpoint(self.env.as_ref(), &self.region);
        let credentials = assume_role_with_web_identity(&endpoint, &role, &session, &token).await?;
        found(credentials)
    }

    /// EKS Pod Identity / ECS: the container credentials endpoint.
    async fn container(&self) -> Result<Found, CredentialError> {
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
        let parsed =
            reqwest::Url::parse(&url).map_err(|err| AwsError::ContainerUrl(err.to_string()))?;
        if !container_host_allowed(&parsed) {
            return Err(AwsError::UntrustedContainerHost {
                host: parsed.host_str().unwrap_or_default().to_string(),
            }
            .into());
        }
        let token = match self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(file) => {
                Some(oidc::read_trimmed(Path::new(&file)).map_err(AwsError::ContainerToken)?)
            }
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
        found(credentials_in(&answer, what)?)
    }

    /// `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`), profile `AWS_PROFILE`.
    async fn shared_file(&self) -> Result<Found, CredentialError> {
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
                return Err(CredentialsFileError::Unreadable {
                    path: path.display().to_string(),
                    reason: err.to_string(),
                }
                .into());
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
    async fn instance_metadata(&self) -> Result<Found, CredentialError> {
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
        let token = String::from_utf8(token).map_err(|_| AwsError::MetadataTokenNotText)?;
        let token = token.trim();
        let roles_url = format!("{base}/latest/meta-data/iam/security-credentials/");
        let roles = imds_get(client, &roles_url, token).await?;
        let roles = String::from_utf8_lossy(&roles);
        let role = roles
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .ok_or(AwsError::NoInstanceRole)?;
        let answer = imds_get(client, &format!("{roles_url}{role}"), token).await?;
        found(credentials_in(&answer, what)?)
    }
}

/// A GET of instance metadata with the IMDSv2 session `token`.
async fn imds_get(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<Vec<u8>, http::FetchError> {
    let request = client
        .get(url)
        .timeout(IMDS_TIMEOUT)
        .header("x-aws-ec2-metadata-token", token);
    http::send(request, "instance metadata", &[token]).await
}

/// A source result: credentials.
fn found(credentials: Fetched<AwsCredentials>) -> Result<Found, CredentialError> {
    Ok(Found::Credentials(credentials))
}

/// A source result: not set up.
fn not_configured(why: &str) -> Result<Found, CredentialError> {
    Ok(Found::NotConfigured(why.to_string()))
}

impl Fetch for DefaultChain {
    type Output = AwsCredentials;

    fn fetch(&self) -> FetchFuture<'_, AwsCredentials> {
        refresh::boxed(async move {
            let credentials = self.resolve().await?;
            tracing::debug!(
                expires_at = ?credentials.expires_at,
                "resolved AWS credentials from the default chain"
            );
            Ok::<_, CredentialError>(credentials)
        })
    }
}

#[cfg(test)]
mod tests;
