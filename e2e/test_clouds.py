"""Cloud providers through real Envoy and the real extproc, with credentials the extproc obtains
and applies itself: AWS SigV4 for Bedrock (static keys, and an OIDC token exchanged at STS),
Entra ID tokens for Azure OpenAI (client secret, and a federated OIDC token), GCP OAuth tokens
for Vertex AI from a service-account key; token endpoints that refuse; and the Anthropic
Messages API in front of Bedrock, Vertex AI and an OpenAI backend.

The mocks in mock_cloud.py check signatures and tokens the way the providers do and answer in
their formats. Clients are the openai SDK and, for the Messages API, plain urllib. Each
credential kind runs in its own gateway (started on first use), so one failing flow fails only
its own tests; no credential value may appear in any log.
"""

import base64
import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import openai
import pytest

from crs import aws_profile, credentials, credentials_file, endpoint, gateway_and_route, policy, secret, service_backend
from conftest import AIGW, EXTPROC, Gateway, envoy_bin, free_port, http, running, wait_for
from mock_cloud import (AZURE_SCOPE, BAD_SIGNATURE, GCP_SCOPE, PIECES, MockAzureOpenAI, MockBedrock, MockEntra,
                        MockGoogleOAuth, MockOidcProvider, MockSts, MockVertex, service_account_key, words_in)
from mock_provider import ANSWER, MockProvider

REGION = "us-west-2"
PROJECT = "aigw-e2e-project"
VERTEX_REGION = "europe-west4"
TENANT = "6f1c2a9e-0b5d-4e33-9c7a-3d2b1f0e8a71"
CLIENT_ID = "0c5d7e3a-8f21-4b6c-a9d4-e2e000000001"
OIDC_CLIENT_ID = "aigw-e2e-client"
ROLE_ARN = "arn:aws:iam::123456789012:role/aigw-e2e-bedrock"
# The key the client sends the gateway: it must never reach a provider.
CLIENT_KEY = "client-key-never-forwarded"
# Planted test credentials: none of them may ever appear in a log.
ACCESS_KEY_ID = "AKIAE2EPLANTED48213"
SECRET_ACCESS_KEY = "e2e/Planted+AwsSecretKey/9d1f0b7c2a"
DECOY_KEY_ID = "AKIAE2EDECOY000000"
DECOY_SECRET = "e2e/Decoy+AwsSecretKey/55e0c4a1b3"
WRONG_SECRET = "e2e/Wrong+AwsSecretKey/00aa11bb22"
WRONG_CLIENT_SECRET = "entra~e2e.Wrong-Z1p9Qq_secret"
CLIENT_SECRET = "entra~e2e.Planted-Q8v3Xk_secret"
OIDC_CLIENT_SECRET = "oidc-e2e-planted-77c1d9"
OPENAI_KEY = "sk-e2e-cloud-openai-3b7e51"

# gateway -> {client model: (AIServiceBackend, model the provider is asked for)}. Each gateway
# holds one kind of credential, so that a failing credential flow fails only its own tests.
GATEWAYS = {
    "aws": {
        "bedrock-claude": ("bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0"),
        "bedrock-bad-key": ("bedrock-wrong-key", "amazon.nova-lite-v1:0"),
        "titan-embed": ("bedrock", "amazon.titan-embed-text-v2:0"),
        "bedrock-invoke-claude": ("bedrock-anthropic", "anthropic.claude-3-haiku-20240307-v1:0"),
        "claude-bedrock-messages": ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
    },
    "aws-sts": {"bedrock-sts": ("bedrock-sts", "amazon.nova-pro-v1:0")},
    "gcp": {"gemini": ("vertex-gemini", "gemini-2.0-flash-001"), "vertex-claude": ("vertex-claude", "claude-3-5-haiku@20241022")},
    "azure": {"azure-entra": ("azure-entra", "gpt-4o-prod")},
    "azure-oidc": {"azure-federated": ("azure-federated", "gpt-4o-federated")},
    "openai": {"claude-openai-messages": ("openai", "gpt-4o-mini-2024-07-18")},
    "failing": {"azure-bad-secret": ("azure-bad-secret", "gpt-4o-prod"),
                "gemini-unknown-key": ("vertex-unknown-key", "gemini-2.0-flash-001")},
}
# client model -> the gateway that serves it
GATEWAY_OF = {model: family for family, models in GATEWAYS.items() for model in models}


def cloud_crs(listener, family, c, service_accounts):
    """The CRs of one gateway: its models, their backends, credentials and Secrets."""
    oidc = f"""oidc:
        provider: {{issuer: '{c.oidc.url}', tokenEndpoint: '{c.oidc.url}/oauth2/token'}}
        clientID: {OIDC_CLIENT_ID}
        clientSecret: {{name: oidc-client}}
        scopes: [aigw-e2e]"""

    def aws(settings):
        return credentials("AWSCredentials", f"    region: {REGION}\n{settings}")

    def gcp(secret_name):
        return credentials("GCPCredentials", f"    projectName: {PROJECT}\n    region: {VERTEX_REGION}\n{credentials_file(secret_name)}")

    def entra(settings):
        return credentials("AzureCredentials", f"    clientID: {CLIENT_ID}\n    tenantID: {TENANT}\n{settings}")

    parts = {
        "aws": [
            service_backend("bedrock", "AWSBedrock", "bedrock"),
            service_backend("bedrock-wrong-key", "AWSBedrock", "bedrock"),
            service_backend("bedrock-anthropic", "AWSAnthropic", "bedrock"),
            endpoint("bedrock", c.bedrock.port),
            policy("aws", ["bedrock", "bedrock-anthropic"], aws(credentials_file("aws-credentials", profile="bedrock"))),
            secret("aws-credentials", "credentials",
                   aws_profile(DECOY_KEY_ID, DECOY_SECRET) + "\n" + aws_profile(ACCESS_KEY_ID, SECRET_ACCESS_KEY, "bedrock")),
            policy("aws-wrong-key", ["bedrock-wrong-key"], aws(credentials_file("aws-wrong-credentials"))),
            secret("aws-wrong-credentials", "credentials", aws_profile(ACCESS_KEY_ID, WRONG_SECRET)),
        ],
        "aws-sts": [
            service_backend("bedrock-sts", "AWSBedrock", "bedrock"),
            endpoint("bedrock", c.bedrock.port),
            policy("aws-sts", ["bedrock-sts"], aws(f"    oidcExchangeToken:\n      awsRoleArn: {ROLE_ARN}\n      {oidc}\n")),
            secret("oidc-client", "client-secret", OIDC_CLIENT_SECRET),
        ],
        "gcp": [
            service_backend("vertex-gemini", "GCPVertexAI", "vertex"),
            service_backend("vertex-claude", "GCPAnthropic", "vertex", "vertex-2023-10-16"),
            endpoint("vertex", c.vertex.port),
            policy("gcp", ["vertex-gemini", "vertex-claude"], gcp("gcp-service-account")),
            secret("gcp-service-account", "service_account.json", service_accounts["registered"]),
        ],
        "azure": [
            service_backend("azure-entra", "AzureOpenAI", "azure", "2024-10-21"),
            endpoint("azure", c.azure.port),
            policy("azure-entra", ["azure-entra"], entra("    clientSecretRef: {name: entra-client}\n")),
            secret("entra-client", "client-secret", CLIENT_SECRET),
        ],
        "azure-oidc": [
            service_backend("azure-federated", "AzureOpenAI", "azure", "2024-10-21"),
            endpoint("azure", c.azure.port),
            policy("azure-federated", ["azure-federated"], entra(f"    oidcExchangeToken:\n      {oidc}\n")),
            secret("oidc-client", "client-secret", OIDC_CLIENT_SECRET),
        ],
        # Credentials the token endpoints refuse: a wrong Entra client secret, and a
        # service-account key Google does not know.
        "failing": [
            service_backend("azure-bad-secret", "AzureOpenAI", "azure", "2024-10-21"),
            service_backend("vertex-unknown-key", "GCPVertexAI", "vertex"),
            endpoint("azure", c.azure.port),
            endpoint("vertex", c.vertex.port),
            policy("azure-bad-secret", ["azure-bad-secret"], entra("    clientSecretRef: {name: entra-wrong-client}\n")),
            secret("entra-wrong-client", "client-secret", WRONG_CLIENT_SECRET),
            policy("gcp-unknown-key", ["vertex-unknown-key"], gcp("gcp-unknown-service-account")),
            secret("gcp-unknown-service-account", "service_account.json", service_accounts["unknown"]),
        ],
        "openai": [
            service_backend("openai", "OpenAI", "openai"),
            endpoint("openai", c.openai.port),
            policy("openai", ["openai"], credentials("APIKey", "    secretRef: {name: openai-key}\n")),
            secret("openai-key", "apiKey", OPENAI_KEY),
        ],
    }
    return gateway_and_route(listener, "clouds", GATEWAYS[family], costs=True) + "".join(parts[family])


class CloudGateway(Gateway):
    """One family's CRs; the extproc's token endpoints point at the mocks and it logs at debug level;
    Envoy flushes its access log every 50 ms."""

    def __init__(self, workdir, family, clouds, service_accounts):
        super().__init__(workdir, primary=None, secondary=None)
        self.family = family
        self.clouds = clouds
        self.service_accounts = service_accounts

    def write_crs(self, extra_models=()):
        (self.config_dir / "crs.yaml").write_text(cloud_crs(self.listener, self.family, self.clouds, self.service_accounts))

    def start(self):
        self.write_crs()
        self.build()
        socket_path = self.instance_dir / "extproc.sock"
        self._spawn("extproc", [str(EXTPROC), "--config", "gateways/ai-e2e/filter-config.yaml", "--listen", "unix:gateways/ai-e2e/extproc.sock",
                                "--admin-listen", f"127.0.0.1:{self.extproc_admin}", "--log-format", "text",
                                "--log-level", "info,aigw_extproc=debug"])
        wait_for(lambda: self._alive("extproc") and socket_path.exists(), "extproc socket", self)
        self._spawn("envoy", [envoy_bin(), "-c", "envoy.yaml", "--log-level", "warn", "--use-dynamic-base-id",
                              "--file-flush-interval-msec", "50"])
        wait_for(lambda: self._alive("envoy") and http("GET", f"http://127.0.0.1:{self.envoy_admin}/ready")[0] == 200, "Envoy ready", self)
        return self

    def _alive(self, name):
        code = self.processes[name].poll()
        if code is not None:
            raise AssertionError(f"{name} exited with {code}:\n{self.log_text(name)[-3000:]}")
        return True

    def extproc_env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "AZURE_", "GOOGLE_", "GCE_", "AIGW_")) and "proxy" not in k.lower()}
        unused = f"127.0.0.1:{free_port()}"  # nothing listens: no real metadata server is ever asked
        env.update({
            "AWS_ENDPOINT_URL_STS": self.clouds.sts.url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials"),
            "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
            "AZURE_AUTHORITY_HOST": self.clouds.entra.url + "/",
            "GCE_METADATA_HOST": unused,
            "AIGW_GCP_STS_ENDPOINT": f"http://{unused}/v1/token",
            "AIGW_GCP_IAM_CREDENTIALS_ENDPOINT": f"http://{unused}",
            "NO_PROXY": "*",
        })
        return env

    def _spawn(self, name, command):
        log = open(self.workdir / f"{name}.log", "w")
        self.logs[name] = self.workdir / f"{name}.log"
        env = self.extproc_env() if name == "extproc" else None
        self.processes[name] = subprocess.Popen(command, cwd=self.out, stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.fixture(scope="module")
def clouds():
    oidc = MockOidcProvider(OIDC_CLIENT_ID, OIDC_CLIENT_SECRET)
    oauth = MockGoogleOAuth()
    entra = MockEntra(TENANT, CLIENT_ID, CLIENT_SECRET, assertions=oidc.tokens)
    bedrock = MockBedrock(REGION, {ACCESS_KEY_ID: (SECRET_ACCESS_KEY, None)})
    with running(oidc=oidc, oauth=oauth, entra=entra, bedrock=bedrock, sts=MockSts(ROLE_ARN, oidc.tokens, bedrock),
                 vertex=MockVertex(PROJECT, VERTEX_REGION, oauth.tokens), azure=MockAzureOpenAI("azure", entra.tokens),
                 openai=MockProvider("openai")) as mocks:
        yield mocks


@pytest.fixture(scope="module")
def service_accounts(tmp_path_factory, clouds):
    """Fresh service-account keys whose token_uri is the mock Google token endpoint: one it
    knows ("registered") and one it does not ("unknown")."""
    folder = tmp_path_factory.mktemp("gcp")
    keys = {}
    for name in ("registered", "unknown"):
        key_json, private_key = service_account_key(clouds.oauth.token_uri, PROJECT, f"aigw-e2e-{name}@{PROJECT}.iam.gserviceaccount.com")
        (folder / f"{name}.json").write_text(key_json)
        if name == "registered":
            clouds.oauth.register(key_json, private_key)
        keys[name] = key_json
    return keys


@contextlib.contextmanager
def lazy_gateways(make):
    """Yields ``get``: ``get(family)`` is the gateway ``make(family)`` made, started on first use
    (a family that did not start fails again at once); ``get.started`` maps each family to its
    gateway. When the block ends, every gateway stops and each extproc that started must exit
    cleanly."""
    for binary in (AIGW, EXTPROC):
        assert binary.exists(), f"{binary} missing: run `cargo build -p aigw -p aigw-extproc` first"
    started, failed = {}, {}

    def get(family):
        if family in failed:
            raise AssertionError(f"the {family} gateway did not start: {failed[family]}")
        if family not in started:
            gw = make(family)
            started[family] = gw
            try:
                gw.start()
            except AssertionError as error:
                failed[family] = str(error).splitlines()[0]
                raise
        return started[family]

    get.started = started
    yield get
    unclean = {}
    for family, gw in started.items():
        codes = gw.stop()
        if family not in failed and codes.get("extproc") != 0:
            unclean[family] = (codes, gw.log_text("extproc")[-1500:])
    assert not unclean, f"aigw-extproc did not exit cleanly on SIGTERM: {unclean}"


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, clouds, service_accounts):
    """``gateways(family)`` starts that family's gateway on first use; all stop at the end."""
    with lazy_gateways(lambda family: CloudGateway(tmp_path_factory.mktemp(family), family, clouds, service_accounts)) as get:
        yield get
    assert credentials_in_logs(get.started, clouds, service_accounts) == []


def client_of(gateway):
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)


@pytest.fixture(autouse=True)
def clean(clouds):
    for mock in (clouds.bedrock, clouds.vertex, clouds.azure, clouds.openai):
        mock.clear()


def gateway_for(gateways, model):
    return gateways(GATEWAY_OF[model])


def ask(gateways, model, stream=False, **extra):
    client = client_of(gateway_for(gateways, model))
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to the fox"}]
    return client.chat.completions.create(model=model, messages=messages, stream=stream, max_tokens=64, temperature=0.2, **extra)


def streamed_text(stream):
    chunks = list(stream)
    text = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
    finishes = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    usage = [chunk.usage for chunk in chunks if chunk.usage]
    return text, finishes, usage, chunks


def only(mock):
    requests = mock.received()
    assert len(requests) == 1, [(r.path, getattr(r, "problem", None)) for r in requests]
    assert getattr(requests[0], "problem", None) is None, requests[0].problem
    return requests[0]


def assert_signed(received, key_id=ACCESS_KEY_ID):
    auth = received.headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={key_id}/"), auth[:60]
    assert f"/{REGION}/bedrock/aws4_request" in auth
    assert CLIENT_KEY not in json.dumps(received.headers)


# --- The mocks themselves, against independent implementations -------------------------------


def test_mock_bedrock_accepts_exactly_what_botocore_signs():
    """The signature check is sound: botocore's own signature passes, a wrong key does not."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.eventstream import EventStreamBuffer

    bedrock = MockBedrock(REGION, {ACCESS_KEY_ID: (SECRET_ACCESS_KEY, None)}).start()

    def call(secret, action):
        url = f"{bedrock.url}/model/anthropic.claude-3-5-haiku-20241022-v1:0/{action}"
        body = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()
        signed = AWSRequest("POST", url, data=body, headers={"content-type": "application/json"})
        SigV4Auth(Credentials(ACCESS_KEY_ID, secret), "bedrock", REGION).add_auth(signed)
        return http("POST", url, body, dict(signed.headers))

    status, _, body = call(SECRET_ACCESS_KEY, "converse")
    assert status == 200, body
    status, headers, body = call(WRONG_SECRET, "converse")
    assert status == 403 and json.loads(body)["message"] == BAD_SIGNATURE
    assert headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    status, _, body = call(SECRET_ACCESS_KEY, "converse-stream")
    frames = EventStreamBuffer()
    frames.add_data(body)
    events = [(m.headers[":event-type"], json.loads(m.payload)) for m in frames]
    assert "".join(e["delta"]["text"] for name, e in events if name == "contentBlockDelta") == ANSWER
    assert events[-1][0] == "metadata"
    bedrock.stop()


def test_mock_google_token_endpoint_checks_the_assertion():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    oauth = MockGoogleOAuth().start()
    key_json, private_key = service_account_key(oauth.token_uri, PROJECT)
    oauth.register(key_json, private_key)
    key = json.loads(key_json)

    def grant(claims, signer=private_key):
        def encode(data):
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        unsigned = f"{encode({'alg': 'RS256', 'typ': 'JWT', 'kid': key['private_key_id']})}.{encode(claims)}"
        signature = base64.urlsafe_b64encode(signer.sign(unsigned.encode(), padding.PKCS1v15(), hashes.SHA256())).rstrip(b"=").decode()
        form = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": f"{unsigned}.{signature}"})
        return http("POST", key["token_uri"], form.encode(), {"content-type": "application/x-www-form-urlencoded"})

    now = int(time.time())
    claims = {"iss": key["client_email"], "scope": GCP_SCOPE, "aud": key["token_uri"], "iat": now, "exp": now + 3600}
    status, _, body = grant(claims)
    assert status == 200, body
    token = json.loads(body)["access_token"]
    assert token in oauth.tokens() and json.loads(body)["expires_in"] > 0
    assert grant(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048))[0] == 400
    assert grant({**claims, "aud": "https://oauth2.googleapis.com/token"})[0] == 400
    assert [r.problem for r in oauth.received()][1:] == ["Invalid JWT Signature.", f"aud 'https://oauth2.googleapis.com/token', expected {oauth.token_uri}"]
    oauth.stop()


# --- AWS Bedrock ---------------------------------------------------------------------------------


def test_bedrock_chat_is_signed_and_translated_to_converse(gateways, clouds):
    completion = ask(gateways, "bedrock-claude")
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 5
    assert completion.usage.completion_tokens == len(PIECES)
    assert completion.usage.total_tokens == 5 + len(PIECES)
    received = only(clouds.bedrock)
    assert completion.id == received.request_id
    assert received.path == "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse"
    assert_signed(received)
    body = received.json()
    assert body["messages"] == [{"role": "user", "content": [{"text": "say hello to the fox"}]}]
    assert body["system"] == [{"text": "be brief"}]
    assert body["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.2}
    assert "model" not in body


def test_bedrock_chat_streams_from_the_binary_event_stream(gateways, clouds):
    text, finishes, usage, chunks = streamed_text(ask(gateways, "bedrock-claude", stream=True))
    assert text == ANSWER
    assert finishes == ["stop"]
    assert len(usage) == 1 and usage[0].prompt_tokens == 5 and usage[0].completion_tokens == len(PIECES)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == len(PIECES)
    received = only(clouds.bedrock)
    assert {chunk.id for chunk in chunks} == {received.request_id}
    assert received.path == "/model/anthropic.claude-3-5-haiku-20241022-v1:0/converse-stream"
    assert_signed(received)
    # The usage in the event stream's metadata event is what the costs are computed from.
    gateway = gateway_for(gateways, "bedrock-claude")

    def costs():
        return [e["io.envoy.ai_gateway"] for e in gateway.access_log()
                if isinstance(e.get("io.envoy.ai_gateway"), dict) and e["x-envoy-origin-path"].endswith("/converse-stream")
                and str(e["io.envoy.ai_gateway"].get("llm_output_token")) == str(len(PIECES))]

    wait_for(lambda: costs(), "an access log entry with the streamed usage", gateway)
    assert str(costs()[-1]["llm_input_token"]) == "5"
    assert str(costs()[-1]["llm_total_token"]) == str(5 + len(PIECES))


def test_bedrock_stream_reaches_the_client_as_server_sent_events(gateways, clouds):
    gateway = gateway_for(gateways, "bedrock-claude")
    request = urllib.request.Request(gateway.url("/v1/chat/completions"), method="POST", headers={"content-type": "application/json"},
                                     data=json.dumps({"model": "bedrock-claude", "stream": True,
                                                      "messages": [{"role": "user", "content": "hi"}]}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in response.headers
        lines = [line.decode().strip() for line in response if line.strip()]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines), lines[:3]


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_bedrock_signature_failure_keeps_the_provider_status_in_the_openai_shape(gateways, clouds, stream):
    with pytest.raises(openai.PermissionDeniedError) as caught:
        ask(gateways, "bedrock-bad-key", stream=stream)
    error = caught.value
    assert error.status_code == 403
    assert error.body["type"] == "InvalidSignatureException"
    assert error.body["message"] == BAD_SIGNATURE
    assert error.body["code"] == "403"
    [received] = clouds.bedrock.received()
    assert received.path == "/model/amazon.nova-lite-v1:0/" + ("converse-stream" if stream else "converse")
    assert received.problem.startswith("signature mismatch"), received.problem
    assert_signed(received)


def test_bedrock_titan_embeddings(gateways, clouds):
    client = client_of(gateway_for(gateways, "titan-embed"))
    vectors = client.embeddings.create(model="titan-embed", input="the quick brown fox", encoding_format="float")
    assert len(vectors.data) == 1 and len(vectors.data[0].embedding) == 1024
    assert vectors.data[0].embedding[:3] == [0.0, 0.001, 0.002]
    assert vectors.usage.prompt_tokens == 4
    received = only(clouds.bedrock)
    assert received.path == "/model/amazon.titan-embed-text-v2:0/invoke"
    assert_signed(received)
    assert received.json()["inputText"] == "the quick brown fox"


def test_bedrock_titan_embeddings_with_the_sdk_default_encoding(gateways, clouds):
    # The SDK asks for base64 unless told otherwise and decodes either form.
    vectors = client_of(gateway_for(gateways, "titan-embed")).embeddings.create(model="titan-embed", input="hello")
    assert len(vectors.data[0].embedding) == 1024
    assert vectors.data[0].embedding[1] == pytest.approx(0.001, rel=1e-5)
    assert only(clouds.bedrock).json()["inputText"] == "hello"


def assert_claude_invoked(received, max_tokens):
    """A signed InvokeModel request for Claude: the Messages API body with Bedrock's
    anthropic_version and without the model (it is in the path)."""
    assert_signed(received)
    body = received.json()
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert body["max_tokens"] == max_tokens and body["system"] == "be brief"
    assert "model" not in body


def test_claude_on_bedrock_invoke_model(gateways, clouds):
    completion = ask(gateways, "bedrock-invoke-claude")
    assert completion.choices[0].message.content == ANSWER
    assert completion.usage.prompt_tokens == 5
    received = only(clouds.bedrock)
    assert received.path == "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke"
    assert_claude_invoked(received, max_tokens=64)


def assert_streamed_answer(gateways, model):
    """`model` streams the answer to its end, then the usage of the conversation."""
    text, finishes, usage, _ = streamed_text(ask(gateways, model, stream=True))
    assert text == ANSWER
    assert finishes == ["stop"]
    assert usage and usage[-1].prompt_tokens == 5 and usage[-1].completion_tokens == len(PIECES)


def test_claude_on_bedrock_invoke_model_streamed(gateways, clouds):
    assert_streamed_answer(gateways, "bedrock-invoke-claude")
    received = only(clouds.bedrock)
    assert received.path == "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke-with-response-stream"
    assert_signed(received)


def test_bedrock_with_credentials_from_an_oidc_token_exchanged_at_sts(gateways, clouds):
    completion = ask(gateways, "bedrock-sts")
    assert completion.choices[0].message.content == ANSWER
    assert clouds.sts.issued, [r.problem for r in clouds.sts.received()]
    assert all(r.problem is None for r in clouds.sts.received() + clouds.oidc.received())
    access_key, _, session_token = clouds.sts.issued[-1]
    received = only(clouds.bedrock)
    assert received.path == "/model/amazon.nova-pro-v1:0/converse"
    assert_signed(received, key_id=access_key)
    assert received.headers["x-amz-security-token"] == session_token
    exchange = [r for r in clouds.sts.received() if r.problem is None][-1]
    assert exchange.method == "POST"


# --- GCP Vertex AI -------------------------------------------------------------------------------


def assert_vertex_token(received, clouds):
    assert received.headers["authorization"] in {f"Bearer {t}" for t in clouds.oauth.tokens()}
    grants = [g for g in clouds.oauth.received() if g.problem is None]
    assert grants, [g.problem for g in clouds.oauth.received()]
    claims = grants[-1].claims
    assert claims["iss"] == f"aigw-e2e-registered@{PROJECT}.iam.gserviceaccount.com"
    assert claims["aud"] == clouds.oauth.token_uri
    assert GCP_SCOPE in claims["scope"].split()


def test_vertex_gemini_chat(gateways, clouds):
    completion = ask(gateways, "gemini")
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 5 and completion.usage.completion_tokens == len(PIECES)
    received = only(clouds.vertex)
    assert received.path == f"/v1/projects/{PROJECT}/locations/{VERTEX_REGION}/publishers/google/models/gemini-2.0-flash-001:generateContent"
    assert_vertex_token(received, clouds)
    body = received.json()
    assert body["contents"] == [{"role": "user", "parts": [{"text": "say hello to the fox"}]}]
    assert body["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert body["generationConfig"]["maxOutputTokens"] == 64
    assert body["generationConfig"]["temperature"] == 0.2


def test_vertex_gemini_chat_streamed(gateways, clouds):
    assert_streamed_answer(gateways, "gemini")
    received = only(clouds.vertex)
    assert received.path == (f"/v1/projects/{PROJECT}/locations/{VERTEX_REGION}/publishers/google/models/"
                             "gemini-2.0-flash-001:streamGenerateContent?alt=sse")
    assert_vertex_token(received, clouds)


def claude_on_vertex_received(clouds):
    """The two requests Vertex AI received for Claude, rawPredict then streamRawPredict, each
    accepted, with a token of the service account and Vertex AI's anthropic_version."""
    buffered, streamed = clouds.vertex.received()
    prefix = f"/v1/projects/{PROJECT}/locations/{VERTEX_REGION}/publishers/anthropic/models/claude-3-5-haiku@20241022"
    assert buffered.path == f"{prefix}:rawPredict"
    assert streamed.path.split("?")[0] == f"{prefix}:streamRawPredict"
    for received in (buffered, streamed):
        assert received.problem is None, received.problem
        assert_vertex_token(received, clouds)
        assert received.json()["anthropic_version"] == "vertex-2023-10-16"
    return buffered, streamed


def test_claude_on_vertex_raw_predict(gateways, clouds):
    completion = ask(gateways, "vertex-claude")
    assert completion.choices[0].message.content == ANSWER
    text, finishes, _, _ = streamed_text(ask(gateways, "vertex-claude", stream=True))
    assert text == ANSWER and finishes == ["stop"]
    claude_on_vertex_received(clouds)


# --- Azure OpenAI with Entra ID ------------------------------------------------------------------


def ask_azure(gateways, clouds, model, deployment):
    """Asks `model` of Azure OpenAI; returns what it received: one request for `deployment` with
    a token Entra ID issued."""
    completion = ask(gateways, model)
    assert completion.choices[0].message.content == ANSWER
    received = only(clouds.azure)
    assert received.path == f"/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"
    assert received.headers["authorization"] in {f"Bearer {t}" for t in clouds.entra.tokens()}
    return received


def test_azure_openai_with_an_entra_token_from_a_client_secret(gateways, clouds):
    received = ask_azure(gateways, clouds, "azure-entra", "gpt-4o-prod")
    assert "api-key" not in received.headers
    assert received.json()["model"] == "gpt-4o-prod"
    grants = [r for r in clouds.entra.received() if "client_secret=" in r.body.decode()]
    assert grants and all(g.problem is None for g in grants), [g.problem for g in grants]
    form = dict(kv.split("=", 1) for kv in grants[-1].body.decode().split("&"))
    assert form["grant_type"] == "client_credentials"
    assert urllib.parse.unquote_plus(form["scope"]) == AZURE_SCOPE
    assert urllib.parse.unquote_plus(form["client_id"]) == CLIENT_ID


def test_azure_openai_with_a_federated_oidc_token(gateways, clouds):
    ask_azure(gateways, clouds, "azure-federated", "gpt-4o-federated")
    federated = [r for r in clouds.entra.received() if "client_assertion=" in r.body.decode()]
    assert federated and all(r.problem is None for r in federated), [r.problem for r in federated]


# --- Token endpoints that refuse ----------------------------------------------------------------


def test_a_refused_token_request_answers_503_with_the_reason_and_never_calls_the_provider(gateways, clouds):
    for model, reason in (("azure-bad-secret", "AADSTS7000215"), ("gemini-unknown-key", "invalid_grant")):
        with pytest.raises(openai.InternalServerError) as caught:
            ask(gateways, model)
        assert caught.value.status_code == 503
        assert reason in json.dumps(caught.value.body), caught.value.body
    assert clouds.azure.received() == [] and clouds.vertex.received() == []
    refused = [r.problem for r in clouds.entra.received() + clouds.oauth.received() if r.problem]
    assert any(p.startswith("AADSTS7000215") for p in refused) and any("unknown issuer" in p for p in refused), refused


# --- Anthropic Messages API ----------------------------------------------------------------------


def messages(gateways, model, stream=False, max_tokens=50):
    gateway = gateway_for(gateways, model)
    body = {"model": model, "max_tokens": max_tokens, "system": "be brief",
            "messages": [{"role": "user", "content": "say hello to the fox"}]}
    if stream:
        body["stream"] = True
    request = urllib.request.Request(gateway.url("/anthropic/v1/messages"), data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json", "x-api-key": CLIENT_KEY,
                                              "anthropic-version": "2023-06-01"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def anthropic_events(raw):
    """(event name, payload) pairs of an Anthropic event stream; the name must match the type."""
    events = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            payload = json.loads(fields["data"])
            assert fields.get("event") == payload["type"], block
            events.append((payload["type"], payload))
    return events


def assert_anthropic_message(status, headers, body, input_tokens):
    assert status == 200, body
    assert {k.lower(): v for k, v in headers.items()}["content-type"].startswith("application/json")
    message = json.loads(body)
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": ANSWER}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == input_tokens
    assert message["usage"]["output_tokens"] == len(PIECES)


def assert_anthropic_stream(status, headers, body):
    assert status == 200, body
    assert {k.lower(): v for k, v in headers.items()}["content-type"].startswith("text/event-stream")
    events = anthropic_events(body)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    text = "".join(e["delta"]["text"] for name, e in events if name == "content_block_delta")
    assert text == ANSWER
    [delta] = [e for name, e in events if name == "message_delta"]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == len(PIECES)


def test_messages_api_to_bedrock_converse(gateways, clouds):
    assert_anthropic_message(*messages(gateways, "claude-bedrock-messages"), input_tokens=5)
    received = only(clouds.bedrock)
    assert received.path == "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse"
    assert_signed(received)
    assert "x-api-key" not in received.headers
    body = received.json()
    assert body["messages"] == [{"role": "user", "content": [{"text": "say hello to the fox"}]}]
    assert body["system"] == [{"text": "be brief"}]
    assert body["inferenceConfig"]["maxTokens"] == 50


def test_messages_token_count_from_bedrock(gateways, clouds):
    gateway = gateway_for(gateways, "claude-bedrock-messages")
    body = {"model": "claude-bedrock-messages", "system": "be brief",
            "messages": [{"role": "user", "content": "say hello to the fox"}]}
    status, _, answer = http("POST", gateway.url("/anthropic/v1/messages/count_tokens"), body,
                             headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"})
    assert status == 200, answer
    assert json.loads(answer) == {"input_tokens": 5}
    received = only(clouds.bedrock)
    assert received.path == "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/count-tokens"
    assert_signed(received)
    assert received.json()["input"]["converse"]["messages"] == [{"role": "user", "content": [{"text": "say hello to the fox"}]}]


def test_messages_api_streamed_from_bedrock_converse_stream(gateways, clouds):
    assert_anthropic_stream(*messages(gateways, "claude-bedrock-messages", stream=True))
    received = only(clouds.bedrock)
    assert received.path == "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse-stream"
    assert_signed(received)


def test_messages_api_error_from_bedrock_is_anthropic_shaped(gateways, clouds):
    status, _, body = messages(gateways, "bedrock-bad-key")
    assert status == 403, body
    error = json.loads(body)
    assert error["type"] == "error"
    assert error["error"]["type"] == "permission_error"
    assert "signature" in error["error"]["message"]


def test_messages_api_to_claude_on_bedrock_invoke_model(gateways, clouds):
    assert_anthropic_message(*messages(gateways, "bedrock-invoke-claude"), input_tokens=5)
    assert_anthropic_stream(*messages(gateways, "bedrock-invoke-claude", stream=True))
    buffered, streamed = clouds.bedrock.received()
    assert buffered.path == "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke"
    assert streamed.path == "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke-with-response-stream"
    for received in (buffered, streamed):
        assert received.problem is None, received.problem
        assert_claude_invoked(received, max_tokens=50)


def test_messages_api_to_claude_on_vertex(gateways, clouds):
    assert_anthropic_message(*messages(gateways, "vertex-claude"), input_tokens=5)
    assert_anthropic_stream(*messages(gateways, "vertex-claude", stream=True))
    for received in claude_on_vertex_received(clouds):
        assert "model" not in received.json()


def test_messages_api_to_an_openai_backend(gateways, clouds):
    assert_anthropic_message(*messages(gateways, "claude-openai-messages"), input_tokens=words_in("be brief") + words_in("say hello to the fox"))
    received = only(clouds.openai)
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "x-api-key" not in received.headers
    body = received.json()
    assert body["model"] == "gpt-4o-mini-2024-07-18"
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to the fox"}]
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 50


def test_messages_api_streamed_from_an_openai_backend(gateways, clouds):
    assert_anthropic_stream(*messages(gateways, "claude-openai-messages", stream=True))
    received = only(clouds.openai)
    assert received.json()["stream"] is True
    assert received.headers["authorization"] == f"Bearer {OPENAI_KEY}"


# --- Secrecy (last; the fixture teardown checks again after every test) ---------------------------


def credentials_in_logs(started, clouds, service_accounts):
    """Every planted or issued credential found in any log of the started gateways."""
    planted = [SECRET_ACCESS_KEY, DECOY_SECRET, WRONG_SECRET, CLIENT_SECRET, WRONG_CLIENT_SECRET, OIDC_CLIENT_SECRET, OPENAI_KEY]
    pem_lines = [line for key in service_accounts.values() for line in json.loads(key)["private_key"].splitlines() if "-----" not in line]
    issued = list(clouds.oauth.tokens() | clouds.entra.tokens() | clouds.oidc.tokens())
    issued += [value for _, secret, token in clouds.sts.issued for value in (secret, token)]
    assertions = [dict(urllib.parse.parse_qsl(r.body.decode())).get("assertion") for r in clouds.oauth.received()]
    return leaks_in_logs(started, planted + pem_lines + issued + [a for a in assertions if a])


def leaks_in_logs(started, values):
    """Each of `values` found in a log (extproc, Envoy, access log) of the started gateways."""
    leaks = []
    for family, gateway in started.items():
        access_log = gateway.out / "access.log"
        logs = {"extproc": gateway.log_text("extproc"), "envoy": gateway.log_text("envoy"),
                "access": access_log.read_text() if access_log.exists() else ""}
        leaks += [f"{family}/{name}: {value[:6]}..." for name, text in logs.items() for value in values if value in text]
    return leaks


def test_no_credential_appears_in_any_log(gateways, clouds, service_accounts):
    assert gateways.started, "no gateway ran"
    assert all(gw.log_text("extproc") for gw in gateways.started.values()), "an extproc wrote no log"
    assert credentials_in_logs(gateways.started, clouds, service_accounts) == []
