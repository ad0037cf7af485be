use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::answer::parse_time;
use super::*;
use crate::auth::http::FetchError;
use crate::auth::oidc::SecretFileError;
use crate::auth::test_support::{
    IDP_SECRET, Server, TempDir, assert_fields, env, fixture, oidc_exchange,
};

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

/// Asserts that `fetched` are the temporary credentials `key_id` with `session_token`, which
/// (like the fixtures' answers) expire at [`FAR_EXPIRY`].
fn assert_temporary(fetched: &Fetched<AwsCredentials>, key_id: &str, session_token: &str) {
    assert_eq!(fetched.value.access_key_id, key_id);
    assert_eq!(
        fetched.value.session_token.as_ref().map(Secret::expose),
        Some(session_token)
    );
    assert_eq!(fetched.expires_at, far_expiry());
}

/// Writes the web identity token `content` to `dir` and returns its path.
fn token_file(dir: &TempDir, content: &str) -> String {
    dir.write("token", content).display().to_string()
}

/// A signer for `region` with neither a credentials file nor an OIDC exchange: the
/// environment `vars` and the default chain.
fn env_signer(region: &str, base: &Path, vars: &[(&str, &str)]) -> Result<Signer, CredentialError> {
    Signer::build(region, None, None, None, base, lookup(vars))
}

/// A signer of `profile` in the credentials file `file`.
fn file_signer(file: &Path, profile: Option<&str>, base: &Path) -> Result<Signer, CredentialError> {
    Signer::build("us-east-1", Some(file), profile, None, base, lookup(&[]))
}

/// `signer`'s headers for a Converse call to the Bedrock runtime in us-east-1.
fn converse(signer: &Signer) -> Applied {
    signer
        .sign(&call(
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/m/converse",
            b"{}",
        ))
        .unwrap()
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
    let sign = |region: &str, path: &str, body: &[u8], time: SystemTime| {
        sign_at(&keys(None), region, &call(host, path, body), time).unwrap()
    };
    let base = sign("us-east-1", "/model/a:0/converse", b"{}", time);
    let later = time + Duration::from_secs(1);
    for (region, path, body, time) in [
        ("us-east-1", "/model/a%3A0/converse", &b"{}"[..], time),
        ("us-east-1", "/model/a:0/converse", b"{ }", time),
        ("us-west-2", "/model/a:0/converse", b"{}", time),
        ("us-east-1", "/model/a:0/converse", b"{}", later),
    ] {
        let variant = sign(region, path, body, time);
        assert_ne!(
            variant.headers[0], base.headers[0],
            "{region} {path} {body:?} {time:?}"
        );
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
    let signer = env_signer(
        "us-west-2",
        Path::new("/"),
        &[
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
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
    assert!(matches!(
        err,
        CredentialsFileError::MissingKey {
            key: "aws_secret_access_key",
            ..
        }
    ));
    let err = err.to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(
        err.contains("profile incomplete has no aws_secret_access_key"),
        "{err}"
    );
    assert!(!err.contains("AKIAINCOMPLETE"), "{err}");

    let err = read_credentials_file(&file, "missing").unwrap_err();
    assert!(matches!(err, CredentialsFileError::NoProfile { .. }));
    let err = err.to_string();
    assert!(err.ends_with("profile missing not found"), "{err}");

    let err = read_credentials_file(&dir.path().join("absent"), "default")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read AWS credentials file"), "{err}");

    let broken = dir.write(
        "broken",
        "[default]\naws_access_key_id = AKIA\nwJalrXUtnFEMI-secret-on-its-own\n",
    );
    let err = read_credentials_file(&broken, "default").unwrap_err();
    assert!(matches!(
        err,
        CredentialsFileError::Syntax {
            syntax: IniError::NotKeyValue(3),
            ..
        }
    ));
    let err = err.to_string();
    assert!(err.contains("line 3 is not `key = value`"), "{err}");
    assert!(!err.contains("wJalrXUtnFEMI"), "{err}");

    let orphan = dir.write("orphan", "aws_access_key_id = AKIA\n[default]\n");
    let err = read_credentials_file(&orphan, "default")
        .unwrap_err()
        .to_string();
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
        let signer = file_signer(&file, profile, dir.path()).unwrap();
        assert!(signer.ready(Duration::from_millis(1)).await);
        let applied = converse(&signer);
        assert!(
            applied.headers[0]
                .1
                .starts_with(&format!("AWS4-HMAC-SHA256 Credential={key_id}/")),
            "{:?}",
            applied.headers
        );
        assert_eq!(applied.headers.len(), if profile.is_some() { 3 } else { 2 });
    }
    let err = file_signer(&file, Some("nope"), dir.path()).unwrap_err();
    assert!(
        matches!(&err, CredentialError::CredentialsFile(CredentialsFileError::NoProfile { profile, .. }) if profile == "nope"),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("profile nope not found"), "{err}");
}

#[test]
fn environment_keys_need_no_runtime() {
    let signer = env_signer(
        "us-east-1",
        Path::new("/"),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
        ],
    )
    .unwrap();
    let applied = signer
        .sign(&call("bedrock-runtime.us-east-1.amazonaws.com", "/", b""))
        .unwrap();
    assert!(applied.headers[0].1.contains("Credential=AKIAENV/"));
    assert_eq!(applied.headers[2].1, "env-token");

    let err = env_signer(
        "us-east-1",
        Path::new("/"),
        &[("AWS_ACCESS_KEY_ID", "AKIAENV")],
    )
    .unwrap_err();
    assert_eq!(
        err,
        CredentialError::Aws(AwsError::HalfSet {
            set: "AWS_ACCESS_KEY_ID",
            unset: "AWS_SECRET_ACCESS_KEY"
        })
    );
    let err = err.to_string();
    assert!(err.contains("AWS_SECRET_ACCESS_KEY is not"), "{err}");
}

// ---- answers

#[test]
fn answers_are_read_from_xml_and_json() {
    let what = "test";
    let xml = credentials_in(sts_answer("ASIASTS").as_bytes(), what).unwrap();
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
    let json = credentials_in(json.as_bytes(), what).unwrap();
    assert_temporary(&json, "ASIAJSON", "json-token");

    let err = credentials_in(
        b"<Credentials><AccessKeyId>A</AccessKeyId></Credentials>",
        what,
    )
    .unwrap_err();
    assert_eq!(
        err,
        CredentialError::Aws(AwsError::Answer {
            what: what.into(),
            problem: AnswerError::Missing("SecretAccessKey")
        })
    );
    assert_eq!(
        err.to_string(),
        "test: the answer carries no SecretAccessKey"
    );
    let err = credentials_in(br#"{"Code":"Failed","AccessKeyId":"A"}"#, what).unwrap_err();
    assert_eq!(err.to_string(), "test: the answer's Code is Failed");
    for (answer, problem) in [
        (&b"\xff"[..], AnswerError::NotText),
        (b"{\"Code\":", AnswerError::NotJson(String::new())),
        (b"{\"Code\":\"Success\"}", AnswerError::Missing("AccessKeyId")),
        (br#"{"Code":"Failed","AccessKeyId":"A"}"#, AnswerError::Code("Failed".into())),
        (
            b"<AccessKeyId>A</AccessKeyId><SecretAccessKey>S</SecretAccessKey><Expiration>soon</Expiration>",
            AnswerError::Expiration("soon".into()),
        ),
    ] {
        let found = Answer::parse(answer).and_then(Answer::into_credentials);
        let Err(found) = found else {
            panic!("{answer:?} is read");
        };
        match (&found, &problem) {
            (AnswerError::NotJson(_), AnswerError::NotJson(_)) => {}
            _ => assert_eq!(found, problem, "{answer:?}"),
        }
    }
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
    let token_path = token_file(&dir, "eyJhbGciOiJSUzI1NiJ9.first-token.sig\n");
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
    assert_eq!(request.header("authorization"), None);
    let form = request.posted_form();
    assert_fields(
        &form,
        &[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", ROLE),
            ("RoleSessionName", "extproc-session"),
            ("WebIdentityToken", "eyJhbGciOiJSUzI1NiJ9.first-token.sig"),
        ],
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
    let token_path = token_file(&dir, "secret-web-identity-token");
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
async fn chain_errors_are_typed() {
    let sts = Server::start(&[("/", 403, r#"{"Error":{"Code":"AccessDenied"}}"#)]).await;
    let dir = TempDir::new("aws-chain-errors");
    let token = token_file(&dir, "web-identity-token");
    let missing = dir.path().join("missing").display().to_string();
    let resolve = |vars: &[(&str, &str)]| {
        let chain = chain(vars);
        async move { chain.resolve().await.unwrap_err() }
    };

    let err = resolve(&[("AWS_WEB_IDENTITY_TOKEN_FILE", &token)]).await;
    assert_eq!(
        err,
        CredentialError::Aws(AwsError::HalfSet {
            set: "AWS_WEB_IDENTITY_TOKEN_FILE",
            unset: "AWS_ROLE_ARN"
        })
    );
    let err = resolve(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", &missing),
        ("AWS_ROLE_ARN", ROLE),
    ])
    .await;
    assert!(
        matches!(
            &err,
            CredentialError::Aws(AwsError::WebIdentityToken(SecretFileError::Unreadable { path, .. })) if *path == missing
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("web identity token: cannot read "),
        "{err}"
    );
    let err = resolve(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", &token),
        ("AWS_ROLE_ARN", ROLE),
        ("AWS_ENDPOINT_URL_STS", &sts.base),
    ])
    .await;
    assert!(
        matches!(
            &err,
            CredentialError::Fetch(FetchError::Status { status: 403, .. })
        ),
        "{err:?}"
    );

    let err = resolve(&[(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://credentials.example.com/v1/credentials",
    )])
    .await;
    assert_eq!(
        err,
        CredentialError::Aws(AwsError::UntrustedContainerHost {
            host: "credentials.example.com".into()
        })
    );
    let err = resolve(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "not a url")]).await;
    assert!(
        matches!(&err, CredentialError::Aws(AwsError::ContainerUrl(_))),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("container credentials: the endpoint is not a URL: "),
        "{err}"
    );
    let err = resolve(&[
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://127.0.0.1:1/creds",
        ),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &missing),
    ])
    .await;
    assert!(
        matches!(&err, CredentialError::Aws(AwsError::ContainerToken(_))),
        "{err:?}"
    );

    let err = resolve(&[("HOME", &missing), ("AWS_EC2_METADATA_DISABLED", "true")]).await;
    let CredentialError::Aws(AwsError::NotFound { skipped }) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(skipped.len(), 5, "{skipped:?}");
    assert_eq!(skipped[4], "AWS_EC2_METADATA_DISABLED is true");
}

#[tokio::test]
async fn container_credentials_send_the_authorization_token() {
    let answer = r#"{"AccessKeyId":"ASIAPODIDENTITY","SecretAccessKey":"pod-secret","Token":"pod-session-token","AccountId":"123456789012","Expiration":"2099-01-01T00:00:00Z"}"#;
    let agent = Server::start(&[("/v1/credentials", 200, answer)]).await;
    let dir = TempDir::new("aws-pod-identity");
    let token_path = dir
        .write("eks-pod-identity-token", "pod-identity-jwt\n")
        .display()
        .to_string();
    let full_uri = agent.url("/v1/credentials");
    let fetched = chain(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full_uri),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_path),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ignored-literal"),
    ])
    .fetch()
    .await
    .unwrap();
    assert_temporary(&fetched, "ASIAPODIDENTITY", "pod-session-token");
    assert_eq!(fetched.value.secret_access_key.expose(), "pod-secret");
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
    assert_temporary(&fetched, "ASIAIMDSEXAMPLE", "imds-session-token");

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
    let token = token_file(&dir, "web-identity-token");
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
    let token = token_file(&dir, "web-identity-token");
    let signer = env_signer(
        "us-east-1",
        dir.path(),
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token),
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_ENDPOINT_URL_STS", &server.base),
        ],
    )
    .unwrap();
    assert!(signer.ready(Duration::from_secs(10)).await);
    let applied = converse(&signer);
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
    let exchange = AwsOidcExchange {
        oidc: oidc_exchange(&server, &dir, "sts"),
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
    let applied = converse(&signer);
    assert!(applied.headers[0].1.contains("Credential=ASIAOIDC/"));

    let idp = server.one("/idp/token").form();
    assert_eq!(idp["grant_type"], "client_credentials");
    assert_eq!(idp["client_secret"], IDP_SECRET);
    let sts = server.one("/sts").form();
    assert_fields(
        &sts,
        &[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("RoleArn", ROLE),
            ("WebIdentityToken", "idp-access-token"),
        ],
    );
}
