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

use super::http;
use super::oidc;
use super::refresh::{Fetch, FetchFuture, Fetched, Refreshing};
use crate::config::Secret;
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

/// The token source of a backend's `GCPCredentials`: the key file, workload identity
/// federation, or (neither) application default credentials. A service account to impersonate
/// that is not a full e-mail address belongs to the pool's project (`projectID`); see
/// [`token_source_with_project`]. Needs the async runtime.
pub fn token_source(
    credentials_file: Option<&Path>,
    wif: Option<&GcpWorkloadIdentityFederation>,
    base: &Path,
) -> Result<Arc<Refreshing<Secret>>, String> {
    start(GcpToken::new(
        credentials_file,
        wif,
        base,
        None,
        &process_env,
    )?)
}

/// [`token_source`], where a service account to impersonate that is not a full e-mail address
/// belongs to `project_name` (the backend's `projectName`), as upstream resolves it.
pub fn token_source_with_project(
    project_name: &str,
    credentials_file: Option<&Path>,
    wif: Option<&GcpWorkloadIdentityFederation>,
    base: &Path,
) -> Result<Arc<Refreshing<Secret>>, String> {
    start(GcpToken::new(
        credentials_file,
        wif,
        base,
        Some(project_name),
        &process_env,
    )?)
}

fn start(source: GcpToken) -> Result<Arc<Refreshing<Secret>>, String> {
    Refreshing::start(source.describe(), source)
}

/// A non-empty environment variable of this process.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
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
    ) -> Result<GcpToken, String> {
        let source = match (credentials_file, wif) {
            (Some(_), Some(_)) => {
                return Err(
                    "GCP credentials: set a credentials file or workload identity federation, not both"
                        .to_string(),
                );
            }
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

    async fn request(&self) -> Result<Fetched<Secret>, String> {
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
        Box::pin(self.request())
    }
}

/// Resolves workload identity federation.
fn federation(
    wif: &GcpWorkloadIdentityFederation,
    base: &Path,
    project_name: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Federation, String> {
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
            return Err(format!(
                "GCP workload identity federation: {field} {value:?} is not a valid name"
            ));
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
                return Err(format!(
                    "GCP workload identity federation: service account {email:?} is not a valid e-mail address"
                ));
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
    async fn token(&self) -> Result<Fetched<Secret>, String> {
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
fn application_default(env: &dyn Fn(&str) -> Option<String>) -> Result<Source, String> {
    if let Some(file) = env(CREDENTIALS_VAR) {
        let file = PathBuf::from(file.trim());
        check_key_file(&file).map_err(|err| format!("{CREDENTIALS_VAR}: {err}"))?;
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

/// Reads and parses a key file; the error names the file, never its content.
fn read_key_file(file: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| format!("cannot read {}: {err}", file.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|err| format!("{} is not a JSON key file: {err}", file.display()))?;
    if !doc.is_object() {
        return Err(format!("{} is not a JSON key file", file.display()));
    }
    Ok(doc)
}

/// Key file types this module reads.
const KEY_FILE_TYPES: [&str; 3] = ["service_account", "authorized_user", "external_account"];

/// Fails a configuration whose key file is unreadable or of an unsupported type.
fn check_key_file(file: &Path) -> Result<(), String> {
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

fn unsupported_type(file: &Path, kind: &str) -> String {
    format!(
        "{}: credential type {kind:?} is not supported (supported: {})",
        file.display(),
        KEY_FILE_TYPES.join(", ")
    )
}

/// A non-empty string field of a key file.
fn required<'a>(doc: &'a Value, field: &str, file: &Path) -> Result<&'a str, String> {
    optional(doc, field).ok_or_else(|| format!("{}: the key file has no {field}", file.display()))
}

fn optional<'a>(doc: &'a Value, field: &str) -> Option<&'a str> {
    doc.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A token from a key file.
async fn from_key_file(file: &Path) -> Result<Fetched<Secret>, String> {
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
        other => Err(unsupported_type(file, other)),
    }
}

/// The RS256-signed JWT a service account exchanges for an access token at `token_uri`.
fn service_account_assertion(
    doc: &Value,
    file: &Path,
    token_uri: &str,
    now: u64,
) -> Result<String, String> {
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
    sign_rs256(&Value::Object(header), &claims, key)
        .map_err(|reason| format!("{}: {reason}", file.display()))
}

/// `header.claims.signature`, RSASSA-PKCS1-v1_5 with SHA-256, with a PEM private key
/// (PKCS#8, or PKCS#1 `RSA PRIVATE KEY`).
fn sign_rs256(header: &Value, claims: &Value, pem: &str) -> Result<String, String> {
    const BAD_KEY: &str = "the private_key is not a PEM RSA private key";
    let der = pem_body(pem).ok_or(BAD_KEY)?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .or_else(|_| ring::signature::RsaKeyPair::from_der(&der))
        .map_err(|_| BAD_KEY.to_string())?;
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
    .map_err(|_| "signing the JWT assertion failed".to_string())?;
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
async fn external_account(doc: &Value, file: &Path) -> Result<Fetched<Secret>, String> {
    let audience = required(doc, "audience", file)?;
    let subject_token_type = required(doc, "subject_token_type", file)?;
    let token_url = optional(doc, "token_url").unwrap_or(DEFAULT_STS_ENDPOINT);
    let source = doc
        .get("credential_source")
        .filter(|s| s.is_object())
        .ok_or_else(|| format!("{}: the key file has no credential_source", file.display()))?;
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
async fn subject_token(source: &Value, file: &Path) -> Result<String, String> {
    let (raw, origin) = if let Some(path) = optional(source, "file") {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read the credential source {path}: {err}"))?;
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
        return Err(format!(
            "{}: the credential_source names no file or url (executable and AWS sources are not supported)",
            file.display()
        ));
    };
    let format = source.get("format");
    let token = match format.and_then(|f| optional(f, "type")).unwrap_or("text") {
        "text" => raw.trim().to_string(),
        "json" => {
            let field = format
                .and_then(|f| optional(f, "subject_token_field_name"))
                .ok_or_else(|| {
                    format!(
                        "{}: a json credential_source needs format.subject_token_field_name",
                        file.display()
                    )
                })?;
            let parsed: Value = serde_json::from_str(&raw)
                .map_err(|_| format!("the credential source {origin} is not JSON"))?;
            optional(&parsed, field)
                .ok_or_else(|| format!("the credential source {origin} has no {field}"))?
                .to_string()
        }
        other => {
            return Err(format!(
                "{}: credential_source format {other:?} is not supported (text, json)",
                file.display()
            ));
        }
    };
    if token.is_empty() {
        return Err(format!("the credential source {origin} is empty"));
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

async fn sts_exchange(exchange: &StsExchange<'_>) -> Result<Fetched<Secret>, String> {
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
) -> Result<Fetched<Secret>, String> {
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
    let token = answer
        .get("accessToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            format!(
                "GCP service account impersonation: the answer of {endpoint} carries no accessToken"
            )
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
async fn from_metadata_server(host: &str) -> Result<Fetched<Secret>, String> {
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
fn token_answer(answer: &Value, endpoint: &str) -> Result<Fetched<Secret>, String> {
    let endpoint = endpoint.split('?').next().unwrap_or_default();
    let token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("the answer of {endpoint} carries no access_token"))?;
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
mod tests {
    use std::time::Duration;

    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    use super::super::azure::test_server::{Server, TempDir, env, fixture};
    use super::*;

    const STS_PATH: &str = "/v1/token";
    const IDP_PATH: &str = "/idp/token";

    fn close_to(at: Option<SystemTime>, expected: SystemTime) -> bool {
        let Some(at) = at else { return false };
        let diff = at.duration_since(expected).unwrap_or_else(|e| e.duration());
        diff < Duration::from_secs(30)
    }

    fn json_fixture(name: &str) -> Value {
        serde_json::from_str(&fixture(name)).unwrap()
    }

    fn write_json(dir: &TempDir, name: &str, doc: &Value) -> PathBuf {
        dir.write(name, &serde_json::to_string_pretty(doc).unwrap())
    }

    fn decode_segment(segment: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
    }

    fn wif_config(
        idp: &Server,
        dir: &TempDir,
        service_account: Option<&str>,
    ) -> GcpWorkloadIdentityFederation {
        dir.write("idp-secret", "idp-client-secret-value\n");
        GcpWorkloadIdentityFederation {
            project_id: "pool-project".to_string(),
            workload_identity_pool_name: "aigw-pool".to_string(),
            workload_identity_provider_name: "aigw-provider".to_string(),
            service_account_name: service_account.map(str::to_string),
            oidc: OidcExchange {
                issuer: idp.base.clone(),
                token_endpoint: Some(idp.url(IDP_PATH)),
                client_id: "aigw-extproc".to_string(),
                client_secret_file: "idp-secret".to_string(),
                scopes: vec!["openid".to_string()],
                grant_type: None,
                aud: None,
            },
        }
    }

    const AUDIENCE: &str = "//iam.googleapis.com/projects/pool-project/locations/global/workloadIdentityPools/aigw-pool/providers/aigw-provider";

    #[test]
    fn paths_are_prefixed_with_project_and_location() {
        assert_eq!(
            path(
                "my-project",
                "us-central1",
                "/publishers/google/models/gemini:generateContent"
            ),
            "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini:generateContent"
        );
    }

    #[tokio::test]
    async fn service_account_flow_posts_a_signed_jwt_to_the_token_uri() {
        let oauth = Server::start(&[(
            "/token",
            200,
            r#"{"access_token":"ya29.sa-token","expires_in":3599,"token_type":"Bearer"}"#,
        )])
        .await;
        let dir = TempDir::new("gcp-sa");
        let mut doc = json_fixture("gcp/service_account.json");
        doc["token_uri"] = oauth.url("/token").into();
        let file = write_json(&dir, "service_account.json", &doc);

        let source = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[])).unwrap();
        let before = unix_now();
        let fetched = source.fetch().await.unwrap();
        assert_eq!(fetched.value.expose(), "ya29.sa-token");
        assert!(close_to(
            fetched.expires_at,
            SystemTime::now() + Duration::from_secs(3599)
        ));

        let request = oauth.one("/token");
        assert_eq!(request.method, "POST");
        let form = request.form();
        assert_eq!(
            form["grant_type"],
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
        );
        let jwt = &form["assertion"];
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);

        // The signature verifies with the public half of the fixture key.
        let public_der = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/gcp/service_account_public_key.der"),
        )
        .unwrap();
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public_der)
            .verify(signed.as_bytes(), &signature)
            .unwrap();
        // And not for anything else.
        let tampered = format!("{}.{}x", parts[0], parts[1]);
        assert!(
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public_der)
                .verify(tampered.as_bytes(), &signature)
                .is_err()
        );

        let header = decode_segment(parts[0]);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], "0123456789abcdef0123456789abcdef01234567");
        let claims = decode_segment(parts[1]);
        assert_eq!(
            claims["iss"],
            "vertex-caller@aigw-test-project.iam.gserviceaccount.com"
        );
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["aud"], oauth.url("/token"));
        let iat = claims["iat"].as_u64().unwrap();
        assert!(iat >= before && iat <= unix_now());
        assert_eq!(claims["exp"].as_u64().unwrap(), iat + 3600);
    }

    #[tokio::test]
    async fn the_key_file_is_read_again_on_every_fetch() {
        let first =
            Server::start(&[("/token", 200, r#"{"access_token":"one","expires_in":3600}"#)]).await;
        let second =
            Server::start(&[("/token", 200, r#"{"access_token":"two","expires_in":3600}"#)]).await;
        let dir = TempDir::new("gcp-reread");
        let mut doc = json_fixture("gcp/service_account.json");
        doc["token_uri"] = first.url("/token").into();
        let file = write_json(&dir, "key.json", &doc);
        let source = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[])).unwrap();
        assert_eq!(source.fetch().await.unwrap().value.expose(), "one");
        doc["token_uri"] = second.url("/token").into();
        write_json(&dir, "key.json", &doc);
        assert_eq!(source.fetch().await.unwrap().value.expose(), "two");
    }

    #[tokio::test]
    async fn authorized_user_flow_uses_the_refresh_token() {
        let oauth = Server::start(&[(
            "/token",
            200,
            r#"{"access_token":"ya29.user-token","expires_in":"3599","scope":"https://www.googleapis.com/auth/cloud-platform"}"#,
        )])
        .await;
        let dir = TempDir::new("gcp-user");
        let mut doc = json_fixture("gcp/authorized_user.json");
        doc["token_uri"] = oauth.url("/token").into();
        let file = write_json(&dir, "adc.json", &doc);
        // Found through GOOGLE_APPLICATION_CREDENTIALS.
        let file_var = file.display().to_string();
        let source = GcpToken::new(
            None,
            None,
            dir.path(),
            None,
            &env(&[(CREDENTIALS_VAR, &file_var)]),
        )
        .unwrap();
        assert!(matches!(&source.source, Source::KeyFile(f) if *f == file));

        let fetched = source.fetch().await.unwrap();
        assert_eq!(fetched.value.expose(), "ya29.user-token");
        assert!(close_to(
            fetched.expires_at,
            SystemTime::now() + Duration::from_secs(3599)
        ));
        let form = oauth.one("/token").form();
        assert_eq!(form["grant_type"], "refresh_token");
        assert_eq!(
            form["client_id"],
            "764086051850-test.apps.googleusercontent.com"
        );
        assert_eq!(form["client_secret"], "test-client-secret-not-real");
        assert_eq!(form["refresh_token"], "1//test-refresh-token-not-real");
    }

    #[tokio::test]
    async fn external_account_exchanges_the_file_token_and_impersonates() {
        let sa_path = "/v1/projects/-/serviceAccounts/vertex-caller@aigw-test-project.iam.gserviceaccount.com:generateAccessToken";
        let google = Server::start(&[
            (
                STS_PATH,
                200,
                r#"{"access_token":"federated-token","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}"#,
            ),
            (
                sa_path,
                200,
                r#"{"accessToken":"ya29.impersonated","expireTime":"2099-01-02T03:04:05Z"}"#,
            ),
        ])
        .await;
        let dir = TempDir::new("gcp-external");
        let subject = dir.write("subject.json", &fixture("gcp/subject_token.json"));
        let mut doc = json_fixture("gcp/external_account.json");
        doc["token_url"] = google.url(STS_PATH).into();
        doc["service_account_impersonation_url"] = google.url(sa_path).into();
        doc["credential_source"]["file"] = subject.display().to_string().into();
        doc["service_account_impersonation"] = json!({"token_lifetime_seconds": 1800});
        let file = write_json(&dir, "external.json", &doc);

        let source = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[])).unwrap();
        let fetched = source.fetch().await.unwrap();
        assert_eq!(fetched.value.expose(), "ya29.impersonated");
        assert_eq!(fetched.expires_at, parse_rfc3339("2099-01-02T03:04:05Z"));

        let form = google.one(STS_PATH).form();
        assert_eq!(form["grant_type"], GRANT_TOKEN_EXCHANGE);
        assert_eq!(
            form["audience"],
            "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/test-pool/providers/test-provider"
        );
        assert_eq!(form["scope"], SCOPE);
        assert_eq!(form["requested_token_type"], TOKEN_TYPE_ACCESS_TOKEN);
        assert_eq!(form["subject_token"], "projected-subject-token-not-real");
        assert_eq!(form["subject_token_type"], TOKEN_TYPE_JWT);

        let impersonation = google.one(sa_path);
        assert_eq!(impersonation.method, "POST");
        assert_eq!(
            impersonation.header("authorization"),
            Some("Bearer federated-token")
        );
        let body: Value = serde_json::from_str(&impersonation.body).unwrap();
        assert_eq!(body, json!({"scope": [SCOPE], "lifetime": "1800s"}));
    }

    #[tokio::test]
    async fn external_account_reads_a_text_token_from_a_url() {
        let google = Server::start(&[
            ("/subject", 200, "url-subject-token\n"),
            (
                STS_PATH,
                200,
                r#"{"access_token":"federated-direct","expires_in":3000}"#,
            ),
        ])
        .await;
        let dir = TempDir::new("gcp-external-url");
        let doc = json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/locations/global/workforcePools/wf/providers/p",
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "token_url": google.url(STS_PATH),
            "workforce_pool_user_project": "billing-project",
            "credential_source": {"url": google.url("/subject"), "headers": {"x-flavor": "test"}},
        });
        let file = write_json(&dir, "external.json", &doc);
        let source = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[])).unwrap();
        let fetched = source.fetch().await.unwrap();
        assert_eq!(fetched.value.expose(), "federated-direct");
        assert!(close_to(
            fetched.expires_at,
            SystemTime::now() + Duration::from_secs(3000)
        ));
        assert_eq!(google.one("/subject").header("x-flavor"), Some("test"));
        let form = google.one(STS_PATH).form();
        assert_eq!(form["subject_token"], "url-subject-token");
        assert_eq!(
            form["subject_token_type"],
            "urn:ietf:params:oauth:token-type:id_token"
        );
        assert_eq!(form["options"], r#"{"userProject":"billing-project"}"#);
    }

    #[tokio::test]
    async fn workload_identity_federation_without_impersonation() {
        let idp = Server::start(&[(IDP_PATH, 200, r#"{"access_token":"oidc-subject-jwt"}"#)]).await;
        let sts = Server::start(&[(
            STS_PATH,
            200,
            r#"{"access_token":"federated-wif","token_type":"Bearer","expires_in":3600}"#,
        )])
        .await;
        let dir = TempDir::new("gcp-wif");
        let wif = wif_config(&idp, &dir, None);
        let endpoint = sts.url(STS_PATH);
        let source = GcpToken::new(
            None,
            Some(&wif),
            dir.path(),
            None,
            &env(&[(STS_ENDPOINT_VAR, &endpoint)]),
        )
        .unwrap();
        let fetched = source.fetch().await.unwrap();
        assert_eq!(fetched.value.expose(), "federated-wif");
        assert!(close_to(
            fetched.expires_at,
            SystemTime::now() + Duration::from_secs(3600)
        ));

        let idp_form = idp.one(IDP_PATH).form();
        assert_eq!(idp_form["grant_type"], "client_credentials");
        assert_eq!(idp_form["client_secret"], "idp-client-secret-value");

        let form = sts.one(STS_PATH).form();
        assert_eq!(
            form["grant_type"],
            "urn:ietf:params:oauth:grant-type:token-exchange"
        );
        assert_eq!(form["audience"], AUDIENCE);
        assert_eq!(form["scope"], SCOPE);
        assert_eq!(
            form["requested_token_type"],
            "urn:ietf:params:oauth:token-type:access_token"
        );
        assert_eq!(form["subject_token"], "oidc-subject-jwt");
        assert_eq!(
            form["subject_token_type"],
            "urn:ietf:params:oauth:token-type:jwt"
        );
        assert!(!form.contains_key("options"));
    }

    #[tokio::test]
    async fn workload_identity_federation_with_impersonation() {
        let idp = Server::start(&[(IDP_PATH, 200, r#"{"id_token":"oidc-id-token"}"#)]).await;
        let sa_path = "/v1/projects/-/serviceAccounts/vertex@pool-project.iam.gserviceaccount.com:generateAccessToken";
        let google = Server::start(&[
            (STS_PATH, 200, r#"{"access_token":"federated-wif","expires_in":3600}"#),
            (
                sa_path,
                200,
                r#"{"accessToken":"ya29.wif-impersonated","expireTime":"2099-06-30T12:00:00.123456789Z"}"#,
            ),
        ])
        .await;
        let dir = TempDir::new("gcp-wif-sa");
        let wif = wif_config(&idp, &dir, Some("vertex"));
        let endpoint = google.url(STS_PATH);
        let iam = format!("{}/", google.base);
        let source = GcpToken::new(
            None,
            Some(&wif),
            dir.path(),
            None,
            &env(&[
                (STS_ENDPOINT_VAR, &endpoint),
                (IAM_CREDENTIALS_ENDPOINT_VAR, &iam),
            ]),
        )
        .unwrap();
        let fetched = source.fetch().await.unwrap();
        assert_eq!(fetched.value.expose(), "ya29.wif-impersonated");
        assert_eq!(
            fetched.expires_at,
            parse_rfc3339("2099-06-30T12:00:00.123456789Z")
        );
        assert_eq!(
            google.one(STS_PATH).form()["subject_token"],
            "oidc-id-token"
        );
        let impersonation = google.one(sa_path);
        assert_eq!(
            impersonation.header("authorization"),
            Some("Bearer federated-wif")
        );
        assert_eq!(
            impersonation.header("content-type"),
            Some("application/json")
        );
        let body: Value = serde_json::from_str(&impersonation.body).unwrap();
        assert_eq!(body, json!({"scope": [SCOPE]}));
    }

    #[test]
    fn service_accounts_to_impersonate_are_resolved_like_upstream() {
        let idp_dir = TempDir::new("gcp-sa-names");
        let wif = |name: &str| GcpWorkloadIdentityFederation {
            project_id: "pool-project".to_string(),
            workload_identity_pool_name: "pool".to_string(),
            workload_identity_provider_name: "provider".to_string(),
            service_account_name: Some(name.to_string()),
            oidc: OidcExchange {
                issuer: "https://idp.example".to_string(),
                token_endpoint: None,
                client_id: "c".to_string(),
                client_secret_file: "s".to_string(),
                scopes: Vec::new(),
                grant_type: None,
                aud: None,
            },
        };
        let url = |name: &str, project: Option<&str>| {
            federation(&wif(name), idp_dir.path(), project, &env(&[]))
                .unwrap()
                .impersonation_url
                .unwrap()
        };
        assert_eq!(
            url("vertex", Some("vertex-project")),
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/vertex@vertex-project.iam.gserviceaccount.com:generateAccessToken"
        );
        assert!(
            url("vertex", None)
                .contains("/serviceAccounts/vertex@pool-project.iam.gserviceaccount.com:")
        );
        assert!(
            url("sa@other.iam.gserviceaccount.com", Some("x"))
                .contains("/serviceAccounts/sa@other.iam.gserviceaccount.com:")
        );
        assert!(federation(&wif("a/b"), idp_dir.path(), None, &env(&[])).is_err());
        let mut bad = wif("vertex");
        bad.workload_identity_pool_name = "pool/../x".to_string();
        assert!(federation(&bad, idp_dir.path(), None, &env(&[])).is_err());
        let default = federation(&wif("vertex"), idp_dir.path(), None, &env(&[])).unwrap();
        assert_eq!(default.sts_endpoint, "https://sts.googleapis.com/v1/token");
    }

    #[tokio::test]
    async fn metadata_server_flow() {
        let path = "/computeMetadata/v1/instance/service-accounts/default/token";
        let metadata = Server::start(&[(
            path,
            200,
            r#"{"access_token":"ya29.metadata","expires_in":1799,"token_type":"Bearer"}"#,
        )])
        .await;
        let source = GcpToken::new(
            None,
            None,
            Path::new("/"),
            None,
            &env(&[(METADATA_HOST_VAR, &metadata.authority)]),
        )
        .unwrap();
        let fetched = source.fetch().await.unwrap();
        assert_eq!(fetched.value.expose(), "ya29.metadata");
        assert!(close_to(
            fetched.expires_at,
            SystemTime::now() + Duration::from_secs(1799)
        ));
        let request = metadata.one(path);
        assert_eq!(request.method, "GET");
        assert_eq!(request.header("metadata-flavor"), Some("Google"));
        assert_eq!(request.query()["scopes"], SCOPE);
    }

    #[test]
    fn application_default_falls_back_to_the_metadata_server() {
        let source = GcpToken::new(None, None, Path::new("/"), None, &env(&[])).unwrap();
        assert!(
            matches!(&source.source, Source::Metadata(host) if host == "metadata.google.internal")
        );

        // gcloud's well-known file comes before the metadata server.
        let dir = TempDir::new("gcp-gcloud");
        std::fs::create_dir_all(dir.path().join(".config/gcloud")).unwrap();
        let file = dir.write(
            ".config/gcloud/application_default_credentials.json",
            &fixture("gcp/authorized_user.json"),
        );
        let home = dir.path().display().to_string();
        let source =
            GcpToken::new(None, None, Path::new("/"), None, &env(&[("HOME", &home)])).unwrap();
        assert!(matches!(&source.source, Source::KeyFile(f) if *f == file));
    }

    #[test]
    fn configuration_errors_name_what_is_wrong() {
        let dir = TempDir::new("gcp-config-errors");
        let err = GcpToken::new(
            Some(&dir.path().join("missing.json")),
            None,
            dir.path(),
            None,
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.contains("missing.json"), "{err}");

        let file = dir.write(
            "impersonated.json",
            r#"{"type":"impersonated_service_account"}"#,
        );
        let err = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[])).unwrap_err();
        assert!(err.contains("impersonated_service_account"), "{err}");
        assert!(err.contains("impersonated.json"), "{err}");

        let key = dir.write("key.json", &fixture("gcp/service_account.json"));
        let idp = GcpWorkloadIdentityFederation {
            project_id: "p".to_string(),
            workload_identity_pool_name: "pool".to_string(),
            workload_identity_provider_name: "provider".to_string(),
            service_account_name: None,
            oidc: OidcExchange {
                issuer: "https://idp.example".to_string(),
                token_endpoint: None,
                client_id: "c".to_string(),
                client_secret_file: "s".to_string(),
                scopes: Vec::new(),
                grant_type: None,
                aud: None,
            },
        };
        let err = GcpToken::new(Some(&key), Some(&idp), dir.path(), None, &env(&[])).unwrap_err();
        assert!(err.contains("not both"), "{err}");
    }

    #[tokio::test]
    async fn errors_name_the_endpoint_and_status_but_no_secret() {
        let failing = Server::start(&[
            (
                "/token",
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            ),
            (STS_PATH, 403, r#"{"error":"unauthorized_client"}"#),
        ])
        .await;
        let dir = TempDir::new("gcp-errors");

        // Service account: neither the key nor the assertion appear.
        let mut doc = json_fixture("gcp/service_account.json");
        doc["token_uri"] = failing.url("/token").into();
        let file = write_json(&dir, "key.json", &doc);
        let source = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[])).unwrap();
        let err = source.fetch().await.unwrap_err();
        assert!(err.contains("400"), "{err}");
        assert!(err.contains(&failing.url("/token")), "{err}");
        let assertion = failing.one("/token").form()["assertion"].clone();
        assert!(!err.contains(&assertion), "{err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
        assert!(!err.contains("eyJ"), "{err}");

        // A malformed key is named without being echoed.
        doc["private_key"] =
            "-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5LXNlY3JldA==\n-----END PRIVATE KEY-----\n"
                .into();
        let file = write_json(&dir, "bad-key.json", &doc);
        let err = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[]))
            .unwrap()
            .fetch()
            .await
            .unwrap_err();
        assert!(
            err.contains("bad-key.json") && err.contains("private_key"),
            "{err}"
        );
        assert!(!err.contains("bm90LWEta2V5LXNlY3JldA"), "{err}");

        // Federation: neither the OIDC token nor the client secret appear.
        let idp =
            Server::start(&[(IDP_PATH, 200, r#"{"access_token":"oidc-secret-subject"}"#)]).await;
        let wif = wif_config(&idp, &dir, Some("vertex"));
        let endpoint = failing.url(STS_PATH);
        let source = GcpToken::new(
            None,
            Some(&wif),
            dir.path(),
            None,
            &env(&[(STS_ENDPOINT_VAR, &endpoint)]),
        )
        .unwrap();
        let err = source.fetch().await.unwrap_err();
        assert!(err.contains("403") && err.contains(STS_PATH), "{err}");
        assert!(!err.contains("oidc-secret-subject"), "{err}");
        assert!(!err.contains("idp-client-secret-value"), "{err}");

        // Authorized user: the refresh token and client secret do not appear.
        let mut user = json_fixture("gcp/authorized_user.json");
        user["token_uri"] = failing.url("/token").into();
        let file = write_json(&dir, "user.json", &user);
        let err = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[]))
            .unwrap()
            .fetch()
            .await
            .unwrap_err();
        assert!(err.contains("400"), "{err}");
        assert!(!err.contains("test-refresh-token-not-real"), "{err}");
        assert!(!err.contains("test-client-secret-not-real"), "{err}");
    }

    #[tokio::test]
    async fn what_an_endpoint_was_sent_never_comes_back_in_an_error() {
        let google = Server::start(&[
            ("/subject", 200, "echoed-subject-token-value\n"),
            ("/not-json", 200, "plain text"),
            (
                STS_PATH,
                400,
                r#"{"error":"invalid_request","error_description":"rejected subject_token=echoed-subject-token-value"}"#,
            ),
            ("/empty", 200, r#"{"token_type":"Bearer"}"#),
        ])
        .await;
        let dir = TempDir::new("gcp-echo");
        // An STS that repeats the subject token in its error.
        let doc = json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": google.url(STS_PATH),
            "credential_source": {"url": google.url("/subject")},
        });
        let file = write_json(&dir, "echo.json", &doc);
        let err = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[]))
            .unwrap()
            .fetch()
            .await
            .unwrap_err();
        assert!(err.contains("400") && err.contains("<redacted>"), "{err}");
        assert!(!err.contains("echoed-subject-token-value"), "{err}");
        // URL queries are not repeated either.
        let doc = json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}?key=token-url-query-secret", google.url("/empty")),
            "credential_source": {
                "url": format!("{}?key=source-query-secret", google.url("/not-json")),
                "format": {"type": "json", "subject_token_field_name": "token"},
            },
        });
        let file = write_json(&dir, "query.json", &doc);
        let err = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[]))
            .unwrap()
            .fetch()
            .await
            .unwrap_err();
        assert!(err.contains("/not-json is not JSON"), "{err}");
        assert!(!err.contains("source-query-secret"), "{err}");
        let err = token_answer(
            &json!({}),
            &format!("{}?key=token-url-query-secret", google.url("/empty")),
        )
        .unwrap_err();
        assert!(err.contains("/empty carries no access_token"), "{err}");
        assert!(!err.contains("token-url-query-secret"), "{err}");
    }

    #[tokio::test]
    async fn token_source_starts_a_refreshing_token() {
        let oauth = Server::start(&[(
            "/token",
            200,
            r#"{"access_token":"served","expires_in":3600}"#,
        )])
        .await;
        let dir = TempDir::new("gcp-refreshing");
        let mut doc = json_fixture("gcp/service_account.json");
        doc["token_uri"] = oauth.url("/token").into();
        let file = write_json(&dir, "key.json", &doc);
        let token = token_source(Some(&file), None, dir.path()).unwrap();
        assert!(token.ready(Duration::from_secs(10)).await);
        assert_eq!(token.get().unwrap().expose(), "served");
    }

    #[test]
    fn expires_in_is_a_number_or_a_string() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            expires_in(&json!({"expires_in": 60}), now),
            Some(now + Duration::from_secs(60))
        );
        assert_eq!(
            expires_in(&json!({"expires_in": "60"}), now),
            Some(now + Duration::from_secs(60))
        );
        assert_eq!(expires_in(&json!({"expires_in": -1}), now), None);
        assert_eq!(expires_in(&json!({}), now), None);
    }
}
