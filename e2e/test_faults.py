"""Faults, through real Envoy and the real extproc: a provider that misbehaves, clients that
misbehave, and configuration reloads that go wrong, under traffic.

Every case asserts the status and error shape the client gets, that nothing waits past its
timeout, and that neither Envoy nor the extproc dies. Each case is bounded in time.
"""

import http.client as http_client
import json
import socket
import time
from pathlib import Path

import pytest

from conftest import Gateway, http, running, traffic, wait_for
from crs import api_key, endpoint, route, service_backend
from crs import gateway as gateway_crs
from mock_faults import FaultyProvider

# The route timeout of the faulty rules: a hanging provider is given up after this.
ROUTE_TIMEOUT = 2
# How long a client may take to send its request (the listener's request timeout, set at build).
REQUEST_RECEIVE_TIMEOUT = 2
FAULT_KEY = "sk-faults-planted-0b1e"
ROTATED_KEY = "sk-faults-rotated-77c2"


def fault_crs(listener, port):
    rules = ""
    for prefix, backend in (("oa", "faulty-openai"), ("an", "faulty-anthropic")):
        rules += f"""  - matches: [{{headers: [{{type: RegularExpression, name: x-ai-eg-model, value: '{prefix}-.*'}}]}}]
    backendRefs: [{{name: {backend}}}]
    timeouts: {{request: {ROUTE_TIMEOUT}s}}
"""
    return "".join([
        gateway_crs(listener),
        route("faults", rules, [("llm_total_token", "TotalToken")]),
        service_backend("faulty-openai", "OpenAI", "faulty"),
        service_backend("faulty-anthropic", "Anthropic", "faulty"),
        endpoint("faulty", port),
        api_key("openai-key", "faulty-openai", FAULT_KEY),
        api_key("anthropic-key", "faulty-anthropic", FAULT_KEY, "AnthropicAPIKey"),
    ])


class FaultGateway(Gateway):
    def write_crs(self, extra_models=()):
        (self.config_dir / "crs.yaml").write_text(fault_crs(self.listener, self.primary.port))


@pytest.fixture(scope="module")
def faulty():
    with running(FaultyProvider()) as (provider,):
        yield provider


@pytest.fixture(scope="module")
def gw(tmp_path_factory, faulty):
    gateway = FaultGateway(tmp_path_factory.mktemp("faults"), faulty, faulty, max_body=1024 * 1024)
    gateway.build_args = ["--request-receive-timeout", f"{REQUEST_RECEIVE_TIMEOUT}s"]
    gateway.start()
    yield gateway
    codes = gateway.stop()
    assert codes.get("extproc") == 0, f"aigw-extproc did not exit cleanly: {codes}\n{gateway.log_text('extproc')[-3000:]}"


@pytest.fixture(autouse=True)
def alive(gw):
    """After every case, both processes still run and the gateway still serves."""
    yield
    for name, process in gw.processes.items():
        assert process.poll() is None, f"{name} died\n{gw.log_text(name)[-3000:]}"
    status, _, body = chat(gw, "oa-ok")
    assert status == 200, body


def chat(gw, model, stream=False, timeout=10):
    request = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        request["stream"] = True
    return http("POST", gw.url("/v1/chat/completions"), request, timeout=timeout)


def messages(gw, model, stream=False, timeout=10):
    request = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        request["stream"] = True
    return http("POST", gw.url("/anthropic/v1/messages"), request, timeout=timeout)


def openai_error(status, body, expected_status):
    assert status == expected_status, body[:300]
    error = json.loads(body)["error"]
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    return error


def anthropic_error(status, body, expected_status):
    assert status == expected_status, body[:300]
    answer = json.loads(body)
    assert answer["type"] == "error", answer
    assert answer["error"]["type"] and answer["error"]["message"], answer
    return answer["error"]


def timed(call):
    started = time.time()
    result = call()
    return result, time.time() - started


# --- the provider misbehaves ---------------------------------------------------------------

@pytest.mark.parametrize("fault", ["nonjson", "truncated", "empty"])
def test_a_broken_success_is_a_502_in_the_client_shape(gw, fault):
    openai_error(*chat(gw, f"oa-{fault}")[::2], 502)
    openai_error(*chat(gw, f"an-{fault}")[::2], 502)
    anthropic_error(*messages(gw, f"an-{fault}")[::2], 502)


@pytest.mark.parametrize("family", ["oa", "an"])
def test_json_answering_a_stream_request_is_a_502(gw, family):
    error = openai_error(*chat(gw, f"{family}-jsonstream", stream=True)[::2], 502)
    assert "event stream" in error["message"]
    anthropic_error(*messages(gw, "an-jsonstream", stream=True)[::2], 502)


def read_stream(gw, path, request, timeout):
    """Reads a streamed answer to its end or to a failure; returns (status, bytes, failure)."""
    connection = http_client.HTTPConnection("127.0.0.1", gw.listener, timeout=timeout)
    connection.request("POST", path, json.dumps(request), {"content-type": "application/json"})
    response = connection.getresponse()
    data, failure = b"", None
    try:
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            data += chunk
    except (http_client.IncompleteRead, ConnectionError, OSError) as err:
        failure = err
    connection.close()
    return response.status, data, failure


@pytest.mark.parametrize("path,model", [
    ("/v1/chat/completions", "oa-cutstream"),
    ("/v1/chat/completions", "an-cutstream"),
    ("/anthropic/v1/messages", "an-cutstream"),
])
def test_a_stream_cut_mid_event_ends_with_an_error_not_a_hang(gw, path, model):
    request = {"model": model, "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    (status, data, failure), took = timed(lambda: read_stream(gw, path, request, timeout=10))
    assert status == 200
    assert took < 5, took
    # Either the connection is reset before the end, or an error event says what happened;
    # never a clean end of stream.
    assert failure is not None or b"error" in data, data
    assert b"[DONE]" not in data


@pytest.mark.parametrize("model", ["oa-hangheaders", "an-hangheaders"])
def test_a_provider_that_never_answers_is_a_504_at_the_route_timeout(gw, model):
    ((status, _, body), took) = timed(lambda: chat(gw, model, timeout=10))
    openai_error(status, body, 504)
    assert ROUTE_TIMEOUT - 0.5 < took < ROUTE_TIMEOUT + 3, took
    ((status, _, body), took) = timed(lambda: messages(gw, "an-hangheaders", timeout=10))
    anthropic_error(status, body, 504)


def test_a_provider_that_stops_after_its_headers_is_given_up_at_the_route_timeout(gw):
    ((status, _, body), took) = timed(lambda: chat(gw, "oa-hangbody", timeout=10))
    openai_error(status, body, 504)
    assert took < ROUTE_TIMEOUT + 3, took
    request = {"model": "oa-hangstream", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    (result, took) = timed(lambda: read_stream(gw, "/v1/chat/completions", request, timeout=10))
    status, data, failure = result
    assert status == 200 and b"chat.completion.chunk" in data
    assert failure is not None or b"error" in data
    assert took < ROUTE_TIMEOUT + 3, took


def test_a_reset_connection_is_a_5xx_in_the_client_shape(gw):
    error = openai_error(*chat(gw, "oa-reset")[::2], 503)
    assert "reset" in error["message"] or "upstream" in error["message"], error
    anthropic_error(*messages(gw, "an-reset")[::2], 503)


@pytest.mark.parametrize("status", [500, 503])
def test_html_errors_keep_their_status_in_the_client_shape(gw, status):
    openai_error(*chat(gw, f"oa-html{status}")[::2], status)
    openai_error(*chat(gw, f"an-html{status}")[::2], status)
    anthropic_error(*messages(gw, f"an-html{status}")[::2], status)


def test_a_100_mb_answer_is_a_502_in_the_client_shape(gw):
    ((status, _, body), took) = timed(lambda: chat(gw, "oa-huge", timeout=20))
    openai_error(status, body, 502)
    anthropic_error(*messages(gw, "an-huge", timeout=20)[::2], 502)
    assert took < 10, took


# --- the client misbehaves -----------------------------------------------------------------

def test_client_mistakes_are_400s_that_never_reach_the_provider(gw, faulty):
    faulty.clear()
    cases = [
        (b"{not json", "invalid_json"),
        (json.dumps({"model": "oa-" + "m" * 70_000, "messages": []}).encode(), "invalid_model"),
        (json.dumps({"model": "oa-a\u0000b", "messages": []}).encode(), "invalid_model"),
        (json.dumps({"model": "oa-a\r\nx-evil: 1", "messages": []}).encode(), "invalid_model"),
        (json.dumps({"model": 42, "messages": []}).encode(), "invalid_model"),
    ]
    for body, code in cases:
        status, _, answer = http("POST", gw.url("/v1/chat/completions"), body)
        assert openai_error(status, answer, 400)["code"] == code
    status, _, answer = http("POST", gw.url("/anthropic/v1/messages"), json.dumps({"model": 42}).encode())
    anthropic_error(status, answer, 400)
    assert faulty.received() == []


def test_thousands_of_distinct_long_models_keep_metrics_small(gw):
    def metrics_size():
        return len(http("GET", f"http://127.0.0.1:{gw.extproc_admin}/metrics")[2])

    for i in range(600):
        status, _, body = chat(gw, f"oa-{i:04d}-" + "x" * 240)
        assert status == 200, body
    first = metrics_size()
    for i in range(600, 1200):
        chat(gw, f"oa-{i:04d}-" + "y" * 240)
    assert metrics_size() < first * 1.01 + 1000, "metrics kept growing"
    assert first < 4 << 20, first


def test_a_client_that_stops_sending_is_timed_out(gw):
    with socket.create_connection(("127.0.0.1", gw.listener), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 100\r\n\r\n{")
        started = time.time()
        answer = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                answer += data
        except socket.timeout:
            pytest.fail("the gateway waited more than 10 s for the rest of the body")
        took = time.time() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert took < REQUEST_RECEIVE_TIMEOUT + 2, took
    body = answer.partition(b"\r\n\r\n")[2]
    assert b'"error"' in body, body


def test_a_client_leaving_mid_stream_is_counted_and_harms_nothing(gw):
    connection = http_client.HTTPConnection("127.0.0.1", gw.listener, timeout=10)
    connection.request("POST", "/v1/chat/completions", json.dumps(
        {"model": "oa-hangstream", "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
        {"content-type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert b"chat.completion.chunk" in response.read1(65536)
    connection.sock.close()
    connection.close()
    wait_for(lambda: 'gen_ai_original_model="oa-hangstream"' in http(
        "GET", f"http://127.0.0.1:{gw.extproc_admin}/metrics")[2].decode(), "the abandoned stream counted", gw, timeout=ROUTE_TIMEOUT + 3)


# --- the configuration changes badly, under traffic -----------------------------------------

def test_reload_faults_under_traffic_lose_no_request(gw, faulty):
    config = gw.instance_dir / "filter-config.yaml"
    original = config.read_text()

    def last_key():
        return faulty.received()[-1][2].get("authorization")

    def reload_failures():
        text = http("GET", f"http://127.0.0.1:{gw.extproc_admin}/metrics")[2].decode()
        line = [l for l in text.splitlines() if l.startswith('aigw_extproc_config_reloads_total{result="failure"}')]
        return int(float(line[0].rsplit(" ", 1)[1])) if line else 0

    try:
        with traffic(lambda: chat(gw, "oa-ok")) as load:
            time.sleep(0.3)
            before = reload_failures()
            # Garbage: rejected, counted, the old configuration keeps serving.
            config.write_text("routes: [not closed\n")
            wait_for(lambda: reload_failures() > before, "the garbage to be rejected", gw, timeout=5)
            assert last_key() == f"Bearer {FAULT_KEY}"

            # A configuration naming a key file that appears only later.
            waiting = original.replace("secrets/openai-key/apiKey", "secrets/rotated/apiKey")
            assert waiting != original, original
            config.write_text(waiting)
            wait_for(lambda: reload_failures() > before + 1, "the waiting config to be rejected", gw, timeout=5)
            time.sleep(0.3)
            assert last_key() == f"Bearer {FAULT_KEY}"
            rotated = gw.instance_dir / "secrets" / "rotated"
            rotated.mkdir()
            (rotated / "apiKey").write_text(ROTATED_KEY)
            wait_for(lambda: last_key() == f"Bearer {ROTATED_KEY}", "the waiting config to load", gw, timeout=5)

            # A secret rotated in place.
            (rotated / "apiKey").write_text(FAULT_KEY)
            wait_for(lambda: last_key() == f"Bearer {FAULT_KEY}", "the rotated key", gw, timeout=5)
    finally:
        config.write_text(original)
    assert load.failures == [], load.failures[:3]
    assert load.sent > 10
    log = gw.log_text("extproc")
    for key in (FAULT_KEY, ROTATED_KEY):
        assert key not in log


def test_a_body_over_envoys_buffer_is_a_413_in_the_client_shape(gw, faulty):
    faulty.clear()
    # Twice the extproc's limit is what Envoy buffers; past it Envoy answers itself.
    padding = "p" * (2 * 1024 * 1024 + 10)
    body = json.dumps({"model": "oa-ok", "messages": [{"role": "user", "content": padding}]}).encode()
    status, _, answer = http("POST", gw.url("/v1/chat/completions"), body)
    openai_error(status, answer, 413)
    status, _, answer = http("POST", gw.url("/anthropic/v1/messages"), body)
    anthropic_error(status, answer, 413)
    assert faulty.received() == []
