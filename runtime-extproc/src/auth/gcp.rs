//! GCP OAuth access tokens for Vertex AI (`GCPCredentials`), obtained by the extproc itself and
//! refreshed in the background ([`super::refresh`]), and the project/location path prefix.
//!
//! Token sources, all with the scope `https://www.googleapis.com/auth/cloud-platform`:
//! - a JSON key file (`credentialsFile`), read again on every fetch: `service_account` (an
//!   RS256-signed JWT exchanged at the file's `token_uri`), `authorized_user` (a refresh token),
//!   or `external_account` (a subject token from a file or URL exchanged at the file's
//!   `token_url`, then optionally its `service_account_impersonation_url`);
//! - workload identity federation (`workloadIdentityFederation`): a token from the configured
//!   OIDC identity provider exchanged at GCP STS (`AIGW_GCP_STS_ENDPOINT`, default
//!   `https://sts.googleapis.com/v1/token`), then, with a service account to impersonate,
//!   exchanged again with IAM Credentials `generateAccessToken`
//!   (`AIGW_GCP_IAM_CREDENTIALS_ENDPOINT`, default `https://iamcredentials.googleapis.com`);
//! - with neither, application default credentials: the key file named by
//!   `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's well-known
//!   `application_default_credentials.json`, else the metadata server (`GCE_METADATA_HOST`,
//!   default `metadata.google.internal`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aigw_filterconfig::{GcpWorkloadIdentityFederation, OidcExchange};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::oidc;
use super::refresh::{self, Fetch, FetchFuture, Fetched, Refreshing};
use super::{CredentialError, http, process_env};
use crate::redact::Secret;
use crate::time::{parse_rfc3339, unix_now};

/// The scope of every token.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's OAuth token endpoint (`authorized_user` files may omit `token_uri`).
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// GCP Security Token Service.
const DEFAULT_STS_ENDPOINT: &str = "https://sts.googleapis.com/v1/token";
/// IAM Service Account Credentials API.
const DEFAULT_IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// The GCE/GKE metadata server.
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
/// Lifetime requested for a service-account JWT assertion.
const ASSERTION_LIFETIME: u64 = 3600;
/// The lifetime `generateAccessToken` grants when none is asked for.
const DEFAULT_IMPERSONATION_LIFETIME: u64 = 3600;

const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

const CREDENTIALS_VAR: &str = "GOOGLE_APPLICATION_CREDENTIALS";
const METADATA_HOST_VAR: &str = "GCE_METADATA_HOST";
const STS_ENDPOINT_VAR: &str = "AIGW_GCP_STS_ENDPOINT";
const IAM_CREDENTIALS_ENDPOINT_VAR: &str = "AIGW_GCP_IAM_CREDENTIALS_ENDPOINT";

/// `/v1/projects/<project>/locations/<region>/<path>`: Vertex AI paths are relative to the
/// project and location of the credentials.
pub fn path(project: &str, region: &str, relative: &str) -> String {
    format!(
        "/v1/projects/{project}/locations/{region}/{}",
        relative.trim_start_matches('/')
    )
}

/// What is wrong with the GCP configuration, a key file's credential source or an answer,
/// beyond the causes all providers share ([`CredentialError`]). Messages name files,
/// variables, pools and endpoints (without their queries), never a key, token or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcpError {
    /// Both token sources are configured.
    #[error("GCP credentials: set a credentials file or workload identity federation, not both")]
    FileAndFederation,
    /// The key file `GOOGLE_APPLICATION_CREDENTIALS` names is wrong.
    #[error("{CREDENTIALS_VAR}: {0}")]
    ApplicationCredentials(KeyFileError),
    /// A name of the workload identity pool is not a path segment.
    #[error("GCP workload identity federation: {field} {value:?} is not a valid name")]
    InvalidName {
        /// The configuration field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// The service account to impersonate is not an e-mail address.
    #[error(
        "GCP workload identity federation: service account {email:?} is not a valid e-mail address"
    )]
    InvalidServiceAccount {
        /// The address the name resolves to.
        email: String,
    },
    /// The service account's JWT assertion could not be signed.
    #[error("{path}: {reason}")]
    Assertion {
        /// The key file.
        path: String,
        /// Why.
        reason: SignError,
    },
    /// The subject token of an `external_account` could not be obtained.
    #[error(transparent)]
    SubjectToken(#[from] SubjectTokenError),
    /// A token endpoint answered without a token.
    #[error("the answer of {endpoint} carries no access_token")]
    NoAccessToken {
        /// The endpoint (without its query), or the metadata server.
        endpoint: String,
    },
    /// `generateAccessToken` answered without a token.
    #[error("GCP service account impersonation: the answer of {endpoint} carries no accessToken")]
    NoImpersonatedToken {
        /// The endpoint, without its query.
        endpoint: String,
    },
}

impl From<SubjectTokenError> for CredentialError {
    fn from(err: SubjectTokenError) -> Self {
        CredentialError::Gcp(GcpError::SubjectToken(err))
    }
}

/// Why a JWT assertion could not be signed. The message never shows the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The `private_key` is not an RSA key in PEM.
    #[error("the private_key is not a PEM RSA private key")]
    BadKey,
    /// The signer failed.
    #[error("signing the JWT assertion failed")]
    Failed,
}

/// What is wrong with the `credential_source` of an `external_account` key file, or the
/// subject token it gives. Messages name files and URLs without queries, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectTokenError {
    /// The source file could not be read.
    #[error("cannot read the credential source {path}: {reason}")]
    Unreadable {
        /// The source file.
        path: String,
        /// The error of the read.
        reason: String,
    },
    /// The source is neither a file nor a URL.
    #[error(
        "{file}: the credential_source names no file or url (executable and AWS sources are not supported)"
    )]
    NoSource {
        /// The key file.
        file: String,
    },
    /// A JSON source without the field to read.
    #[error("{file}: a json credential_source needs format.subject_token_field_name")]
    NoFieldName {
        /// The key file.
        file: String,
    },
    /// A format other than text and JSON.
    #[error("{file}: credential_source format {format:?} is not supported (text, json)")]
    UnsupportedFormat {
        /// The key file.
        file: String,
        /// The format's `type`.
        format: String,
    },
    /// A JSON source that is not JSON.
    #[error("the credential source {origin} is not JSON")]
    NotJson {
        /// The source file or URL.
        origin: String,
    },
    /// A JSON source without the token field.
    #[error("the credential source {origin} has no {field}")]
    NoField {
        /// The source file or URL.
        origin: String,
        /// The field.
        field: String,
    },
    /// The token is empty.
    #[error("the credential source {origin} is empty")]
    Empty {
        /// The source file or URL.
        origin: String,
    },
}

/// The token source of a backend's `GCPCredentials`: the key file, workload identity
/// federation, or (neither) application default credentials. A service account to impersonate
/// that is not a full e-mail address belongs to `project_name` (the backend's `projectName`),
/// as upstream resolves it, or else to the pool's project (`projectID`). Needs the async
/// runtime.
pub fn token_source(
    project_name: Option<&str>,
    credentials_file: Option<&Path>,
    wif: Option<&GcpWorkloadIdentityFederation>,
    base: &Path,
) -> Result<Arc<Refreshing<Secret>>, CredentialError> {
    start(GcpToken::new(
        credentials_file,
        wif,
        base,
        project_name,
        &process_env,
    )?)
}

fn start(source: GcpToken) -> Result<Arc<Refreshing<Secret>>, CredentialError> {
    Ok(Refreshing::start(source.describe(), source)?)
}

/// Where tokens come from.
#[derive(Debug, Clone)]
enum Source {
    /// A JSON key file, read on every fetch.
    KeyFile(PathBuf),
    /// Workload identity federation of an OIDC token.
    Federation(Box<Federation>),
    /// The metadata server at `host` (`host[:port]`).
    Metadata(String),
}

/// Workload identity federation, resolved.
#[derive(Debug, Clone)]
struct Federation {
    oidc: OidcExchange,
    base: PathBuf,
    /// `//iam.googleapis.com/projects/.../providers/...`.
    audience: String,
    sts_endpoint: String,
    /// The `generateAccessToken` URL of the service account to impersonate.
    impersonation_url: Option<String>,
}

/// Fetches GCP access tokens.
#[derive(Debug, Clone)]
struct GcpToken {
    source: Source,
}

impl GcpToken {
    /// Resolves the configuration; `env` looks up environment variables.
    fn new(
        credentials_file: Option<&Path>,
        wif: Option<&GcpWorkloadIdentityFederation>,
        base: &Path,
        project_name: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GcpToken, CredentialError> {
        let source = match (credentials_file, wif) {
            (Some(_), Some(_)) => return Err(GcpError::FileAndFederation.into()),
            (Some(file), None) => {
                check_key_file(file)?;
                Source::KeyFile(file.to_path_buf())
            }
            (None, Some(wif)) => {
                Source::Federation(Box::new(federation(wif, base, project_name, env)?))
            }
            (None, None) => application_default(env)?,
        };
        Ok(GcpToken { source })
    }

    /// Names the source in logs.
    fn describe(&self) -> String {
        match &self.source {
            Source::KeyFile(file) => format!("GCP access token ({})", file.display()),
            Source::Federation(f) => format!("GCP access token (workload identity {})", f.audience),
            Source::Metadata(host) => format!("GCP access token (metadata server {host})"),
        }
    }

    async fn request(&self) -> Result<Fetched<Secret>, CredentialError> {
        match &self.source {
            Source::KeyFile(file) => from_key_file(file).await,
            Source::Federation(federation) => federation.token().await,
            Source::Metadata(host) => from_metadata_server(host).await,
        }
    }
}

impl Fetch for GcpToken {
    type Output = Secret;

    fn fetch(&self) -> FetchFuture<'_, Secret> {
        refresh::boxed(self.request())
    }
}

/// Resolves workload identity federation.
fn federation(
    wif: &GcpWorkloadIdentityFederation,
    base: &Path,
    project_name: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Federation, CredentialError> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    for (field, value) in [
        ("projectID", &wif.project_id),
        ("workloadIdentityPoolName", &wif.workload_identity_pool_name),
        (
            "workloadIdentityProviderName",
            &wif.workload_identity_provider_name,
        ),
    ] {
        if !segment_ok(value) {
            return Err(GcpError::InvalidName {
                field,
                value: value.clone(),
            }
            .into());
        }
    }
    let audience = format!(
        "//iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/providers/{}",
        wif.project_id, wif.workload_identity_pool_name, wif.workload_identity_provider_name
    );
    let sts_endpoint = env(STS_ENDPOINT_VAR)
        .map(|e| e.trim().to_string())
        .unwrap_or_else(|| DEFAULT_STS_ENDPOINT.to_string());
    let impersonation_url = match wif.service_account_name.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) => {
            let email = service_account_email(name, project_name.unwrap_or(&wif.project_id));
            if !email
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
            {
                return Err(GcpError::InvalidServiceAccount { email }.into());
            }
            let iam = env(IAM_CREDENTIALS_ENDPOINT_VAR)
                .unwrap_or_else(|| DEFAULT_IAM_CREDENTIALS_ENDPOINT.to_string());
            let iam = iam.trim().trim_end_matches('/');
            Some(format!(
                "{iam}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
            ))
        }
    };
    Ok(Federation {
        oidc: wif.oidc.clone(),
        base: base.to_path_buf(),
        audience,
        sts_endpoint,
        impersonation_url,
    })
}

/// `name` when it is an e-mail address, else `<name>@<project>.iam.gserviceaccount.com`.
fn service_account_email(name: &str, project: &str) -> String {
    if name.contains('@') {
        name.to_string()
    } else {
        format!("{name}@{project}.iam.gserviceaccount.com")
    }
}

impl Federation {
    async fn token(&self) -> Result<Fetched<Secret>, CredentialError> {
        let subject = oidc::client_credentials_token(&self.oidc, &self.base).await?;
        let federated = sts_exchange(&StsExchange {
            endpoint: &self.sts_endpoint,
            audience: &self.audience,
            subject_token: &subject,
            subject_token_type: TOKEN_TYPE_JWT,
            client: None,
            user_project: None,
        })
        .await?;
        match &self.impersonation_url {
            None => Ok(federated),
            Some(url) => generate_access_token(url, federated.value.expose(), None).await,
        }
    }
}

/// Application default credentials.
fn application_default(env: &dyn Fn(&str) -> Option<String>) -> Result<Source, CredentialError> {
    if let Some(file) = env(CREDENTIALS_VAR) {
        let file = PathBuf::from(file.trim());
        check_key_file(&file).map_err(GcpError::ApplicationCredentials)?;
        return Ok(Source::KeyFile(file));
    }
    let gcloud = env("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| PathBuf::from(home).join(".config/gcloud")))
        .map(|dir| dir.join("application_default_credentials.json"))
        .filter(|file| file.is_file());
    if let Some(file) = gcloud {
        check_key_file(&file)?;
        return Ok(Source::KeyFile(file));
    }
    let host = env(METADATA_HOST_VAR).unwrap_or_else(|| DEFAULT_METADATA_HOST.to_string());
    Ok(Source::Metadata(
        host.trim().trim_end_matches('/').to_string(),
    ))
}

/// What is wrong with a GCP key file. The message names the file, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The key file.
        path: String,
        /// The error of the read.
        reason: String,
    },
    /// The file is not a JSON object.
    #[error("{path} is not a JSON key file{reason}")]
    NotJson {
        /// The key file.
        path: String,
        /// `: <parse error>`, or empty when the JSON is not an object.
        reason: String,
    },
    /// A credential type this module does not read.
    #[error("{path}: credential type {kind:?} is not supported (supported: {})", KEY_FILE_TYPES.join(", "))]
    UnsupportedType {
        /// The key file.
        path: String,
        /// Its `type`.
        kind: String,
    },
    /// A field the credential type needs is missing or empty.
    #[error("{path}: the key file has no {field}")]
    MissingField {
        /// The key file.
        path: String,
        /// The field.
        field: String,
    },
}

/// Reads and parses a key file; the error names the file, never its content.
fn read_key_file(file: &Path) -> Result<Value, KeyFileError> {
    let path = || file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|err| KeyFileError::Unreadable {
        path: path(),
        reason: err.to_string(),
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|err| KeyFileError::NotJson {
        path: path(),
        reason: format!(": {err}"),
    })?;
    if !doc.is_object() {
        return Err(KeyFileError::NotJson {
            path: path(),
            reason: String::new(),
        });
    }
    Ok(doc)
}

/// Key file types this module reads.
const KEY_FILE_TYPES: [&str; 3] = ["service_account", "authorized_user", "external_account"];

/// Fails a configuration whose key file is unreadable or of an unsupported type.
fn check_key_file(file: &Path) -> Result<(), KeyFileError> {
    let doc = read_key_file(file)?;
    let kind = key_type(&doc);
    if KEY_FILE_TYPES.contains(&kind) {
        Ok(())
    } else {
        Err(unsupported_type(file, kind))
    }
}

fn key_type(doc: &Value) -> &str {
    doc.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn unsupported_type(file: &Path, kind: &str) -> KeyFileError {
    KeyFileError::UnsupportedType {
        path: file.display().to_string(),
        kind: kind.to_string(),
    }
}

/// A non-empty string field of a key file.
fn required<'a>(doc: &'a Value, field: &str, file: &Path) -> Result<&'a str, KeyFileError> {
    optional(doc, field).ok_or_else(|| KeyFileError::MissingField {
        path: file.display().to_string(),
        field: field.to_string(),
    })
}

fn optional<'a>(doc: &'a Value, field: &str) -> Option<&'a str> {
    doc.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A token from a key file.
async fn from_key_file(file: &Path) -> Result<Fetched<Secret>, CredentialError> {
    let doc = read_key_file(file)?;
    match key_type(&doc) {
        "service_account" => {
            let token_uri = optional(&doc, "token_uri").unwrap_or(DEFAULT_TOKEN_URI);
            let assertion = service_account_assertion(&doc, file, token_uri, unix_now())?;
            let answer = http::post_form(
                token_uri,
                &[("grant_type", GRANT_JWT_BEARER), ("assertion", &assertion)],
                "GCP service account token request",
            )
            .await?;
            token_answer(&answer, token_uri)
        }
        "authorized_user" => {
            let token_uri = optional(&doc, "token_uri").unwrap_or(DEFAULT_TOKEN_URI);
            let answer = http::post_form(
                token_uri,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", required(&doc, "client_id", file)?),
                    ("client_secret", required(&doc, "client_secret", file)?),
                    ("refresh_token", required(&doc, "refresh_token", file)?),
                ],
                "GCP refresh token request",
            )
            .await?;
            token_answer(&answer, token_uri)
        }
        "external_account" => external_account(&doc, file).await,
        other => Err(unsupported_type(file, other).into()),
    }
}

/// The RS256-signed JWT a service account exchanges for an access token at `token_uri`.
fn service_account_assertion(
    doc: &Value,
    file: &Path,
    token_uri: &str,
    now: u64,
) -> Result<String, CredentialError> {
    let email = required(doc, "client_email", file)?;
    let key = required(doc, "private_key", file)?;
    let mut header = Map::new();
    header.insert("alg".into(), "RS256".into());
    header.insert("typ".into(), "JWT".into());
    if let Some(kid) = optional(doc, "private_key_id") {
        header.insert("kid".into(), kid.into());
    }
    let claims = json!({
        "iss": email,
        "scope": SCOPE,
        "aud": token_uri,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    });
    sign_rs256(&Value::Object(header), &claims, key).map_err(|reason| {
        GcpError::Assertion {
            path: file.display().to_string(),
            reason,
        }
        .into()
    })
}

/// `header.claims.signature`, RSASSA-PKCS1-v1_5 with SHA-256, with a PEM private key
/// (PKCS#8, or PKCS#1 `RSA PRIVATE KEY`).
fn sign_rs256(header: &Value, claims: &Value, pem: &str) -> Result<String, SignError> {
    let der = pem_body(pem).ok_or(SignError::BadKey)?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .or_else(|_| ring::signature::RsaKeyPair::from_der(&der))
        .map_err(|_| SignError::BadKey)?;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0u8; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| SignError::Failed)?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The DER bytes of the first PEM block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let mut inside = false;
    let mut body = String::new();
    for line in pem.lines().map(str::trim) {
        if line.starts_with("-----BEGIN ") {
            inside = true;
        } else if line.starts_with("-----END ") {
            return STANDARD.decode(body.as_bytes()).ok();
        } else if inside {
            body.push_str(line);
        }
    }
    None
}

/// An `external_account` (workload or workforce identity federation) key file.
async fn external_account(doc: &Value, file: &Path) -> Result<Fetched<Secret>, CredentialError> {
    let audience = required(doc, "audience", file)?;
    let subject_token_type = required(doc, "subject_token_type", file)?;
    let token_url = optional(doc, "token_url").unwrap_or(DEFAULT_STS_ENDPOINT);
    let source = doc
        .get("credential_source")
        .filter(|s| s.is_object())
        .ok_or_else(|| KeyFileError::MissingField {
            path: file.display().to_string(),
            field: "credential_source".to_string(),
        })?;
    let subject = subject_token(source, file).await?;
    let impersonation_url = optional(doc, "service_account_impersonation_url");
    let client = optional(doc, "client_id").map(|id| {
        (
            id.to_string(),
            optional(doc, "client_secret")
                .unwrap_or_default()
                .to_string(),
        )
    });
    let user_project = match (impersonation_url, &client) {
        (None, None) => optional(doc, "workforce_pool_user_project"),
        _ => None,
    };
    let federated = sts_exchange(&StsExchange {
        endpoint: token_url,
        audience,
        subject_token: &subject,
        subject_token_type,
        client,
        user_project,
    })
    .await?;
    match impersonation_url {
        None => Ok(federated),
        Some(url) => {
            let lifetime = doc
                .pointer("/service_account_impersonation/token_lifetime_seconds")
                .and_then(Value::as_u64);
            generate_access_token(url, federated.value.expose(), lifetime).await
        }
    }
}

/// The subject token of an `external_account` credential source: a file or a URL, as text or
/// as a JSON field.
async fn subject_token(source: &Value, file: &Path) -> Result<String, CredentialError> {
    let key_file = || file.display().to_string();
    let (raw, origin) = if let Some(path) = optional(source, "file") {
        let text = std::fs::read_to_string(path).map_err(|err| SubjectTokenError::Unreadable {
            path: path.to_string(),
            reason: err.to_string(),
        })?;
        (text, path.to_string())
    } else if let Some(url) = optional(source, "url") {
        let mut request = http::client()?.get(url);
        let mut sent = Vec::new();
        if let Some(headers) = source.get("headers").and_then(Value::as_object) {
            for (name, value) in headers {
                if let Some(value) = value.as_str() {
                    request = request.header(name.as_str(), value);
                    sent.push(value);
                }
            }
        }
        let body = http::send(request, "GCP subject token request", &sent).await?;
        // Errors name the URL without its query, which may carry parameters not for logs.
        let origin = url.split('?').next().unwrap_or_default();
        (
            String::from_utf8_lossy(&body).into_owned(),
            origin.to_string(),
        )
    } else {
        return Err(SubjectTokenError::NoSource { file: key_file() }.into());
    };
    let format = source.get("format");
    let token = match format.and_then(|f| optional(f, "type")).unwrap_or("text") {
        "text" => raw.trim().to_string(),
        "json" => {
            let field = format
                .and_then(|f| optional(f, "subject_token_field_name"))
                .ok_or_else(|| SubjectTokenError::NoFieldName { file: key_file() })?;
            let parsed: Value =
                serde_json::from_str(&raw).map_err(|_| SubjectTokenError::NotJson {
                    origin: origin.clone(),
                })?;
            optional(&parsed, field)
                .ok_or_else(|| SubjectTokenError::NoField {
                    origin: origin.clone(),
                    field: field.to_string(),
                })?
                .to_string()
        }
        other => {
            return Err(SubjectTokenError::UnsupportedFormat {
                file: key_file(),
                format: other.to_string(),
            }
            .into());
        }
    };
    if token.is_empty() {
        return Err(SubjectTokenError::Empty { origin }.into());
    }
    Ok(token)
}

/// An RFC 8693 token exchange at GCP STS.
struct StsExchange<'a> {
    endpoint: &'a str,
    audience: &'a str,
    subject_token: &'a str,
    subject_token_type: &'a str,
    /// Client ID and secret (HTTP Basic), when the key file has them.
    client: Option<(String, String)>,
    /// `workforce_pool_user_project`.
    user_project: Option<&'a str>,
}

async fn sts_exchange(exchange: &StsExchange<'_>) -> Result<Fetched<Secret>, CredentialError> {
    let options = exchange
        .user_project
        .map(|project| json!({ "userProject": project }).to_string());
    let mut fields = vec![
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("audience", exchange.audience),
        ("scope", SCOPE),
        ("requested_token_type", TOKEN_TYPE_ACCESS_TOKEN),
        ("subject_token", exchange.subject_token),
        ("subject_token_type", exchange.subject_token_type),
    ];
    if let Some(options) = &options {
        fields.push(("options", options));
    }
    let mut request = http::client()?
        .post(exchange.endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(http::form(&fields));
    let mut sent = vec![exchange.subject_token];
    if let Some((id, secret)) = &exchange.client {
        request = request.basic_auth(id, Some(secret));
        sent.push(secret);
    }
    let answer = http::send_json(request, "GCP STS token exchange", &sent).await?;
    token_answer(&answer, exchange.endpoint)
}

/// IAM Credentials `generateAccessToken` for the service account of `url`, authorized by
/// `federated`.
async fn generate_access_token(
    url: &str,
    federated: &str,
    lifetime: Option<u64>,
) -> Result<Fetched<Secret>, CredentialError> {
    let mut body = Map::new();
    body.insert("scope".into(), json!([SCOPE]));
    if let Some(seconds) = lifetime {
        body.insert("lifetime".into(), format!("{seconds}s").into());
    }
    let request = http::client()?
        .post(url)
        .bearer_auth(federated)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Value::Object(body).to_string());
    let answer =
        http::send_json(request, "GCP service account impersonation", &[federated]).await?;
    let endpoint = url.split('?').next().unwrap_or_default();
    let token =
        http::token_field(&answer, "accessToken").ok_or_else(|| GcpError::NoImpersonatedToken {
            endpoint: endpoint.to_string(),
        })?;
    let expires_at = answer
        .get("expireTime")
        .and_then(Value::as_str)
        .and_then(|text| parse_rfc3339(text.trim()))
        .or_else(|| {
            SystemTime::now().checked_add(Duration::from_secs(
                lifetime.unwrap_or(DEFAULT_IMPERSONATION_LIFETIME),
            ))
        });
    Ok(Fetched {
        value: Secret::new(token),
        expires_at,
    })
}

/// A token from the metadata server.
async fn from_metadata_server(host: &str) -> Result<Fetched<Secret>, CredentialError> {
    let url = format!(
        "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?{}",
        http::form(&[("scopes", SCOPE)])
    );
    let request = http::client()?
        .get(&url)
        .header("metadata-flavor", "Google")
        .header("accept", "application/json");
    let answer = http::send_json(request, "GCP metadata server token request", &[]).await?;
    token_answer(&answer, &format!("the metadata server {host}"))
}

/// An OAuth token answer: `access_token` and `expires_in` (seconds, number or string).
/// `endpoint` names the endpoint in the error (without its query).
fn token_answer(answer: &Value, endpoint: &str) -> Result<Fetched<Secret>, CredentialError> {
    let endpoint = endpoint.split('?').next().unwrap_or_default();
    let token =
        http::token_field(answer, "access_token").ok_or_else(|| GcpError::NoAccessToken {
            endpoint: endpoint.to_string(),
        })?;
    Ok(Fetched {
        value: Secret::new(token),
        expires_at: expires_in(answer, SystemTime::now()),
    })
}

/// `now` + `expires_in`.
fn expires_in(answer: &Value, now: SystemTime) -> Option<SystemTime> {
    let seconds = match answer.get("expires_in")? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    now.checked_add(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests;
