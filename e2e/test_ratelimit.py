"""Token budgets end to end: `aigw run` with real Envoy, the extproc and the rate-limit service.

The CRs are upstream's examples/token_ratelimit shape (a BackendTrafficPolicy on the Gateway
with input, output, total, cached and CEL token budgets per distinct `x-tenant-id`) and a
QuotaPolicy (a default bucket, a shadow-mode bucket selected by a header, a one-second budget).
Envoy checks each request with cost 0 and charges the tokens the extproc wrote into
`io.envoy.ai_gateway` metadata when the stream ends, so the request after the one that spent a
budget is refused, with 429 in the client API's error shape.

The mock providers answer with known usage: an OpenAI chat completion uses one prompt token per
word of the messages and 9 completion tokens; an Anthropic message 5 input and 9 output tokens.
"""

import json
import re
import signal
import subprocess
import time

import openai
import pytest

from conftest import AIGW, EXTPROC, envoy_bin, free_port, http, running, wait_for
from crs import endpoint, route, rule, service_backend
from crs import gateway as gateway_crs
from mock_provider import ANSWER, MockAnthropic, MockProvider

TOTAL_BUDGET = 30  # total tokens per tenant per hour: three two-word chats (11 each) spend it


def per_tenant(requests, unit, cost=""):
    """A rate-limit rule: `requests` a `unit` per distinct x-tenant-id; `cost` is the rest of the
    rule, indented by eight spaces."""
    return f"""      - clientSelectors: [{{headers: [{{name: x-tenant-id, type: Distinct}}]}}]
        limit: {{requests: {requests}, unit: {unit}}}
{cost}"""


def budget(key, limit):
    """A budget of `limit` tokens an hour per tenant: a request is checked with cost 0 and
    charged the `key` of the extproc's metadata when it ends."""
    return per_tenant(limit, "Hour", f"""        cost:
          request: {{from: Number, number: 0}}
          response: {{from: Metadata, metadata: {{namespace: io.envoy.ai_gateway, key: {key}}}}}
""")


def rate_limit(name, target_kind, target, scope, rules):
    """The BackendTrafficPolicy `name` limiting the rate of the gateway.networking.k8s.io
    `target_kind` `target` by `rules`: in Envoy (`scope` "local") or at the rate-limit service
    ("global")."""
    type_line = "    type: Global\n" if scope == "global" else ""
    return f"""---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {name}, namespace: ai}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: {target_kind}, name: {target}}}]
  rateLimit:
{type_line}    {scope}:
      rules:
{rules}"""


def ratelimit_crs(listener, openai_port, anthropic_port):
    costs = [("llm_input_token", "InputToken"), ("llm_cached_input_token", "CachedInputToken"),
             ("llm_output_token", "OutputToken"), ("llm_total_token", "TotalToken"),
             ("llm_cel_calculated_token", "CEL", "input_tokens == uint(3) ? 100000000 : 0")]
    budgets = [("llm_input_token", 1000), ("llm_output_token", 1000), ("llm_total_token", TOTAL_BUDGET),
               ("llm_cached_input_token", 100), ("llm_cel_calculated_token", 1000)]
    return "".join([
        gateway_crs(listener),
        route("budget", rule("gpt-budget", ["{name: openai}"]) + rule("claude-budget", ["{name: anthropic}"]), costs),
        route("quota", rule("q-model", ["{name: quota-openai, modelNameOverride: q-model}"])
              + rule("q-fast", ["{name: quota-openai, modelNameOverride: q-fast}"])),
        route("local", rule("gpt-local", ["{name: openai}"])),
        # Envoy's local rate limit (no service): two requests a minute per tenant on this route.
        rate_limit("local-limit", "HTTPRoute", "local", "local", per_tenant(2, "Minute")),
        service_backend("openai", "OpenAI", "openai"),
        service_backend("quota-openai", "OpenAI", "openai"),
        service_backend("anthropic", "Anthropic", "anthropic"),
        endpoint("openai", openai_port),
        endpoint("anthropic", anthropic_port),
        rate_limit("token-budgets", "Gateway", "e2e", "global", "".join(budget(key, limit) for key, limit in budgets)),
        """---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {name: quotas, namespace: ai}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: quota-openai}]
  perModelQuotas:
  - modelName: q-model
    quota:
      defaultBucket: {limit: 15, duration: 1m}
      bucketRules:
      - clientSelectors: [{headers: [{name: x-team, type: Exact, value: interns}]}]
        quota: {limit: 5, duration: 1m}
        shadowMode: true
  - modelName: q-fast
    quota:
      costExpression: "uint(100)"
      defaultBucket: {limit: 50, duration: 1s}
""",
    ])


class Run:
    """`aigw run` on the CRs, its output in a file."""

    def __init__(self, workdir, listener, crs_text):
        self.workdir = workdir
        self.listener = listener
        config = workdir / "config"
        config.mkdir()
        (config / "crs.yaml").write_text(crs_text)
        self.dir = workdir / "run"
        self.log_path = workdir / "aigw-run.log"
        self.envoy_admin = free_port()
        self.process = subprocess.Popen(
            [str(AIGW), "run", str(config), "--dir", str(self.dir), "--envoy-bin", envoy_bin(), "--extproc-bin", str(EXTPROC),
             "--envoy-admin-port", str(self.envoy_admin)],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"),
        )
        wait_for(lambda: "Ctrl-C stops" in self.log() or self.process.poll() is not None, "aigw run to serve", timeout=60)
        assert self.process.poll() is None, self.log()

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def metrics_url(self, what):
        found = re.search(rf"aigw: {what}: metrics on (\S+)", self.log())
        assert found, self.log()
        return found.group(1)

    def url(self, path):
        return f"http://127.0.0.1:{self.listener}{path}"

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def mocks():
    with running(MockProvider("budget-openai"), MockAnthropic("budget-anthropic")) as pair:
        yield pair


@pytest.fixture(scope="module")
def run(tmp_path_factory, mocks):
    openai_mock, anthropic_mock = mocks
    listener = free_port()
    running = Run(tmp_path_factory.mktemp("ratelimit"), listener, ratelimit_crs(listener, openai_mock.port, anthropic_mock.port))
    yield running
    code = running.stop()
    assert code == 0, running.log()[-3000:]


def chat(run, model, headers=None, words=2, stream=False):
    body = {"model": model, "messages": [{"role": "user", "content": " ".join(["word"] * words)}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return http("POST", run.url("/v1/chat/completions"), body, headers)


def client(run, tenant):
    return openai.OpenAI(base_url=run.url("/v1"), api_key="unused", default_headers={"x-tenant-id": tenant}, max_retries=0)


def settle():
    """The cost of a request is sent to the rate-limit service when Envoy ends the stream, just
    after the client has its answer."""
    time.sleep(0.3)


def assert_openai_429(status, headers, body):
    assert status == 429, body
    error = json.loads(body)["error"]
    assert error["type"] == "rate_limit_error", error
    assert headers.get("content-type") == "application/json"


def test_a_tenant_is_refused_once_its_budget_is_spent_and_not_before(run):
    sdk = client(run, "tenant-a")
    spent = 0
    for _ in range(3):
        raw = sdk.chat.completions.with_raw_response.create(model="gpt-budget", messages=[{"role": "user", "content": "word word"}])
        completion = raw.parse()
        assert completion.choices[0].message.content == ANSWER
        spent += completion.usage.total_tokens
        # Envoy Gateway's draft-03 rate-limit headers, from the tightest budget (total tokens).
        assert raw.headers["x-ratelimit-limit"].startswith(f"{TOTAL_BUDGET}, "), dict(raw.headers)
        settle()
    assert spent > TOTAL_BUDGET
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.chat.completions.create(model="gpt-budget", messages=[{"role": "user", "content": "word word"}])
    assert refused.value.status_code == 429
    assert refused.value.body["type"] == "rate_limit_error", refused.value.body
    assert refused.value.response.headers["x-ratelimit-remaining"] == "0"
    # Another tenant has its own budget.
    status, _, body = chat(run, "gpt-budget", {"x-tenant-id": "tenant-b"})
    assert status == 200, body


def test_a_budget_is_not_refused_before_it_is_spent(run):
    # Two chats (22 tokens) leave 8 of 30: the third is still served, then charged past it.
    for _ in range(2):
        assert chat(run, "gpt-budget", {"x-tenant-id": "tenant-c"})[0] == 200
        settle()
    status, headers, body = chat(run, "gpt-budget", {"x-tenant-id": "tenant-c"})
    assert status == 200, body
    assert headers["x-ratelimit-remaining"] == str(TOTAL_BUDGET - 22)


def test_a_cel_cost_rule_spends_a_budget_in_one_request(run):
    # Three prompt tokens: the CEL cost is 100,000,000 against a budget of 1,000.
    status, _, body = chat(run, "gpt-budget", {"x-tenant-id": "tenant-cel"}, words=3)
    assert status == 200, body
    settle()
    assert_openai_429(*chat(run, "gpt-budget", {"x-tenant-id": "tenant-cel"}, words=1))


def test_streamed_requests_are_charged_their_streamed_usage(run):
    sdk = client(run, "tenant-stream")
    for _ in range(3):
        stream = sdk.chat.completions.create(model="gpt-budget", messages=[{"role": "user", "content": "word word"}],
                                             stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
        assert chunks[-1].usage.total_tokens == 11
        settle()
    assert_openai_429(*chat(run, "gpt-budget", {"x-tenant-id": "tenant-stream"}, stream=True))


def test_the_messages_api_is_refused_in_anthropics_error_shape(run, mocks):
    body = {"model": "claude-budget", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-tenant-id": "tenant-anthropic", "anthropic-version": "2023-06-01"}
    # 14 tokens each: 14, 28, then 42 is charged past 30.
    for _ in range(3):
        status, _, answer = http("POST", run.url("/anthropic/v1/messages"), body, headers)
        assert status == 200, answer
        assert json.loads(answer)["usage"] == {"input_tokens": 5, "output_tokens": 9}
        settle()
    status, response_headers, answer = http("POST", run.url("/anthropic/v1/messages"), body, headers)
    assert status == 429, answer
    refused = json.loads(answer)
    assert refused["type"] == "error" and refused["error"]["type"] == "rate_limit_error", refused
    assert response_headers.get("content-type") == "application/json"


def test_requests_without_the_selected_header_are_not_limited(run):
    # The budgets are per distinct x-tenant-id: without one, no budget applies.
    for _ in range(4):
        assert chat(run, "gpt-budget")[0] == 200


def test_a_local_rate_limit_counts_requests_per_tenant_in_envoy(run):
    for _ in range(2):
        status, headers, body = chat(run, "gpt-local", {"x-tenant-id": "local-a"})
        assert status == 200, body
    assert_openai_429(*chat(run, "gpt-local", {"x-tenant-id": "local-a"}))
    assert chat(run, "gpt-local", {"x-tenant-id": "local-b"})[0] == 200
    # The Gateway's token budgets do not apply here: the HTTPRoute's own policy replaces them,
    # and a request without a tenant falls in the local default bucket (4294967295 a second).
    headers = {k.lower(): v for k, v in chat(run, "gpt-local", {"x-tenant-id": "local-c"})[1].items()}
    assert not headers["x-ratelimit-limit"].startswith(f"{TOTAL_BUDGET},"), headers
    assert chat(run, "gpt-local")[1]["x-ratelimit-limit"].startswith("4294967295")


def rate_limit_counts(run):
    text = http("GET", run.metrics_url("rate-limit service"))[2].decode()
    counts = {}
    for line in text.splitlines():
        found = re.match(r'aigw_ratelimit_descriptors_total\{limit="([^"]+)",result="(\w+)"\} (\d+)', line)
        if found:
            counts[(found.group(1), found.group(2))] = int(found.group(3))
    return counts


def test_quota_policy_default_bucket_refuses_once_spent(run):
    # 11 tokens each against 15 a minute: the second request is served and spends it.
    for _ in range(2):
        assert chat(run, "q-model")[0] == 200
        settle()
    assert_openai_429(*chat(run, "q-model"))


def test_quota_policy_shadow_bucket_counts_and_never_refuses(run):
    before = sum(v for (limit, result), v in rate_limit_counts(run).items() if result == "shadow_over_limit")
    # 11 tokens each against a shadow budget of 5: every request is served; the ones past the
    # budget are counted as shadow refusals.
    for _ in range(4):
        status, _, body = chat(run, "q-model", {"x-team": "interns"})
        assert status == 200, body
        settle()
    after = sum(v for (limit, result), v in rate_limit_counts(run).items() if result == "shadow_over_limit")
    assert after - before >= 3, rate_limit_counts(run)


def next_second():
    """Sleeps into the next wall-clock second: the service's windows are aligned to the unit."""
    time.sleep(1.05 - time.time() % 1)


def test_a_one_second_budget_recovers_when_its_window_ends(run):
    # Each request costs 100 against 50 a second: the one after it in the same second is
    # refused, and the next second serves again.
    next_second()
    assert chat(run, "q-fast")[0] == 200
    settle()
    assert_openai_429(*chat(run, "q-fast"))
    next_second()
    assert chat(run, "q-fast")[0] == 200


def test_the_limiter_down_lets_requests_through_as_envoy_gateway_does(tmp_path, mocks):
    """Envoy Gateway's rate limits fail open (`failClosed: false`): a request the rate-limit
    service cannot answer is served. The build is started as `aigw run` starts it, without the
    rate-limit service."""
    openai_mock, anthropic_mock = mocks
    listener, admin = free_port(), free_port()
    config = tmp_path / "config"
    config.mkdir()
    (config / "crs.yaml").write_text(ratelimit_crs(listener, openai_mock.port, anthropic_mock.port))
    out = tmp_path / "out"
    built = subprocess.run([str(AIGW), "build", "--target", "envoy", str(config), "-o", str(out), "--envoy-admin-port", str(admin)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert (out / "ratelimit" / "ai_e2e_http.yaml").exists()
    logs = open(tmp_path / "processes.log", "w")
    extproc = subprocess.Popen([str(EXTPROC), "--config", "gateways/ai-e2e/filter-config.yaml", "--listen", "unix:gateways/ai-e2e/extproc.sock",
                                "--admin-listen", f"127.0.0.1:{free_port()}"], cwd=out, stdout=logs, stderr=subprocess.STDOUT)
    envoy = None
    try:
        wait_for(lambda: (out / "gateways" / "ai-e2e" / "extproc.sock").exists(), "extproc socket")
        envoy = subprocess.Popen([envoy_bin(), "-c", "envoy.yaml", "--log-level", "warn", "--use-dynamic-base-id"], cwd=out,
                                 stdout=logs, stderr=subprocess.STDOUT)
        wait_for(lambda: http("GET", f"http://127.0.0.1:{admin}/ready")[0] == 200, "Envoy ready")
        for _ in range(5):
            status, _, body = http("POST", f"http://127.0.0.1:{listener}/v1/chat/completions",
                                   {"model": "gpt-budget", "messages": [{"role": "user", "content": "word word"}]}, {"x-tenant-id": "down"})
            assert status == 200, body
        stats = http("GET", f"http://127.0.0.1:{admin}/stats?filter=ratelimit.failure_mode_allowed")[2].decode()
        allowed = sum(int(n) for n in re.findall(r"ratelimit\.failure_mode_allowed: (\d+)", stats))
        assert allowed >= 5, stats
    finally:
        for process in (envoy, extproc):
            if process:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=20)
