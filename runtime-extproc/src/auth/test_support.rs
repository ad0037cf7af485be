//! Test support of the credential flows: a local HTTP/1.1 server answering canned responses
//! and capturing the requests, temporary directories, fixtures, fixed environments and the
//! configuration values the token-flow tests of [`super::aws`], [`super::azure`] and
//! [`super::gcp`] share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aigw_filterconfig::OidcExchange;

use super::refresh::Fetched;
use crate::redact::Secret;

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

    /// The body of a POST of a form (asserted), as a form.
    pub(crate) fn posted_form(&self) -> HashMap<String, String> {
        assert_eq!(self.method, "POST");
        assert_eq!(
            self.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        self.form()
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

/// Whether `at` is within 30 seconds of `expected`.
fn close_to(at: Option<SystemTime>, expected: SystemTime) -> bool {
    let Some(at) = at else { return false };
    let diff = at.duration_since(expected).unwrap_or_else(|e| e.duration());
    diff < Duration::from_secs(30)
}

/// Asserts that `fetched` is `token` and expires about `lifetime` seconds from now.
pub(crate) fn assert_token(fetched: &Fetched<Secret>, token: &str, lifetime: u64) {
    assert_eq!(fetched.value.expose(), token);
    let expected = SystemTime::now() + Duration::from_secs(lifetime);
    assert!(
        close_to(fetched.expires_at, expected),
        "{token} expires at {:?}, not in {lifetime} s",
        fetched.expires_at
    );
}

/// Asserts the `expected` fields of `form` (it may hold others too).
pub(crate) fn assert_fields(form: &HashMap<String, String>, expected: &[(&str, &str)]) {
    for (field, value) in expected {
        assert_eq!(
            form.get(*field).map(String::as_str),
            Some(*value),
            "{field} of {form:?}"
        );
    }
}

/// The client secret [`oidc_exchange`] writes for the identity provider.
pub(crate) const IDP_SECRET: &str = "idp-client-secret-value";

/// An OIDC exchange with the identity provider `idp` (token endpoint `/idp/token`), client
/// `aigw-extproc` with the secret [`IDP_SECRET`] written to `dir`, asking for `scope`.
pub(crate) fn oidc_exchange(idp: &Server, dir: &TempDir, scope: &str) -> OidcExchange {
    dir.write("idp-secret", &format!("{IDP_SECRET}\n"));
    OidcExchange {
        issuer: idp.base.clone(),
        token_endpoint: Some(idp.url("/idp/token")),
        client_id: "aigw-extproc".to_string(),
        client_secret_file: "idp-secret".to_string(),
        scopes: vec![scope.to_string()],
        grant_type: None,
        aud: None,
    }
}

/// An OIDC exchange that the test never contacts.
pub(crate) fn unused_oidc() -> OidcExchange {
    OidcExchange {
        issuer: "https://idp.example".to_string(),
        token_endpoint: None,
        client_id: "c".to_string(),
        client_secret_file: "s".to_string(),
        scopes: Vec::new(),
        grant_type: None,
        aud: None,
    }
}
