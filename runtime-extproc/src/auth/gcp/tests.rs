use std::time::Duration;

use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

use super::*;
use crate::auth::test_support::{
    IDP_SECRET, Server, TempDir, assert_fields, assert_token, env, fixture, oidc_exchange,
    unused_oidc,
};

const STS_PATH: &str = "/v1/token";
const IDP_PATH: &str = "/idp/token";

fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn write_json(dir: &TempDir, name: &str, doc: &Value) -> PathBuf {
    dir.write(name, &serde_json::to_string_pretty(doc).unwrap())
}

fn decode_segment(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

/// Federation of the pool `aigw-pool` of `pool-project` ([`AUDIENCE`]) with `oidc`.
fn pool_federation(
    oidc: OidcExchange,
    service_account: Option<&str>,
) -> GcpWorkloadIdentityFederation {
    GcpWorkloadIdentityFederation {
        project_id: "pool-project".to_string(),
        workload_identity_pool_name: "aigw-pool".to_string(),
        workload_identity_provider_name: "aigw-provider".to_string(),
        service_account_name: service_account.map(str::to_string),
        oidc,
    }
}

/// [`pool_federation`] with the identity provider `idp`.
fn wif_config(
    idp: &Server,
    dir: &TempDir,
    service_account: Option<&str>,
) -> GcpWorkloadIdentityFederation {
    pool_federation(oidc_exchange(idp, dir, "openid"), service_account)
}

/// An `external_account` key file: `subject_token_type` tokens from `credential_source`,
/// exchanged for `audience` at `token_url`.
fn external_account(
    audience: &str,
    subject_token_type: &str,
    token_url: String,
    credential_source: Value,
) -> Value {
    json!({
        "type": "external_account",
        "audience": audience,
        "subject_token_type": subject_token_type,
        "token_url": token_url,
        "credential_source": credential_source,
    })
}

/// The token source of the key file `file`.
fn key_source(file: &Path, dir: &TempDir) -> GcpToken {
    GcpToken::new(Some(file), None, dir.path(), None, &env(&[])).unwrap()
}

/// The application default token source with `GOOGLE_APPLICATION_CREDENTIALS` naming `file`.
fn application_default_source(file: &Path, dir: &TempDir) -> Result<GcpToken, CredentialError> {
    let var = file.display().to_string();
    GcpToken::new(
        None,
        None,
        dir.path(),
        None,
        &env(&[(CREDENTIALS_VAR, &var)]),
    )
}

/// The token source of `wif`, with the environment `vars`.
fn wif_source(
    wif: &GcpWorkloadIdentityFederation,
    dir: &TempDir,
    vars: &[(&str, &str)],
) -> GcpToken {
    GcpToken::new(None, Some(wif), dir.path(), None, &env(vars)).unwrap()
}

/// A token endpoint `/token` answering `answer`, and the key file fixture of `kind` naming it
/// as `token_uri`, written to `dir` as `name`.
async fn key_file_for_token_endpoint(
    dir: &TempDir,
    answer: &str,
    kind: &str,
    name: &str,
) -> (Server, PathBuf) {
    let oauth = Server::start(&[("/token", 200, answer)]).await;
    let (_, file) = key_file(dir, kind, name, oauth.url("/token"));
    (oauth, file)
}

/// The key file fixture of `kind` (`gcp/<kind>.json`) with `token_uri`, written to `dir` as
/// `name`.
fn key_file(dir: &TempDir, kind: &str, name: &str, token_uri: String) -> (Value, PathBuf) {
    let mut doc = json_fixture(&format!("gcp/{kind}.json"));
    doc["token_uri"] = token_uri.into();
    let file = write_json(dir, name, &doc);
    (doc, file)
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
    let dir = TempDir::new("gcp-sa");
    let (oauth, file) = key_file_for_token_endpoint(
        &dir,
        r#"{"access_token":"ya29.sa-token","expires_in":3599,"token_type":"Bearer"}"#,
        "service_account",
        "service_account.json",
    )
    .await;

    let source = key_source(&file, &dir);
    let before = unix_now();
    let fetched = source.fetch().await.unwrap();
    assert_token(&fetched, "ya29.sa-token", 3599);

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
    let (mut doc, file) = key_file(&dir, "service_account", "key.json", first.url("/token"));
    let source = key_source(&file, &dir);
    assert_eq!(source.fetch().await.unwrap().value.expose(), "one");
    doc["token_uri"] = second.url("/token").into();
    write_json(&dir, "key.json", &doc);
    assert_eq!(source.fetch().await.unwrap().value.expose(), "two");
}

#[tokio::test]
async fn authorized_user_flow_uses_the_refresh_token() {
    let dir = TempDir::new("gcp-user");
    let answer = r#"{"access_token":"ya29.user-token","expires_in":"3599","scope":"https://www.googleapis.com/auth/cloud-platform"}"#;
    let (oauth, file) =
        key_file_for_token_endpoint(&dir, answer, "authorized_user", "adc.json").await;
    // Found through GOOGLE_APPLICATION_CREDENTIALS.
    let source = application_default_source(&file, &dir).unwrap();
    assert!(matches!(&source.source, Source::KeyFile(f) if *f == file));

    let fetched = source.fetch().await.unwrap();
    assert_token(&fetched, "ya29.user-token", 3599);
    let form = oauth.one("/token").form();
    assert_fields(
        &form,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "764086051850-test.apps.googleusercontent.com"),
            ("client_secret", "test-client-secret-not-real"),
            ("refresh_token", "1//test-refresh-token-not-real"),
        ],
    );
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

    let source = key_source(&file, &dir);
    let fetched = source.fetch().await.unwrap();
    assert_eq!(fetched.value.expose(), "ya29.impersonated");
    assert_eq!(fetched.expires_at, parse_rfc3339("2099-01-02T03:04:05Z"));

    let form = google.one(STS_PATH).form();
    assert_fields(
        &form,
        &[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            (
                "audience",
                "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/test-pool/providers/test-provider",
            ),
            ("scope", SCOPE),
            ("requested_token_type", TOKEN_TYPE_ACCESS_TOKEN),
            ("subject_token", "projected-subject-token-not-real"),
            ("subject_token_type", TOKEN_TYPE_JWT),
        ],
    );

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
    let mut doc = external_account(
        "//iam.googleapis.com/locations/global/workforcePools/wf/providers/p",
        "urn:ietf:params:oauth:token-type:id_token",
        google.url(STS_PATH),
        json!({"url": google.url("/subject"), "headers": {"x-flavor": "test"}}),
    );
    doc["workforce_pool_user_project"] = "billing-project".into();
    let file = write_json(&dir, "external.json", &doc);
    let source = key_source(&file, &dir);
    let fetched = source.fetch().await.unwrap();
    assert_token(&fetched, "federated-direct", 3000);
    assert_eq!(google.one("/subject").header("x-flavor"), Some("test"));
    let form = google.one(STS_PATH).form();
    assert_fields(
        &form,
        &[
            ("subject_token", "url-subject-token"),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
            ("options", r#"{"userProject":"billing-project"}"#),
        ],
    );
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
    let source = wif_source(&wif, &dir, &[(STS_ENDPOINT_VAR, &endpoint)]);
    let fetched = source.fetch().await.unwrap();
    assert_token(&fetched, "federated-wif", 3600);

    let idp_form = idp.one(IDP_PATH).form();
    assert_eq!(idp_form["grant_type"], "client_credentials");
    assert_eq!(idp_form["client_secret"], IDP_SECRET);

    let form = sts.one(STS_PATH).form();
    assert_fields(
        &form,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", AUDIENCE),
            ("scope", SCOPE),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("subject_token", "oidc-subject-jwt"),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ],
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
    let source = wif_source(
        &wif,
        &dir,
        &[
            (STS_ENDPOINT_VAR, &endpoint),
            (IAM_CREDENTIALS_ENDPOINT_VAR, &iam),
        ],
    );
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
    let wif = |name: &str| pool_federation(unused_oidc(), Some(name));
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
    assert_token(&fetched, "ya29.metadata", 1799);
    let request = metadata.one(path);
    assert_eq!(request.method, "GET");
    assert_eq!(request.header("metadata-flavor"), Some("Google"));
    assert_eq!(request.query()["scopes"], SCOPE);
}

#[test]
fn application_default_falls_back_to_the_metadata_server() {
    let source = GcpToken::new(None, None, Path::new("/"), None, &env(&[])).unwrap();
    assert!(matches!(&source.source, Source::Metadata(host) if host == "metadata.google.internal"));

    // gcloud's well-known file comes before the metadata server.
    let dir = TempDir::new("gcp-gcloud");
    std::fs::create_dir_all(dir.path().join(".config/gcloud")).unwrap();
    let file = dir.write(
        ".config/gcloud/application_default_credentials.json",
        &fixture("gcp/authorized_user.json"),
    );
    let home = dir.path().display().to_string();
    let source = GcpToken::new(None, None, Path::new("/"), None, &env(&[("HOME", &home)])).unwrap();
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
    assert!(
        matches!(
            &err,
            CredentialError::KeyFile(KeyFileError::Unreadable { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.json"), "{err}");

    let file = dir.write(
        "impersonated.json",
        r#"{"type":"impersonated_service_account"}"#,
    );
    let err = GcpToken::new(Some(&file), None, dir.path(), None, &env(&[])).unwrap_err();
    assert!(
        matches!(&err, CredentialError::KeyFile(KeyFileError::UnsupportedType { kind, .. }) if kind == "impersonated_service_account"),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("impersonated_service_account"), "{err}");
    assert!(err.contains("impersonated.json"), "{err}");

    // The same file, named by GOOGLE_APPLICATION_CREDENTIALS.
    let var = file.display().to_string();
    let err = application_default_source(&file, &dir).unwrap_err();
    assert!(
        matches!(
            &err,
            CredentialError::Gcp(GcpError::ApplicationCredentials(
                KeyFileError::UnsupportedType { .. }
            ))
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("GOOGLE_APPLICATION_CREDENTIALS: {var}: ")),
        "{err}"
    );

    let key = dir.write("key.json", &fixture("gcp/service_account.json"));
    let idp = pool_federation(unused_oidc(), None);
    let err = GcpToken::new(Some(&key), Some(&idp), dir.path(), None, &env(&[])).unwrap_err();
    assert_eq!(err, CredentialError::Gcp(GcpError::FileAndFederation));
    assert!(err.to_string().contains("not both"), "{err}");

    let mut bad = pool_federation(unused_oidc(), None);
    bad.workload_identity_provider_name = "a/b".into();
    let err = GcpToken::new(None, Some(&bad), dir.path(), None, &env(&[])).unwrap_err();
    assert_eq!(
        err,
        CredentialError::Gcp(GcpError::InvalidName {
            field: "workloadIdentityProviderName",
            value: "a/b".into()
        })
    );
    assert_eq!(
        err.to_string(),
        r#"GCP workload identity federation: workloadIdentityProviderName "a/b" is not a valid name"#
    );
    let bad = pool_federation(unused_oidc(), Some("sa name"));
    let err = GcpToken::new(None, Some(&bad), dir.path(), None, &env(&[])).unwrap_err();
    assert_eq!(
        err,
        CredentialError::Gcp(GcpError::InvalidServiceAccount {
            email: "sa name@pool-project.iam.gserviceaccount.com".into()
        })
    );
}

#[test]
fn malformed_keys_do_not_sign() {
    let header = json!({"alg": "RS256"});
    for pem in [
        "no PEM at all",
        "-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5\n-----END PRIVATE KEY-----\n",
    ] {
        assert_eq!(
            sign_rs256(&header, &json!({}), pem),
            Err(SignError::BadKey),
            "{pem}"
        );
    }
}

#[tokio::test]
async fn subject_token_faults_are_typed() {
    let dir = TempDir::new("gcp-subject-faults");
    let key = dir.path().join("external.json");
    let file = key.display().to_string();
    let empty = dir.write("empty", " \n").display().to_string();
    let text = dir.write("text", "not json").display().to_string();
    let missing = dir.path().join("missing").display().to_string();
    for (source, expected) in [
        (
            json!({}),
            SubjectTokenError::NoSource { file: file.clone() },
        ),
        (
            json!({"file": empty}),
            SubjectTokenError::Empty {
                origin: empty.clone(),
            },
        ),
        (
            json!({"file": text, "format": {"type": "json"}}),
            SubjectTokenError::NoFieldName { file: file.clone() },
        ),
        (
            json!({"file": text, "format": {"type": "json", "subject_token_field_name": "t"}}),
            SubjectTokenError::NotJson {
                origin: text.clone(),
            },
        ),
        (
            json!({"file": text, "format": {"type": "xml"}}),
            SubjectTokenError::UnsupportedFormat {
                file: file.clone(),
                format: "xml".into(),
            },
        ),
    ] {
        let err = subject_token(&source, &key).await.unwrap_err();
        assert_eq!(
            err,
            CredentialError::Gcp(GcpError::SubjectToken(expected)),
            "{source}"
        );
    }
    let json_file = dir.write("json", r#"{"other":"x"}"#).display().to_string();
    let source =
        json!({"file": json_file, "format": {"type": "json", "subject_token_field_name": "t"}});
    assert_eq!(
        subject_token(&source, &key).await.unwrap_err().to_string(),
        format!("the credential source {json_file} has no t")
    );
    let err = subject_token(&json!({ "file": missing }), &key)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CredentialError::Gcp(GcpError::SubjectToken(SubjectTokenError::Unreadable { path, .. })) if *path == missing),
        "{err:?}"
    );
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
    let (mut doc, file) = key_file(&dir, "service_account", "key.json", failing.url("/token"));
    let err = key_source(&file, &dir).fetch().await.unwrap_err();
    assert!(err.contains("400"), "{err}");
    assert!(err.contains(&failing.url("/token")), "{err}");
    let assertion = failing.one("/token").form()["assertion"].clone();
    assert!(!err.contains(&assertion), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    assert!(!err.contains("eyJ"), "{err}");

    // A malformed key is named without being echoed.
    doc["private_key"] =
        "-----BEGIN PRIVATE KEY-----\nbm90LWEta2V5LXNlY3JldA==\n-----END PRIVATE KEY-----\n".into();
    let file = write_json(&dir, "bad-key.json", &doc);
    let err = key_source(&file, &dir).fetch().await.unwrap_err();
    assert!(
        err.contains("bad-key.json") && err.contains("private_key"),
        "{err}"
    );
    assert!(!err.contains("bm90LWEta2V5LXNlY3JldA"), "{err}");

    // Federation: neither the OIDC token nor the client secret appear.
    let idp = Server::start(&[(IDP_PATH, 200, r#"{"access_token":"oidc-secret-subject"}"#)]).await;
    let wif = wif_config(&idp, &dir, Some("vertex"));
    let endpoint = failing.url(STS_PATH);
    let source = wif_source(&wif, &dir, &[(STS_ENDPOINT_VAR, &endpoint)]);
    let err = source.fetch().await.unwrap_err();
    assert!(err.contains("403") && err.contains(STS_PATH), "{err}");
    assert!(!err.contains("oidc-secret-subject"), "{err}");
    assert!(!err.contains(IDP_SECRET), "{err}");

    // Authorized user: the refresh token and client secret do not appear.
    let (_, file) = key_file(&dir, "authorized_user", "user.json", failing.url("/token"));
    let err = key_source(&file, &dir).fetch().await.unwrap_err();
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
    let audience =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q";
    let doc = external_account(
        audience,
        TOKEN_TYPE_JWT,
        google.url(STS_PATH),
        json!({"url": google.url("/subject")}),
    );
    let file = write_json(&dir, "echo.json", &doc);
    let err = key_source(&file, &dir).fetch().await.unwrap_err();
    assert!(err.contains("400") && err.contains("<redacted>"), "{err}");
    assert!(!err.contains("echoed-subject-token-value"), "{err}");
    // URL queries are not repeated either.
    let doc = external_account(
        audience,
        TOKEN_TYPE_JWT,
        format!("{}?key=token-url-query-secret", google.url("/empty")),
        json!({
            "url": format!("{}?key=source-query-secret", google.url("/not-json")),
            "format": {"type": "json", "subject_token_field_name": "token"},
        }),
    );
    let file = write_json(&dir, "query.json", &doc);
    let err = key_source(&file, &dir).fetch().await.unwrap_err();
    assert!(err.contains("/not-json is not JSON"), "{err}");
    assert!(!err.contains("source-query-secret"), "{err}");
    let err = token_answer(
        &json!({}),
        &format!("{}?key=token-url-query-secret", google.url("/empty")),
    )
    .unwrap_err();
    assert_eq!(
        err,
        CredentialError::Gcp(GcpError::NoAccessToken {
            endpoint: google.url("/empty")
        })
    );
    let err = err.to_string();
    assert!(err.contains("/empty carries no access_token"), "{err}");
    assert!(!err.contains("token-url-query-secret"), "{err}");
}

#[tokio::test]
async fn token_source_starts_a_refreshing_token() {
    let dir = TempDir::new("gcp-refreshing");
    let (_oauth, file) = key_file_for_token_endpoint(
        &dir,
        r#"{"access_token":"served","expires_in":3600}"#,
        "service_account",
        "key.json",
    )
    .await;
    let token = token_source(None, Some(&file), None, dir.path()).unwrap();
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

#[test]
fn key_file_faults_are_typed_and_name_the_file() {
    let dir = TempDir::new("gcp-key-kinds");
    let other = dir.write("other.json", r#"{"type": "impersonated_service_account"}"#);
    assert!(matches!(
        check_key_file(&other),
        Err(KeyFileError::UnsupportedType { kind, .. }) if kind == "impersonated_service_account"
    ));
    let list = dir.write("list.json", "[]");
    assert_eq!(
        read_key_file(&list),
        Err(KeyFileError::NotJson {
            path: list.display().to_string(),
            reason: String::new()
        })
    );
    let doc = serde_json::json!({"type": "service_account", "client_email": " "});
    assert_eq!(
        required(&doc, "client_email", &other),
        Err(KeyFileError::MissingField {
            path: other.display().to_string(),
            field: "client_email".into()
        })
    );
}
