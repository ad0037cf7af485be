//! Entra ID access tokens for Azure OpenAI (`AzureCredentials`), obtained by the extproc itself
//! with the Microsoft identity platform's client-credentials grant and refreshed in the
//! background ([`super::refresh`]).
//!
//! The client proves its identity in one of three ways:
//! - a client secret, read from its file on every fetch (so a rotated secret is picked up);
//! - a token from the configured OIDC identity provider (`oidcExchangeToken`), sent as a
//!   federated client assertion;
//! - with neither configured, Azure workload identity: the token file named by
//!   `AZURE_FEDERATED_TOKEN_FILE`, read on every fetch, sent as a client assertion.
//!
//! The token endpoint is `<authority>/<tenant>/oauth2/v2.0/token`, the authority being
//! `AZURE_AUTHORITY_HOST` (default `https://login.microsoftonline.com`), and the scope
//! `https://cognitiveservices.azure.com/.default`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aigw_filterconfig::OidcExchange;
use serde_json::Value;

use super::oidc::{self, SecretFileError};
use super::refresh::{self, Fetch, FetchFuture, Fetched, Refreshing};
use super::{CredentialError, http, process_env};
use crate::redact::Secret;

/// The resource Azure OpenAI tokens are issued for.
const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// The public-cloud authority.
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// `client_assertion_type` of a JWT client assertion.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Overrides the authority (sovereign clouds, tests), as the Azure SDKs read it.
const AUTHORITY_HOST_VAR: &str = "AZURE_AUTHORITY_HOST";
/// The projected service-account token of Azure workload identity.
const FEDERATED_TOKEN_FILE_VAR: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// How the client authenticates to Entra ID.
#[derive(Debug, Clone)]
enum ClientAuth {
    /// A client secret in a file.
    Secret(PathBuf),
    /// A token from the identity provider, as client assertion.
    Oidc(OidcExchange),
    /// A federated token file (Azure workload identity), as client assertion.
    FederatedTokenFile(PathBuf),
}

/// Fetches Entra ID access tokens for one client.
#[derive(Debug, Clone)]
struct EntraToken {
    /// `<authority>/<tenant>/oauth2/v2.0/token`.
    endpoint: String,
    /// The client ID, literal or `file:<path>`.
    client_id: String,
    auth: ClientAuth,
    /// Resolves relative paths of the configuration.
    base: PathBuf,
}

/// What is wrong with an Entra ID client or the answer of its token endpoint, beyond the
/// causes all providers share ([`CredentialError`]). Messages name the tenant, the client and
/// endpoints, never a secret or an assertion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AzureError {
    /// The configuration of the client is wrong.
    #[error("Azure credentials (tenant {tenant}, client {client}): {problem}")]
    Config {
        /// The tenant ID, as configured.
        tenant: String,
        /// The client ID, as configured (literal or `file:<path>`).
        client: String,
        /// What is wrong.
        problem: AzureConfigError,
    },
    /// The token endpoint answered without a token.
    #[error("Entra ID token request: the answer of {endpoint} carries no access_token")]
    NoToken {
        /// The token endpoint.
        endpoint: String,
    },
}

/// What is wrong with the configuration of an Entra ID client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AzureConfigError {
    /// No client ID.
    #[error("the client ID is empty")]
    EmptyClientId,
    /// A tenant ID that cannot be a path segment of the token endpoint.
    #[error("the tenant ID must be a GUID or a domain name")]
    BadTenantId,
    /// Both ways of authenticating the client are configured.
    #[error("set a client secret or an OIDC exchange, not both")]
    SecretAndOidc,
    /// The client secret file cannot be read.
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
    /// No way of authenticating the client is configured.
    #[error(
        "neither a client secret nor an OIDC exchange is configured, and {FEDERATED_TOKEN_FILE_VAR} \
         is not set (Azure workload identity)"
    )]
    Unconfigured,
}

/// The token source of a backend's `AzureCredentials`. `client_id` may be `file:<path>`;
/// `client_secret_file` and `oidc` are exclusive, and with neither the token comes from Azure
/// workload identity (`AZURE_FEDERATED_TOKEN_FILE`). Needs the async runtime.
pub fn token_source(
    client_id: &str,
    tenant_id: &str,
    client_secret_file: Option<&Path>,
    oidc: Option<&OidcExchange>,
    base: &Path,
) -> Result<Arc<Refreshing<Secret>>, CredentialError> {
    let source = EntraToken::new(
        client_id,
        tenant_id,
        client_secret_file,
        oidc,
        base,
        &process_env,
    )?;
    Ok(Refreshing::start(
        format!("Entra ID token (tenant {tenant_id}, client {client_id})"),
        source,
    )?)
}

/// How the client authenticates, checked; `env` looks up environment variables.
fn client_auth(
    tenant_id: &str,
    client_id: &str,
    client_secret_file: Option<&Path>,
    oidc: Option<&OidcExchange>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ClientAuth, AzureConfigError> {
    if client_id.trim().is_empty() {
        return Err(AzureConfigError::EmptyClientId);
    }
    if tenant_id.is_empty()
        || !tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(AzureConfigError::BadTenantId);
    }
    Ok(match (client_secret_file, oidc) {
        (Some(_), Some(_)) => return Err(AzureConfigError::SecretAndOidc),
        (Some(file), None) => {
            // Fail the configuration now rather than every fetch later.
            oidc::read_trimmed(file)?;
            ClientAuth::Secret(file.to_path_buf())
        }
        (None, Some(oidc)) => ClientAuth::Oidc(oidc.clone()),
        (None, None) => match env(FEDERATED_TOKEN_FILE_VAR) {
            Some(file) => ClientAuth::FederatedTokenFile(PathBuf::from(file.trim())),
            None => return Err(AzureConfigError::Unconfigured),
        },
    })
}

impl EntraToken {
    /// Resolves the configuration; `env` looks up environment variables.
    fn new(
        client_id: &str,
        tenant_id: &str,
        client_secret_file: Option<&Path>,
        oidc: Option<&OidcExchange>,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<EntraToken, CredentialError> {
        let auth = client_auth(tenant_id, client_id, client_secret_file, oidc, env).map_err(
            |problem| AzureError::Config {
                tenant: tenant_id.to_string(),
                client: client_id.to_string(),
                problem,
            },
        )?;
        let authority = env(AUTHORITY_HOST_VAR).unwrap_or_else(|| DEFAULT_AUTHORITY.to_string());
        let authority = authority.trim().trim_end_matches('/');
        Ok(EntraToken {
            endpoint: format!("{authority}/{tenant_id}/oauth2/v2.0/token"),
            client_id: client_id.to_string(),
            auth,
            base: base.to_path_buf(),
        })
    }

    /// One client-credentials request.
    async fn request(&self) -> Result<Fetched<Secret>, CredentialError> {
        let client_id = oidc::literal_or_file(&self.client_id, &self.base)?;
        let mut fields = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client_id),
            ("scope", SCOPE.to_string()),
        ];
        match &self.auth {
            ClientAuth::Secret(file) => {
                fields.push(("client_secret", oidc::read_trimmed(file)?));
            }
            ClientAuth::Oidc(exchange) => {
                let assertion = oidc::client_credentials_token(exchange, &self.base).await?;
                fields.push(("client_assertion_type", ASSERTION_TYPE.to_string()));
                fields.push(("client_assertion", assertion));
            }
            ClientAuth::FederatedTokenFile(file) => {
                let assertion = oidc::read_trimmed(file)?;
                fields.push(("client_assertion_type", ASSERTION_TYPE.to_string()));
                fields.push(("client_assertion", assertion));
            }
        }
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = http::post_form(&self.endpoint, &fields, "Entra ID token request").await?;
        let token =
            http::token_field(&answer, "access_token").ok_or_else(|| AzureError::NoToken {
                endpoint: self.endpoint.clone(),
            })?;
        Ok(Fetched {
            value: Secret::new(token),
            expires_at: expiry(&answer, SystemTime::now()),
        })
    }
}

impl Fetch for EntraToken {
    type Output = Secret;

    fn fetch(&self) -> FetchFuture<'_, Secret> {
        refresh::boxed(self.request())
    }
}

/// When a token answer expires: `expires_in` (seconds from `now`), else `expires_on` (Unix
/// seconds); either may be a number or a string of digits.
fn expiry(answer: &Value, now: SystemTime) -> Option<SystemTime> {
    if let Some(seconds) = answer.get("expires_in").and_then(seconds) {
        return now.checked_add(Duration::from_secs(seconds));
    }
    answer
        .get("expires_on")
        .and_then(seconds)
        .and_then(|at| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(at)))
}

/// A whole number of seconds, as a JSON number or string.
fn seconds(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::test_support::{
        IDP_SECRET, Server, TempDir, assert_fields, assert_token, env, fixture, oidc_exchange,
        unused_oidc,
    };

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const TOKEN_PATH: &str = "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token";
    const CLIENT: &str = "b0c1d2e3-0000-4000-8000-000000000001";

    fn token_answer(token: &str) -> String {
        format!(
            r#"{{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"{token}"}}"#
        )
    }

    /// The token source of [`CLIENT`] in [`TENANT`], with the environment `vars`.
    fn entra_token(
        secret: Option<&Path>,
        oidc: Option<&OidcExchange>,
        base: &Path,
        vars: &[(&str, &str)],
    ) -> Result<EntraToken, CredentialError> {
        EntraToken::new(CLIENT, TENANT, secret, oidc, base, &env(vars))
    }

    /// The token source of a client secret in `secret`, at the authority `authority`.
    fn with_secret(secret: &Path, base: &Path, authority: &str) -> EntraToken {
        entra_token(Some(secret), None, base, &[(AUTHORITY_HOST_VAR, authority)]).unwrap()
    }

    /// The token source of Azure workload identity, the token in `file`, at `authority`.
    fn workload_identity(file: &Path, base: &Path, authority: &str) -> EntraToken {
        let file = file.display().to_string();
        entra_token(
            None,
            None,
            base,
            &[
                (AUTHORITY_HOST_VAR, authority),
                (FEDERATED_TOKEN_FILE_VAR, &file),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn client_secret_flow_posts_the_form_to_the_tenant_endpoint() {
        let entra =
            Server::start(&[(TOKEN_PATH, 200, &fixture("azure/token_response.json"))]).await;
        let dir = TempDir::new("azure-secret");
        let secret = dir.write("client-secret", &fixture("azure/client_secret"));
        dir.write("client-id", &format!("{CLIENT}\n"));
        let authority = format!("{}/", entra.base); // a trailing slash is tolerated
        let source = EntraToken::new(
            "file:client-id",
            TENANT,
            Some(&secret),
            None,
            dir.path(),
            &env(&[(AUTHORITY_HOST_VAR, &authority)]),
        )
        .unwrap();

        let fetched = source.fetch().await.unwrap();
        assert_token(
            &fetched,
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra-test-access-token.sig",
            3599,
        );

        let form = entra.one(TOKEN_PATH).posted_form();
        assert_fields(
            &form,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", "test-entra-client-secret-not-real"),
                ("scope", "https://cognitiveservices.azure.com/.default"),
            ],
        );
        assert!(!form.contains_key("client_assertion"));

        // A rotated secret is used by the next fetch.
        dir.write("client-secret", "rotated-secret");
        source.fetch().await.unwrap();
        let requests = entra.requests_to(TOKEN_PATH);
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].form()["client_secret"], "rotated-secret");
    }

    #[tokio::test]
    async fn the_refreshing_token_serves_the_fetched_value() {
        let entra = Server::start(&[(TOKEN_PATH, 200, &token_answer("served-token"))]).await;
        let dir = TempDir::new("azure-refresh");
        let secret = dir.write("client-secret", "s3cret");
        let source = with_secret(&secret, dir.path(), &entra.base);
        let token = Refreshing::start("Entra ID token", source).unwrap();
        assert!(token.ready(Duration::from_secs(10)).await);
        assert_eq!(token.get().unwrap().expose(), "served-token");
    }

    #[tokio::test]
    async fn oidc_flow_sends_the_identity_provider_token_as_client_assertion() {
        let idp = Server::start(&[(
            "/idp/token",
            200,
            r#"{"access_token":"idp-issued-jwt","token_type":"Bearer","expires_in":300}"#,
        )])
        .await;
        let entra = Server::start(&[(TOKEN_PATH, 200, &token_answer("entra-from-oidc"))]).await;
        let dir = TempDir::new("azure-oidc");
        let exchange = oidc_exchange(&idp, &dir, "api://AzureADTokenExchange");
        let source = entra_token(
            None,
            Some(&exchange),
            dir.path(),
            &[(AUTHORITY_HOST_VAR, &entra.base)],
        )
        .unwrap();

        let fetched = source.fetch().await.unwrap();
        assert_eq!(fetched.value.expose(), "entra-from-oidc");

        let idp_form = idp.one("/idp/token").form();
        assert_fields(
            &idp_form,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "aigw-extproc"),
                ("client_secret", IDP_SECRET),
            ],
        );

        let form = entra.one(TOKEN_PATH).form();
        assert_fields(
            &form,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("scope", SCOPE),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", "idp-issued-jwt"),
            ],
        );
        assert!(!form.contains_key("client_secret"));
    }

    #[tokio::test]
    async fn workload_identity_reads_the_federated_token_file_on_every_fetch() {
        let entra = Server::start(&[(TOKEN_PATH, 200, &token_answer("entra-from-wi"))]).await;
        let dir = TempDir::new("azure-wi");
        let jwt = fixture("azure/federated_token.jwt");
        let file = dir.write("token", &jwt);
        let source = workload_identity(&file, dir.path(), &entra.base);

        assert_eq!(
            source.fetch().await.unwrap().value.expose(),
            "entra-from-wi"
        );
        let form = entra.one(TOKEN_PATH).form();
        assert_fields(
            &form,
            &[
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", jwt.trim()),
                ("client_id", CLIENT),
            ],
        );
        assert!(!form.contains_key("client_secret"));

        dir.write("token", "rotated.projected.token");
        source.fetch().await.unwrap();
        let requests = entra.requests_to(TOKEN_PATH);
        assert_eq!(
            requests[1].form()["client_assertion"],
            "rotated.projected.token"
        );
    }

    #[tokio::test]
    async fn the_default_authority_is_the_public_cloud() {
        let source = entra_token(
            None,
            None,
            Path::new("/"),
            &[(
                FEDERATED_TOKEN_FILE_VAR,
                "/var/run/secrets/azure/tokens/token",
            )],
        )
        .unwrap();
        assert_eq!(
            source.endpoint,
            format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
        );
    }

    #[test]
    fn missing_configuration_is_named() {
        /// The problem of a configuration error.
        fn problem(err: &CredentialError) -> &AzureConfigError {
            match err {
                CredentialError::Azure(AzureError::Config { problem, .. }) => problem,
                other => panic!("not a configuration error: {other:?}"),
            }
        }
        let err = entra_token(None, None, Path::new("/"), &[]).unwrap_err();
        assert_eq!(
            err,
            CredentialError::Azure(AzureError::Config {
                tenant: TENANT.into(),
                client: CLIENT.into(),
                problem: AzureConfigError::Unconfigured
            })
        );
        assert_eq!(
            err.to_string(),
            format!(
                "Azure credentials (tenant {TENANT}, client {CLIENT}): neither a client secret nor \
                 an OIDC exchange is configured, and AZURE_FEDERATED_TOKEN_FILE is not set (Azure \
                 workload identity)"
            )
        );

        let err = EntraToken::new(
            CLIENT,
            "../evil",
            None,
            None,
            Path::new("/"),
            &env(&[(FEDERATED_TOKEN_FILE_VAR, "/t")]),
        )
        .unwrap_err();
        assert_eq!(problem(&err), &AzureConfigError::BadTenantId);
        assert!(err.to_string().contains("tenant ID"), "{err}");

        let err = EntraToken::new(" ", TENANT, None, None, Path::new("/"), &env(&[])).unwrap_err();
        assert_eq!(problem(&err), &AzureConfigError::EmptyClientId);
        assert!(err.to_string().ends_with("the client ID is empty"), "{err}");

        let secret = Path::new("/nonexistent/aigw/client-secret");
        let exchange = unused_oidc();
        let err = entra_token(Some(secret), Some(&exchange), Path::new("/"), &[]).unwrap_err();
        assert_eq!(problem(&err), &AzureConfigError::SecretAndOidc);
        assert!(err.to_string().ends_with("not both"), "{err}");

        let err = entra_token(Some(secret), None, Path::new("/"), &[]).unwrap_err();
        assert!(
            matches!(
                problem(&err),
                AzureConfigError::SecretFile(SecretFileError::Unreadable { .. })
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("/nonexistent/aigw/client-secret"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn errors_name_the_endpoint_and_status_but_no_secret() {
        let entra = Server::start(&[(
            TOKEN_PATH,
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
        )])
        .await;
        let dir = TempDir::new("azure-error");
        let secret = dir.write("client-secret", "very-secret-value-123");
        let source = with_secret(&secret, dir.path(), &entra.base);
        let err = source.fetch().await.unwrap_err();
        assert!(err.contains(TOKEN_PATH), "{err}");
        assert!(err.contains("401"), "{err}");
        assert!(err.contains(&format!("{}/", entra.base)), "{err}");
        assert!(!err.contains("very-secret-value-123"), "{err}");

        // Assertions are not echoed either.
        let file = dir.write("token", "assertion-jwt-value-456");
        let source = workload_identity(&file, dir.path(), &entra.base);
        let err = source.fetch().await.unwrap_err();
        assert!(err.contains("401"), "{err}");
        assert!(!err.contains("assertion-jwt-value-456"), "{err}");

        // An answer without a token is an error, too.
        let empty = Server::start(&[(TOKEN_PATH, 200, r#"{"token_type":"Bearer"}"#)]).await;
        let source = with_secret(&secret, dir.path(), &empty.base);
        let err = source.fetch().await.unwrap_err();
        assert!(err.contains("no access_token"), "{err}");
        assert!(!err.contains("very-secret-value-123"), "{err}");
    }

    #[test]
    fn expiry_comes_from_expires_in_or_expires_on() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let json = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        assert_eq!(
            expiry(&json(r#"{"expires_in":3599}"#), now),
            Some(now + Duration::from_secs(3599))
        );
        assert_eq!(
            expiry(&json(r#"{"expires_in":"3600"}"#), now),
            Some(now + Duration::from_secs(3600))
        );
        assert_eq!(
            expiry(&json(r#"{"expires_on":1700003600}"#), now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_003_600))
        );
        assert_eq!(
            expiry(&json(r#"{"expires_on":"1700003600"}"#), now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_003_600))
        );
        assert_eq!(
            expiry(
                &json(r#"{"expires_in":"soon","expires_on":"1700000100"}"#),
                now
            ),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100))
        );
        assert_eq!(expiry(&json(r#"{"expires_in":-5}"#), now), None);
        assert_eq!(expiry(&json(r#"{}"#), now), None);
    }
}
