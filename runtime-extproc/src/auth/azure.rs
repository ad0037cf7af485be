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

use super::http;
use super::oidc;
use super::process_env;
use super::refresh::{Fetch, FetchFuture, Fetched, Refreshing};
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

/// The token source of a backend's `AzureCredentials`. `client_id` may be `file:<path>`;
/// `client_secret_file` and `oidc` are exclusive, and with neither the token comes from Azure
/// workload identity (`AZURE_FEDERATED_TOKEN_FILE`). Needs the async runtime.
pub fn token_source(
    client_id: &str,
    tenant_id: &str,
    client_secret_file: Option<&Path>,
    oidc: Option<&OidcExchange>,
    base: &Path,
) -> Result<Arc<Refreshing<Secret>>, String> {
    let source = EntraToken::new(
        client_id,
        tenant_id,
        client_secret_file,
        oidc,
        base,
        &process_env,
    )?;
    Refreshing::start(
        format!("Entra ID token (tenant {tenant_id}, client {client_id})"),
        source,
    )
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
    ) -> Result<EntraToken, String> {
        let context = format!("Azure credentials (tenant {tenant_id}, client {client_id})");
        if client_id.trim().is_empty() {
            return Err(format!("{context}: the client ID is empty"));
        }
        if tenant_id.is_empty()
            || !tenant_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(format!(
                "{context}: the tenant ID must be a GUID or a domain name"
            ));
        }
        let auth = match (client_secret_file, oidc) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{context}: set a client secret or an OIDC exchange, not both"
                ));
            }
            (Some(file), None) => {
                // Fail the configuration now rather than every fetch later.
                oidc::read_trimmed(file).map_err(|err| format!("{context}: {err}"))?;
                ClientAuth::Secret(file.to_path_buf())
            }
            (None, Some(oidc)) => ClientAuth::Oidc(oidc.clone()),
            (None, None) => match env(FEDERATED_TOKEN_FILE_VAR) {
                Some(file) => ClientAuth::FederatedTokenFile(PathBuf::from(file.trim())),
                None => {
                    return Err(format!(
                        "{context}: neither a client secret nor an OIDC exchange is configured, \
                         and {FEDERATED_TOKEN_FILE_VAR} is not set (Azure workload identity)"
                    ));
                }
            },
        };
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
    async fn request(&self) -> Result<Fetched<Secret>, String> {
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
        let token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                format!(
                    "Entra ID token request: the answer of {} carries no access_token",
                    self.endpoint
                )
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
        Box::pin(self.request())
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

/// A local HTTP/1.1 server answering canned responses and capturing the requests, for the
/// token-flow tests of this module and of [`super::gcp`].
#[cfg(test)]
pub(crate) mod test_server {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A request the server received.
    #[derive(Debug, Clone)]
    pub(crate) struct Captured {
        pub(crate) method: String,
        /// Path and query.
        pub(crate) target: String,
        /// Lower-case names.
        pub(crate) headers: Vec<(String, String)>,
        pub(crate) body: String,
    }

    impl Captured {
        pub(crate) fn path(&self) -> &str {
            self.target.split('?').next().unwrap_or_default()
        }

        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        /// The body as a form.
        pub(crate) fn form(&self) -> HashMap<String, String> {
            decode_form(&self.body)
        }

        /// The query string as a form.
        pub(crate) fn query(&self) -> HashMap<String, String> {
            decode_form(self.target.split_once('?').map(|(_, q)| q).unwrap_or(""))
        }
    }

    fn decode_form(text: &str) -> HashMap<String, String> {
        text.split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }

    type Routes = Arc<Vec<(String, u16, String)>>;

    /// The server; stops when dropped.
    pub(crate) struct Server {
        /// `http://127.0.0.1:<port>`.
        pub(crate) base: String,
        /// `127.0.0.1:<port>`.
        pub(crate) authority: String,
        captured: Arc<Mutex<Vec<Captured>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Server {
        /// Answers a request for `path` (query ignored) with `status` and the JSON `body`;
        /// other paths get 404.
        pub(crate) async fn start(routes: &[(&str, u16, &str)]) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let authority = listener.local_addr().unwrap().to_string();
            let routes: Routes = Arc::new(
                routes
                    .iter()
                    .map(|(p, s, b)| (p.to_string(), *s, b.to_string()))
                    .collect(),
            );
            let captured = Arc::new(Mutex::new(Vec::new()));
            let sink = captured.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(serve(stream, routes.clone(), sink.clone()));
                }
            });
            Server {
                base: format!("http://{authority}"),
                authority,
                captured,
                task,
            }
        }

        /// `base` + `path`.
        pub(crate) fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        /// Every request so far.
        pub(crate) fn requests(&self) -> Vec<Captured> {
            self.captured.lock().unwrap().clone()
        }

        /// The requests for `path`.
        pub(crate) fn requests_to(&self, path: &str) -> Vec<Captured> {
            self.requests()
                .into_iter()
                .filter(|r| r.path() == path)
                .collect()
        }

        /// The only request for `path`.
        pub(crate) fn one(&self, path: &str) -> Captured {
            let mut found = self.requests_to(path);
            assert_eq!(found.len(), 1, "requests to {path}: {:?}", self.requests());
            found.remove(0)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve(mut stream: TcpStream, routes: Routes, sink: Arc<Mutex<Vec<Captured>>>) {
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&data[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_string();
        let target = request_line.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = data[head_end + 4..].to_vec();
        while body.len() < length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        let request = Captured {
            method,
            target,
            headers,
            body: String::from_utf8_lossy(&body).to_string(),
        };
        let (status, answer) = routes
            .iter()
            .find(|(path, _, _)| path == request.path())
            .map(|(_, status, body)| (*status, body.clone()))
            .unwrap_or((404, r#"{"error":"not_found"}"#.to_string()));
        sink.lock().unwrap().push(request);
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    /// A directory removed when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> TempDir {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "aigw-auth-{name}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        /// Writes `name` in the directory and returns its path.
        pub(crate) fn write(&self, name: &str, content: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fixture file of this crate.
    pub(crate) fn fixture(relative: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(relative);
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    /// An environment lookup over fixed variables.
    pub(crate) fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| vars.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::test_server::{Server, TempDir, env, fixture};
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const TOKEN_PATH: &str = "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token";
    const CLIENT: &str = "b0c1d2e3-0000-4000-8000-000000000001";

    fn token_answer(token: &str) -> String {
        format!(
            r#"{{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"{token}"}}"#
        )
    }

    fn close_to(at: Option<SystemTime>, expected: SystemTime) -> bool {
        let Some(at) = at else { return false };
        let diff = at.duration_since(expected).unwrap_or_else(|e| e.duration());
        diff < Duration::from_secs(30)
    }

    fn oidc_exchange(idp: &Server, dir: &TempDir) -> OidcExchange {
        dir.write("idp-secret", "idp-client-secret-value\n");
        OidcExchange {
            issuer: idp.base.clone(),
            token_endpoint: Some(idp.url("/idp/token")),
            client_id: "aigw-extproc".to_string(),
            client_secret_file: "idp-secret".to_string(),
            scopes: vec!["api://AzureADTokenExchange".to_string()],
            grant_type: None,
            aud: None,
        }
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
        assert_eq!(
            fetched.value.expose(),
            "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra-test-access-token.sig"
        );
        assert!(close_to(
            fetched.expires_at,
            SystemTime::now() + Duration::from_secs(3599)
        ));

        let request = entra.one(TOKEN_PATH);
        assert_eq!(request.method, "POST");
        assert_eq!(
            request.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let form = request.form();
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["client_id"], CLIENT);
        assert_eq!(form["client_secret"], "test-entra-client-secret-not-real");
        assert_eq!(
            form["scope"],
            "https://cognitiveservices.azure.com/.default"
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
        let source = EntraToken::new(
            CLIENT,
            TENANT,
            Some(&secret),
            None,
            dir.path(),
            &env(&[(AUTHORITY_HOST_VAR, &entra.base)]),
        )
        .unwrap();
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
        let exchange = oidc_exchange(&idp, &dir);
        let source = EntraToken::new(
            CLIENT,
            TENANT,
            None,
            Some(&exchange),
            dir.path(),
            &env(&[(AUTHORITY_HOST_VAR, &entra.base)]),
        )
        .unwrap();

        let fetched = source.fetch().await.unwrap();
        assert_eq!(fetched.value.expose(), "entra-from-oidc");

        let idp_form = idp.one("/idp/token").form();
        assert_eq!(idp_form["grant_type"], "client_credentials");
        assert_eq!(idp_form["client_id"], "aigw-extproc");
        assert_eq!(idp_form["client_secret"], "idp-client-secret-value");

        let form = entra.one(TOKEN_PATH).form();
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["client_id"], CLIENT);
        assert_eq!(form["scope"], SCOPE);
        assert_eq!(form["client_assertion_type"], ASSERTION_TYPE);
        assert_eq!(form["client_assertion"], "idp-issued-jwt");
        assert!(!form.contains_key("client_secret"));
    }

    #[tokio::test]
    async fn workload_identity_reads_the_federated_token_file_on_every_fetch() {
        let entra = Server::start(&[(TOKEN_PATH, 200, &token_answer("entra-from-wi"))]).await;
        let dir = TempDir::new("azure-wi");
        let jwt = fixture("azure/federated_token.jwt");
        let file = dir.write("token", &jwt);
        let file_var = file.display().to_string();
        let source = EntraToken::new(
            CLIENT,
            TENANT,
            None,
            None,
            dir.path(),
            &env(&[
                (AUTHORITY_HOST_VAR, &entra.base),
                (FEDERATED_TOKEN_FILE_VAR, &file_var),
            ]),
        )
        .unwrap();

        assert_eq!(
            source.fetch().await.unwrap().value.expose(),
            "entra-from-wi"
        );
        let form = entra.one(TOKEN_PATH).form();
        assert_eq!(form["client_assertion_type"], ASSERTION_TYPE);
        assert_eq!(form["client_assertion"], jwt.trim());
        assert_eq!(form["client_id"], CLIENT);
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
        let source = EntraToken::new(
            CLIENT,
            TENANT,
            None,
            None,
            Path::new("/"),
            &env(&[(
                FEDERATED_TOKEN_FILE_VAR,
                "/var/run/secrets/azure/tokens/token",
            )]),
        )
        .unwrap();
        assert_eq!(
            source.endpoint,
            format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
        );
    }

    #[test]
    fn missing_configuration_is_named() {
        let err =
            EntraToken::new(CLIENT, TENANT, None, None, Path::new("/"), &env(&[])).unwrap_err();
        assert!(err.contains("AZURE_FEDERATED_TOKEN_FILE"), "{err}");
        assert!(err.contains(TENANT), "{err}");

        let err = EntraToken::new(
            CLIENT,
            "../evil",
            None,
            None,
            Path::new("/"),
            &env(&[(FEDERATED_TOKEN_FILE_VAR, "/t")]),
        )
        .unwrap_err();
        assert!(err.contains("tenant ID"), "{err}");

        let err = EntraToken::new(
            CLIENT,
            TENANT,
            Some(Path::new("/nonexistent/aigw/client-secret")),
            None,
            Path::new("/"),
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.contains("/nonexistent/aigw/client-secret"), "{err}");
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
        let source = EntraToken::new(
            CLIENT,
            TENANT,
            Some(&secret),
            None,
            dir.path(),
            &env(&[(AUTHORITY_HOST_VAR, &entra.base)]),
        )
        .unwrap();
        let err = source.fetch().await.unwrap_err();
        assert!(err.contains(TOKEN_PATH), "{err}");
        assert!(err.contains("401"), "{err}");
        assert!(err.contains(&format!("{}/", entra.base)), "{err}");
        assert!(!err.contains("very-secret-value-123"), "{err}");

        // Assertions are not echoed either.
        let file = dir.write("token", "assertion-jwt-value-456");
        let file_var = file.display().to_string();
        let source = EntraToken::new(
            CLIENT,
            TENANT,
            None,
            None,
            dir.path(),
            &env(&[
                (AUTHORITY_HOST_VAR, &entra.base),
                (FEDERATED_TOKEN_FILE_VAR, &file_var),
            ]),
        )
        .unwrap();
        let err = source.fetch().await.unwrap_err();
        assert!(err.contains("401"), "{err}");
        assert!(!err.contains("assertion-jwt-value-456"), "{err}");

        // An answer without a token is an error, too.
        let empty = Server::start(&[(TOKEN_PATH, 200, r#"{"token_type":"Bearer"}"#)]).await;
        let source = EntraToken::new(
            CLIENT,
            TENANT,
            Some(&secret),
            None,
            dir.path(),
            &env(&[(AUTHORITY_HOST_VAR, &empty.base)]),
        )
        .unwrap();
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
