"""Where the extproc's upstream credentials come from, through real Envoy and the real extproc:
per-request credentials in client headers (`credentialOverride.fromRequestHeaders`) for an
API key and for AWS SigV4, the AWS default chain with web identity (IRSA) from the process
environment, GCP workload identity federation (OIDC token -> GCP STS -> IAM Credentials
impersonation), and an Entra ID token refreshed before it expires.

Each flow runs in its own gateway (started on first use) with its own extproc environment, so
one failing flow fails only its own tests. The mocks check what they receive the way the
providers do; no planted or issued credential may appear in any log.
"""

import json
import urllib.parse

import openai
import pytest

from crs import aws_profile, credentials, credentials_file, endpoint, gateway_and_route, policy, secret, service_backend
from conftest import http, running, wait_for
from mock_cloud import AZURE_SCOPE, GCP_SCOPE, MockAzureOpenAI, MockBedrock, MockOidcProvider, MockSts, MockVertex
from mock_identity import ACCESS_TOKEN_TYPE, MockGcpSts, MockIamCredentials, MockShortLivedEntra, TOKEN_EXCHANGE, pool_audience
from mock_provider import ANSWER, MockProvider
from test_clouds import CloudGateway, lazy_gateways, leaks_in_logs, only

# gateway -> {client model: (AIServiceBackend, model the provider is asked for)}.
GATEWAYS = {
    "override": {
        "tenant-chat": ("tenant-fallback", "gpt-4o-tenant"),
        "tenant-only": ("tenant-required", "gpt-4o-tenant-only"),
        "bedrock-tenant": ("bedrock-tenant", "amazon.nova-lite-v1:0"),
    },
    "irsa": {"bedrock-irsa": ("bedrock-irsa", "amazon.nova-pro-v1:0")},
    "gcp-wif": {"gemini-wif": ("vertex-wif", "gemini-2.0-flash-001")},
    "refresh": {"azure-refresh": ("azure-refresh", "gpt-4o-refresh")},
}
# client model -> the gateway that serves it
GATEWAY_OF = {model: family for family, models in GATEWAYS.items() for model in models}

REGION = "us-east-1"
PROJECT = "aigw-identity-e2e"
VERTEX_REGION = "us-central1"
POOL = "aigw-e2e-pool"
POOL_PROVIDER = "aigw-e2e-oidc"
SERVICE_ACCOUNT = "vertex-caller"
SERVICE_ACCOUNT_EMAIL = f"{SERVICE_ACCOUNT}@{PROJECT}.iam.gserviceaccount.com"
TENANT = "8a2e4c1d-7f30-4b9a-a5e6-1d0c3b2a9f84"
CLIENT_ID = "3e9b1f7a-2c4d-4e8f-b6a1-e2e000000002"
OIDC_CLIENT_ID = "aigw-identity-e2e-client"
IRSA_ROLE_ARN = "arn:aws:iam::210987654321:role/aigw-e2e-irsa"
IRSA_SESSION = "aigw-e2e-irsa-session"
TOKEN_LIFETIME = 3  # seconds an Entra token of the refresh gateway lives
# The key the client sends the gateway: it must never reach a provider.
CLIENT_KEY = "client-key-identity-never-forwarded"
# Planted credentials: none of them may ever appear in a log.
CONFIGURED_KEY = "sk-e2e-configured-fallback-2d8e4a"
REQUIRED_CONFIGURED_KEY = "sk-e2e-configured-unused-6b1c9f"
TENANT_KEY = "tenant-key-e2e-5c93d1"
CONFIGURED_AWS_KEY_ID = "AKIAE2ECONFIGURED7731"
CONFIGURED_AWS_SECRET = "e2e/Configured+AwsSecret/6e2a90d4c1"
TENANT_AWS_KEY_ID = "ASIAE2ETENANT5512"
TENANT_AWS_SECRET = "e2e/Tenant+AwsSecret/1f7c3b9e05"
TENANT_AWS_SESSION = "IQoJb3JpZ2luX2VjEe2eTenantSession/4a8d+c0ffee=="
IRSA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.irsa-projected-e2e-token.c2lnbmF0dXJlLWUyZQ"
OIDC_CLIENT_SECRET = "oidc-identity-e2e-planted-9e4b27"
CLIENT_SECRET = "entra~e2e.ShortLived-T4m8Rr_secret"


def identity_crs(listener, family, m):
    """The CRs of one gateway: its models, their backends, credentials and Secrets."""

    def secured(name, schema, backend, kind, settings, rest="", version=None):
        """The AIServiceBackend `name` in front of `backend` and its BackendSecurityPolicy `name`
        of type `kind` (see crs.credentials)."""
        return service_backend(name, schema, backend, version) + policy(name, name, credentials(kind, settings, rest))

    def from_headers(settings):
        return f"  credentialOverride:\n    fromRequestHeaders: {settings}\n"

    parts = {
        "override": [
            endpoint("openai", m.openai.port),
            endpoint("bedrock", m.bedrock.port),
            secured("tenant-fallback", "OpenAI", "openai", "APIKey", "    secretRef: {name: configured-key}\n",
                    from_headers("{fallbackToConfigured: true}")),
            secret("configured-key", "apiKey", CONFIGURED_KEY),
            secured("tenant-required", "OpenAI", "openai", "APIKey", "    secretRef: {name: required-configured-key}\n",
                    from_headers("{fallbackToConfigured: false}")),
            secret("required-configured-key", "apiKey", REQUIRED_CONFIGURED_KEY),
            secured("bedrock-tenant", "AWSBedrock", "bedrock", "AWSCredentials",
                    f"    region: {REGION}\n" + credentials_file("configured-aws"), from_headers("{}")),
            secret("configured-aws", "credentials", aws_profile(CONFIGURED_AWS_KEY_ID, CONFIGURED_AWS_SECRET)),
        ],
        # No credentials file and no OIDC exchange: the extproc's default chain.
        "irsa": [
            endpoint("bedrock", m.bedrock.port),
            secured("bedrock-irsa", "AWSBedrock", "bedrock", "AWSCredentials", f"    region: {REGION}\n"),
        ],
        "gcp-wif": [
            endpoint("vertex", m.vertex.port),
            secured("vertex-wif", "GCPVertexAI", "vertex", "GCPCredentials", f"""    projectName: {PROJECT}
    region: {VERTEX_REGION}
    workloadIdentityFederationConfig:
      projectID: {PROJECT}
      workloadIdentityPoolName: {POOL}
      workloadIdentityProviderName: {POOL_PROVIDER}
      oidcExchangeToken:
        oidc:
          provider: {{issuer: '{m.oidc.url}', tokenEndpoint: '{m.oidc.url}/oauth2/token'}}
          clientID: {OIDC_CLIENT_ID}
          clientSecret: {{name: oidc-client}}
          scopes: [aigw-e2e]
      serviceAccountImpersonation:
        serviceAccountName: {SERVICE_ACCOUNT}
"""),
            secret("oidc-client", "client-secret", OIDC_CLIENT_SECRET),
        ],
        "refresh": [
            endpoint("azure", m.azure.port),
            secured("azure-refresh", "AzureOpenAI", "azure", "AzureCredentials",
                    f"    clientID: {CLIENT_ID}\n    tenantID: {TENANT}\n    clientSecretRef: {{name: entra-client}}\n", version="2024-10-21"),
            secret("entra-client", "client-secret", CLIENT_SECRET),
        ],
    }
    return gateway_and_route(listener, "identity", GATEWAYS[family], costs=False) + "".join(parts[family])


class IdentityGateway(CloudGateway):
    """One family's CRs. The extproc's environment has no AWS, Azure, GCP or AIGW variables of
    the host; every token endpoint points at a mock, and the IRSA gateway's extproc gets the web
    identity variables."""

    def __init__(self, workdir, family, mocks):
        super().__init__(workdir, family, mocks, service_accounts=None)

    def write_crs(self, extra_models=()):
        (self.config_dir / "crs.yaml").write_text(identity_crs(self.listener, self.family, self.clouds))

    def extproc_env(self):
        env = super().extproc_env()
        env.update({
            "AIGW_GCP_STS_ENDPOINT": f"{self.clouds.gcp_sts.url}/v1/token",
            "AIGW_GCP_IAM_CREDENTIALS_ENDPOINT": self.clouds.iam.url,
        })
        if self.family == "irsa":
            token_file = self.workdir / "web-identity-token"
            token_file.write_text(IRSA_TOKEN + "\n")
            env.update({
                "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
                "AWS_ROLE_ARN": IRSA_ROLE_ARN,
                "AWS_ROLE_SESSION_NAME": IRSA_SESSION,
                "AWS_ENDPOINT_URL_STS": self.clouds.sts.url,
                "AWS_EC2_METADATA_DISABLED": "true",
            })
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                     "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "GOOGLE_APPLICATION_CREDENTIALS"):
            env.pop(name, None)
        self.env = env
        return env


@pytest.fixture(scope="module")
def mocks():
    oidc = MockOidcProvider(OIDC_CLIENT_ID, OIDC_CLIENT_SECRET)
    bedrock = MockBedrock(REGION, {CONFIGURED_AWS_KEY_ID: (CONFIGURED_AWS_SECRET, None)})
    gcp_sts = MockGcpSts(pool_audience(PROJECT, POOL, POOL_PROVIDER), oidc.tokens)
    iam = MockIamCredentials(SERVICE_ACCOUNT_EMAIL, gcp_sts.tokens)
    entra = MockShortLivedEntra(TENANT, CLIENT_ID, CLIENT_SECRET, lifetime=TOKEN_LIFETIME)
    with running(oidc=oidc, bedrock=bedrock, gcp_sts=gcp_sts, iam=iam, entra=entra,
                 sts=MockSts(IRSA_ROLE_ARN, lambda: {IRSA_TOKEN}, bedrock), vertex=MockVertex(PROJECT, VERTEX_REGION, iam.tokens),
                 azure=MockAzureOpenAI("azure", entra.valid_tokens), openai=MockProvider("tenant")) as m:
        yield m


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, mocks):
    """``gateways(family)`` starts that family's gateway on first use; all stop at the end."""
    with lazy_gateways(lambda family: IdentityGateway(tmp_path_factory.mktemp(family), family, mocks)) as get:
        yield get
    assert credentials_in_logs(get.started, mocks) == []


@pytest.fixture(autouse=True)
def clean(mocks):
    for mock in (mocks.bedrock, mocks.vertex, mocks.azure, mocks.openai):
        mock.clear()


def ask(gateways, model, headers=None):
    gateway = gateways(GATEWAY_OF[model])
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)
    return client.chat.completions.create(model=model, max_tokens=64, extra_headers=headers or {},
                                          messages=[{"role": "user", "content": "say hello to the fox"}])


def assert_aws_signed(received, key_id):
    auth = received.headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={key_id}/"), auth[:60]
    assert f"/{REGION}/bedrock/aws4_request" in auth
    assert CLIENT_KEY not in json.dumps(received.headers)


def no_override_headers(received):
    # x-aigw-authority is the client's Host, which Envoy copies into Host for a Backend with an
    # address (the route's virtual host is found by :authority): no credential.
    return [name for name in received.headers if name.startswith("x-aigw-") and name != "x-aigw-authority"]


# --- The mocks themselves --------------------------------------------------------------------


def test_mock_gcp_sts_and_iam_credentials_check_audience_subject_and_bearer():
    """The federation mocks are sound: only the pool's audience and the IdP's token exchange,
    and only a federated token impersonates, and only the permitted service account."""
    oidc = MockOidcProvider(OIDC_CLIENT_ID, OIDC_CLIENT_SECRET).start()
    sts = MockGcpSts(pool_audience(PROJECT, POOL, POOL_PROVIDER), oidc.tokens).start()
    iam = MockIamCredentials(SERVICE_ACCOUNT_EMAIL, sts.tokens).start()
    status, _, body = http("POST", f"{oidc.url}/oauth2/token",
                           urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": OIDC_CLIENT_ID,
                                                   "client_secret": OIDC_CLIENT_SECRET}).encode(),
                           {"content-type": "application/x-www-form-urlencoded"})
    assert status == 200, body
    subject = json.loads(body)["access_token"]

    def exchange(audience, subject_token):
        form = {"grant_type": TOKEN_EXCHANGE, "audience": audience, "scope": GCP_SCOPE, "requested_token_type": ACCESS_TOKEN_TYPE,
                "subject_token": subject_token, "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"}
        return http("POST", f"{sts.url}/v1/token", urllib.parse.urlencode(form).encode(),
                    {"content-type": "application/x-www-form-urlencoded"})

    def impersonate(email, bearer):
        return http("POST", f"{iam.url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
                    {"scope": [GCP_SCOPE]}, {"authorization": f"Bearer {bearer}"})

    audience = pool_audience(PROJECT, POOL, POOL_PROVIDER)
    assert exchange(pool_audience(PROJECT, POOL, "other-provider"), subject)[0] == 400
    assert exchange(audience, "not-from-the-idp")[0] == 400
    status, _, body = exchange(audience, subject)
    assert status == 200, body
    federated = json.loads(body)["access_token"]
    assert impersonate(SERVICE_ACCOUNT_EMAIL, subject)[0] == 401
    assert impersonate(f"someone-else@{PROJECT}.iam.gserviceaccount.com", federated)[0] == 403
    status, _, body = impersonate(SERVICE_ACCOUNT_EMAIL, federated)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["accessToken"] in iam.tokens() and answer["expireTime"].endswith("Z")
    for mock in (oidc, sts, iam):
        mock.stop()


# --- Per-request API key from a header ------------------------------------------------------------


def test_api_key_from_the_request_header_replaces_the_configured_key(gateways, mocks):
    completion = ask(gateways, "tenant-chat", {"x-aigw-api-key": TENANT_KEY})
    assert completion.choices[0].message.content == ANSWER
    [received] = mocks.openai.received()
    assert received.path == "/v1/chat/completions"
    assert received.json()["model"] == "gpt-4o-tenant"
    assert received.headers["authorization"] == f"Bearer {TENANT_KEY}"
    assert no_override_headers(received) == []
    assert CLIENT_KEY not in json.dumps(received.headers) and CONFIGURED_KEY not in json.dumps(received.headers)


def test_without_the_header_the_configured_key_is_used(gateways, mocks):
    completion = ask(gateways, "tenant-chat")
    assert completion.choices[0].message.content == ANSWER
    [received] = mocks.openai.received()
    assert received.headers["authorization"] == f"Bearer {CONFIGURED_KEY}"
    assert CLIENT_KEY not in json.dumps(received.headers)


def test_a_required_per_request_key_is_401_when_missing_and_never_reaches_the_provider(gateways, mocks):
    with pytest.raises(openai.AuthenticationError) as caught:
        ask(gateways, "tenant-only")
    error = caught.value
    assert error.status_code == 401
    assert error.body["message"] == "missing upstream credential", error.body
    assert error.body["type"] == "authentication_error", error.body
    assert mocks.openai.received() == []
    # An empty header is no credential either.
    with pytest.raises(openai.AuthenticationError):
        ask(gateways, "tenant-only", {"x-aigw-api-key": ""})
    assert mocks.openai.received() == []
    # With the header, the per-request key is used and the configured one never is.
    assert ask(gateways, "tenant-only", {"x-aigw-api-key": TENANT_KEY}).choices[0].message.content == ANSWER
    [received] = mocks.openai.received()
    assert received.json()["model"] == "gpt-4o-tenant-only"
    assert received.headers["authorization"] == f"Bearer {TENANT_KEY}"
    assert no_override_headers(received) == []


# --- Per-request AWS credentials from headers ------------------------------------------------------


def test_aws_credentials_from_request_headers_sign_the_bedrock_request(gateways, mocks):
    mocks.bedrock.allow(TENANT_AWS_KEY_ID, TENANT_AWS_SECRET, TENANT_AWS_SESSION)
    completion = ask(gateways, "bedrock-tenant", {
        "x-aigw-aws-access-key-id": TENANT_AWS_KEY_ID,
        "x-aigw-aws-secret-access-key": TENANT_AWS_SECRET,
        "x-aigw-aws-session-token": TENANT_AWS_SESSION,
    })
    assert completion.choices[0].message.content == ANSWER
    received = only(mocks.bedrock)
    assert received.path == "/model/amazon.nova-lite-v1:0/converse"
    assert_aws_signed(received, TENANT_AWS_KEY_ID)
    assert received.headers["x-amz-security-token"] == TENANT_AWS_SESSION
    assert no_override_headers(received) == []
    assert TENANT_AWS_SECRET not in json.dumps(received.headers)
    # Without the headers, the configured keys sign (fallbackToConfigured defaults to true).
    mocks.bedrock.clear()
    assert ask(gateways, "bedrock-tenant").choices[0].message.content == ANSWER
    received = only(mocks.bedrock)
    assert_aws_signed(received, CONFIGURED_AWS_KEY_ID)
    assert "x-amz-security-token" not in received.headers


def test_an_aws_access_key_id_without_its_secret_is_an_error_and_never_reaches_bedrock(gateways, mocks):
    with pytest.raises(openai.InternalServerError) as caught:
        ask(gateways, "bedrock-tenant", {"x-aigw-aws-access-key-id": TENANT_AWS_KEY_ID})
    error = caught.value
    assert error.status_code == 500
    assert "x-aigw-aws-secret-access-key" in error.body["message"], error.body
    assert TENANT_AWS_KEY_ID not in json.dumps(error.body)
    assert mocks.bedrock.received() == []


# --- AWS default chain: web identity (IRSA) --------------------------------------------------------


def test_the_aws_default_chain_exchanges_the_web_identity_token_file_at_sts(gateways, mocks):
    gateway = gateways("irsa")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert name not in gateway.env
    completion = ask(gateways, "bedrock-irsa")
    assert completion.choices[0].message.content == ANSWER
    exchanges = mocks.sts.received()
    assert exchanges and all(r.problem is None for r in exchanges), [r.problem for r in exchanges]
    form = dict(urllib.parse.parse_qsl(exchanges[-1].body.decode()))
    assert form["Action"] == "AssumeRoleWithWebIdentity"
    assert form["WebIdentityToken"] == IRSA_TOKEN
    assert form["RoleArn"] == IRSA_ROLE_ARN
    assert form["RoleSessionName"] == IRSA_SESSION
    access_key, _, session_token = mocks.sts.issued[-1]
    received = only(mocks.bedrock)
    assert received.path == "/model/amazon.nova-pro-v1:0/converse"
    assert_aws_signed(received, access_key)
    assert received.headers["x-amz-security-token"] == session_token


# --- GCP workload identity federation ---------------------------------------------------------------


def test_gcp_workload_identity_federation_impersonates_the_service_account(gateways, mocks):
    completion = ask(gateways, "gemini-wif")
    assert completion.choices[0].message.content == ANSWER
    received = only(mocks.vertex)
    assert received.path == f"/v1/projects/{PROJECT}/locations/{VERTEX_REGION}/publishers/google/models/gemini-2.0-flash-001:generateContent"
    assert received.headers["authorization"] in {f"Bearer {t}" for t in mocks.iam.tokens()}
    assert not {f"Bearer {t}" for t in mocks.gcp_sts.tokens()} & {received.headers["authorization"]}
    # The chain behind that token: IdP client credentials -> GCP STS -> generateAccessToken.
    idp = [r for r in mocks.oidc.received() if r.method == "POST"]
    assert idp and all(r.problem is None for r in idp), [r.problem for r in idp]
    exchanges = mocks.gcp_sts.received()
    assert exchanges and all(r.problem is None for r in exchanges), [r.problem for r in exchanges]
    form = exchanges[-1].form
    assert form["grant_type"] == TOKEN_EXCHANGE
    assert form["audience"] == f"//iam.googleapis.com/projects/{PROJECT}/locations/global/workloadIdentityPools/{POOL}/providers/{POOL_PROVIDER}"
    assert form["subject_token"] in mocks.oidc.tokens()
    grants = mocks.iam.received()
    assert grants and all(r.problem is None for r in grants), [r.problem for r in grants]
    assert grants[-1].service_account == SERVICE_ACCOUNT_EMAIL
    assert grants[-1].headers["authorization"] in {f"Bearer {t}" for t in mocks.gcp_sts.tokens()}
    assert received.headers["authorization"] == f"Bearer {mocks.iam.issued[-1]}"


# --- A token that expires soon is refreshed -----------------------------------------------------------


def test_an_entra_token_that_expires_soon_is_refreshed(gateways, mocks):
    assert ask(gateways, "azure-refresh").choices[0].message.content == ANSWER
    first = only(mocks.azure)
    assert first.path == "/openai/deployments/gpt-4o-refresh/chat/completions?api-version=2024-10-21"
    first_token = first.headers["authorization"].removeprefix("Bearer ")
    assert first_token in mocks.entra.issued_tokens()
    grants = [r for r in mocks.entra.received() if r.problem is None]
    assert grants and dict(urllib.parse.parse_qsl(grants[0].body.decode()))["scope"] == AZURE_SCOPE

    def issued_after(token):
        tokens = mocks.entra.issued_tokens()
        return tokens[tokens.index(token) + 1:]

    # The token lives TOKEN_LIFETIME seconds: the extproc must fetch another before it expires.
    wait_for(lambda: issued_after(first_token), "Entra to issue a token after the one the first request carried",
             gateways("refresh"), timeout=10)
    mocks.azure.clear()
    assert ask(gateways, "azure-refresh").choices[0].message.content == ANSWER
    second = only(mocks.azure)
    second_token = second.headers["authorization"].removeprefix("Bearer ")
    assert second_token != first_token, "the second request carried the token that was about to expire"
    assert second_token in issued_after(first_token)


# --- Secrecy (last; the fixture teardown checks again after every test) ---------------------------


def credentials_in_logs(started, mocks):
    """Every planted or issued credential found in any log of the started gateways."""
    planted = [CONFIGURED_KEY, REQUIRED_CONFIGURED_KEY, TENANT_KEY, CONFIGURED_AWS_SECRET, TENANT_AWS_SECRET, TENANT_AWS_SESSION,
               IRSA_TOKEN, OIDC_CLIENT_SECRET, CLIENT_SECRET]
    issued = list(mocks.oidc.tokens() | mocks.gcp_sts.tokens() | mocks.iam.tokens() | mocks.entra.tokens())
    issued += [value for _, secret, token in mocks.sts.issued for value in (secret, token)]
    return leaks_in_logs(started, planted + issued)


def test_no_credential_appears_in_any_log(gateways, mocks):
    assert gateways.started, "no gateway ran"
    assert all(gw.log_text("extproc") for gw in gateways.started.values()), "an extproc wrote no log"
    assert credentials_in_logs(gateways.started, mocks) == []
