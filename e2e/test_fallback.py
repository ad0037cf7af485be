"""Provider fallback, retries and streamIdleTimeout through real Envoy and the real extproc.

Each AIGatewayRoute rule is one Envoy cluster whose localities are its backendRefs (priorities
from `backendRef.priority`); Envoy retries as the user's BackendTrafficPolicy says, and the
extproc in the cluster translates, overrides and signs every attempt for the backend it
reached. The primary is a provider that misbehaves on purpose (mock_faults.py: the model it is
asked for names the fault), the fallbacks are a Bedrock mock that checks SigV4 signatures with
botocore and an OpenAI mock; the client is the openai SDK.
"""

import json
import time

import openai
import pytest

from conftest import Gateway, free_port, http, running, wait_for
from crs import api_key, aws_profile, credentials, credentials_file, endpoint, policy, route, rule, secret, service_backend
from crs import gateway as gateway_crs
from mock_cloud import PIECES, MockBedrock
from mock_faults import FaultyProvider
from mock_provider import ANSWER, MockProvider

REGION = "us-east-1"
ACCESS_KEY_ID = "AKIAE2EFALLBACK00017"
SECRET_ACCESS_KEY = "e2e/Fallback+Planted/4c1d7e9a0b"
OPENAI_KEY = "sk-fallback-planted-52a9"
ANTHROPIC_KEY = "sk-ant-fallback-planted-7f31"
CLIENT_KEY = "client-key-fallback"
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
IDLE_SECONDS = 1


def fallback_crs(listener, faulty, bedrock, openai_port, dead):
    idle = f"    streamIdleTimeout: {IDLE_SECONDS}s\n    timeouts: {{request: 20s}}\n"
    rules = "".join([
        # The primary answers 500: Bedrock serves it, in the client's API.
        rule("to-bedrock", ["{name: faulty, modelNameOverride: x-html500, priority: 0}",
                            f"{{name: bedrock, modelNameOverride: '{BEDROCK_MODEL}', priority: 1}}"]),
        # Nothing listens on the primary's port.
        rule("dead-primary", ["{name: dead, priority: 0}", "{name: openai, priority: 1}"]),
        # The primary accepts the connection and never answers.
        rule("silent-primary", ["{name: faulty, modelNameOverride: x-hangheaders, priority: 0}",
                                "{name: openai, modelNameOverride: from-fallback, priority: 1}"], idle),
        # The only backend sends a first chunk, then nothing.
        rule("stalling", ["{name: faulty, modelNameOverride: x-hangstream}"], idle),
        # An Anthropic primary (its key in x-api-key) answers 500; the OpenAI fallback must not
        # get what the first attempt was given.
        rule("from-anthropic", ["{name: faulty-anthropic, modelNameOverride: x-html500, priority: 0}",
                                "{name: openai, priority: 1}"]),
        # One backend: processed on the router, no extproc per attempt.
        rule("single", ["{name: openai, modelNameOverride: from-router}"]),
        # Two backends of one priority share the traffic 3:1; the fallback takes none.
        rule("weighted", ["{name: faulty, modelNameOverride: x-ok, weight: 3}",
                          "{name: openai, weight: 1}",
                          f"{{name: bedrock, modelNameOverride: '{BEDROCK_MODEL}', priority: 1}}"]),
    ])
    return "".join([
        gateway_crs(listener),
        route("fallback", rules, [("llm_total_token", "TotalToken")]),
        """---
# Upstream's provider_fallback example: retries on the HTTPRoute named after the AIGatewayRoute.
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: fallback, namespace: ai}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: fallback}
  retry:
    numAttemptsPerPriority: 1
    numRetries: 3
    perRetry:
      backOff: {baseInterval: 50ms, maxInterval: 1s}
      timeout: 10s
    retryOn:
      httpStatusCodes: [500, 502, 503, 504]
      triggers: [connect-failure, retriable-status-codes, reset]
""",
        # Without a retry policy a failing primary's answer reaches the client, as upstream.
        route("no-retries", rule("no-retry", ["{name: faulty, modelNameOverride: x-html500, priority: 0}", "{name: openai, priority: 1}"])),
        service_backend("faulty", "OpenAI", "faulty"), endpoint("faulty", faulty),
        service_backend("faulty-anthropic", "Anthropic", "faulty"),
        api_key("anthropic-key", ["faulty-anthropic"], ANTHROPIC_KEY, "AnthropicAPIKey"),
        service_backend("dead", "OpenAI", "dead"), endpoint("dead", dead),
        service_backend("openai", "OpenAI", "openai"), endpoint("openai", openai_port),
        service_backend("bedrock", "AWSBedrock", "bedrock"), endpoint("bedrock", bedrock),
        api_key("openai-key", ["faulty", "openai", "dead"], OPENAI_KEY),
        policy("aws", ["bedrock"], credentials("AWSCredentials", f"    region: {REGION}\n" + credentials_file("aws-credentials"))),
        secret("aws-credentials", "credentials", aws_profile(ACCESS_KEY_ID, SECRET_ACCESS_KEY)),
    ])


class FallbackGateway(Gateway):
    def __init__(self, workdir, mocks):
        super().__init__(workdir, primary=None, secondary=None)
        self.mocks = mocks
        self.dead = free_port()

    def write_crs(self, extra_models=()):
        m = self.mocks
        (self.config_dir / "crs.yaml").write_text(
            fallback_crs(self.listener, m["faulty"].port, m["bedrock"].port, m["openai"].port, self.dead))


@pytest.fixture(scope="module")
def mocks():
    started = {
        "faulty": FaultyProvider(),
        "bedrock": MockBedrock(REGION, {ACCESS_KEY_ID: (SECRET_ACCESS_KEY, None)}),
        "openai": MockProvider("openai"),
    }
    with running(*started.values()):
        yield started


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, mocks):
    gw = FallbackGateway(tmp_path_factory.mktemp("fallback"), mocks)
    gw.start()
    yield gw
    codes = gw.stop()
    assert codes.get("extproc") == 0, gw.log_text("extproc")[-2000:]


@pytest.fixture(autouse=True)
def clean(mocks):
    for mock in mocks.values():
        mock.clear()


def client(gateway, timeout=20):
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=timeout)


def ask(gateway, model, stream=False, timeout=20):
    return client(gateway, timeout).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "say hello to the fox"}], stream=stream, max_tokens=64)


def last_log(gateway, model):
    """The access log entry of the latest request for `model`."""
    def entry():
        found = [e for e in gateway.access_log() if e.get("x-ai-eg-model") == model]
        return found[-1] if found else None
    wait_for(lambda: entry() is not None, f"access log entry for {model}", gateway)
    return entry()


def faulty_models(mocks):
    return [json.loads(body or b"{}").get("model") for _, _, _, body in mocks["faulty"].received()]


def test_the_generated_build_has_no_warning_about_fallback(gateway):
    result = gateway.build()
    assert "priority" not in result.stderr and "streamIdleTimeout" not in result.stderr, result.stderr


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_a_failing_primary_is_served_by_a_bedrock_fallback_signed_for_it(gateway, mocks, stream):
    if stream:
        chunks = list(ask(gateway, "to-bedrock", stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "".join(PIECES)
    else:
        completion = ask(gateway, "to-bedrock")
        assert completion.choices[0].message.content == ANSWER
        assert completion.model == "to-bedrock" or completion.model == BEDROCK_MODEL
    # The primary got the OpenAI request with its own key once; Bedrock got a signed Converse call.
    assert faulty_models(mocks) == ["x-html500"]
    faulty_headers = mocks["faulty"].received()[0][2]
    assert faulty_headers["authorization"] == f"Bearer {OPENAI_KEY}"
    received = mocks["bedrock"].received()
    assert len(received) == 1
    assert received[0].problem is None, received[0].problem
    suffix = "converse-stream" if stream else "converse"
    assert received[0].path == f"/model/{BEDROCK_MODEL}/{suffix}"
    assert received[0].json()["messages"] == [{"role": "user", "content": [{"text": "say hello to the fox"}]}]
    assert OPENAI_KEY not in json.dumps(received[0].headers) and CLIENT_KEY not in json.dumps(received[0].headers)
    assert "x-aigw-rule" not in received[0].headers
    # Costs and the backend are those of the attempt that answered.
    entry = last_log(gateway, "to-bedrock")
    facts = entry["io.envoy.ai_gateway"]
    assert facts["backend_name"].startswith("ai/bedrock/"), entry
    assert entry["response_code"] == 200
    assert int(facts["llm_total_token"]) == 5 + len(PIECES)
    metrics = http("GET", f"http://127.0.0.1:{gateway.extproc_admin}/metrics")[2].decode()
    assert 'gen_ai_provider_name="aws.bedrock"' in metrics


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
def test_a_fallback_attempt_gets_nothing_the_failed_attempt_was_given(gateway, mocks, stream):
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in ask(gateway, "from-anthropic", stream=True) if c.choices)
    else:
        assert ask(gateway, "from-anthropic").choices[0].message.content
    first = mocks["faulty"].received()
    assert [(path, headers.get("x-api-key")) for _, path, headers, _ in first] == [("/v1/messages", ANTHROPIC_KEY)]
    second = mocks["openai"].received()
    assert len(second) == 1
    assert second[0].path == "/v1/chat/completions"
    shown = json.dumps(second[0].headers)
    assert ANTHROPIC_KEY not in shown and "x-api-key" not in second[0].headers, shown
    assert "anthropic-version" not in second[0].headers, shown
    assert second[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert second[0].json()["model"] == "from-anthropic"


def test_a_connect_failure_goes_to_the_next_priority(gateway, mocks):
    completion = ask(gateway, "dead-primary")
    assert completion.choices[0].message.content
    assert len(mocks["openai"].received()) == 1
    received = mocks["openai"].received()[0].headers
    assert received["authorization"] == f"Bearer {OPENAI_KEY}"
    # Envoy found the rule by its virtual host; a Backend without a hostname gets the client's.
    assert received["host"] == f"127.0.0.1:{gateway.listener}", received
    assert "x-aigw-authority" not in received and "aigw.internal" not in json.dumps(received), received


def test_a_rule_with_one_backend_is_processed_on_the_router_and_keeps_the_client_host(gateway, mocks):
    assert ask(gateway, "single").choices[0].message.content
    [received] = mocks["openai"].received()
    assert received.json()["model"] == "from-router"
    assert received.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    # Envoy found the route by its virtual host and copied the client's Host back.
    assert received.headers["host"] == f"127.0.0.1:{gateway.listener}", received.headers
    assert "aigw.internal" not in json.dumps(received.headers) and "x-aigw-rule" not in received.headers
    entry = last_log(gateway, "single")
    assert entry["io.envoy.ai_gateway"]["backend_name"].startswith("ai/openai/"), entry


def test_a_silent_primary_is_abandoned_after_the_stream_idle_timeout(gateway, mocks):
    started = time.monotonic()
    completion = ask(gateway, "silent-primary")
    took = time.monotonic() - started
    assert completion.choices[0].message.content
    assert IDLE_SECONDS * 0.9 <= took < IDLE_SECONDS + 3, took
    # Each attempt carried its own backend's model.
    assert faulty_models(mocks) == ["x-hangheaders"]
    assert mocks["openai"].received()[0].json()["model"] == "from-fallback"


def test_a_stalling_stream_ends_with_an_error_near_the_stream_idle_timeout(gateway):
    started = time.monotonic()
    received = []
    with pytest.raises((openai.APIError, openai.APIConnectionError)):
        for chunk in ask(gateway, "stalling", stream=True, timeout=30):
            received.append(chunk)
    took = time.monotonic() - started
    assert received, "the first chunk reaches the client"
    assert took < IDLE_SECONDS + 4, took


def test_weights_share_a_priority_and_the_fallback_takes_none(gateway, mocks):
    for _ in range(40):
        ask(gateway, "weighted")
    faulty = len(mocks["faulty"].received())
    fallback = len(mocks["openai"].received())
    assert faulty + fallback == 40
    assert 20 <= faulty <= 38, (faulty, fallback)
    assert mocks["bedrock"].received() == []


def test_without_a_retry_policy_the_primary_answer_reaches_the_client(gateway, mocks):
    with pytest.raises(openai.InternalServerError) as caught:
        ask(gateway, "no-retry")
    assert caught.value.status_code == 500
    assert mocks["openai"].received() == []
