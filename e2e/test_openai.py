"""OpenAI-compatible backends through real Envoy and the real extproc."""

import json
import time
import urllib.request
import openai

from conftest import ANTHROPIC_SECRET, AZURE_SECRET, SECRET, http, traffic, wait_for
from mock_provider import ANSWER


def chat(gateway, model, **extra):
    return http("POST", gateway.url("/v1/chat/completions"), {"model": model, "messages": [{"role": "user", "content": "say hello"}], **extra})


def test_chat_buffered_reaches_the_provider_with_the_key_and_returns_its_answer(gateway):
    status, headers, body = chat(gateway, "gpt-4o-mini")
    assert status == 200, body
    answer = json.loads(body)
    assert answer["choices"][0]["message"]["content"] == ANSWER
    [received] = gateway.primary.received()
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {SECRET}"
    assert received.headers["x-ai-eg-model"] == "gpt-4o-mini"
    assert received.json()["model"] == "gpt-4o-mini"
    assert SECRET not in body.decode() and SECRET not in json.dumps(headers)


def test_chat_streaming_passes_chunks_through_unchanged(gateway):
    request = urllib.request.Request(
        gateway.url("/v1/chat/completions"),
        data=json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    text, events = "", 0
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: "):])
            events += 1
            for choice in event.get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    assert text == ANSWER
    assert events > 5
    [received] = gateway.primary.received()
    # Costs are configured, so the extproc asks the provider for usage in the stream.
    assert received.json()["stream_options"] == {"include_usage": True}


def test_embeddings(gateway):
    status, _, body = http("POST", gateway.url("/v1/embeddings"), {"model": "text-embedding-3-small", "input": ["a", "b"]})
    assert status == 200, body
    assert [d["index"] for d in json.loads(body)["data"]] == [0, 1]
    assert gateway.primary.received()[0].path == "/v1/embeddings"


def test_audio_uploads_reach_the_provider_byte_for_byte_with_the_model_overridden(gateway):
    audio = b"RIFF\x24\x00\x00\x00WAVEfmt \r\n--not-a-boundary\r\n" + bytes(range(256))
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="client-key", max_retries=0)
    result = client.audio.transcriptions.create(model="renamed", file=("speech.wav", audio, "audio/wav"))
    assert result.text == "transcribed by upstream-model"
    (received,) = gateway.primary.received()
    assert received.path == "/v1/audio/transcriptions"
    headers = {k.lower(): v for k, v in received.headers.items()}
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    assert audio in received.body, "the uploaded file must reach the provider unchanged"
    assert b'name="model"\r\n\r\nupstream-model\r\n' in received.body
    assert b"renamed" not in received.body


def test_models_are_listed_by_the_extproc(gateway):
    status, _, body = http("GET", gateway.url("/v1/models"))
    assert status == 200, body
    ids = {m["id"] for m in json.loads(body)["data"]}
    assert {"gpt-4o-mini", "text-embedding-3-small", "renamed", "split"} <= ids
    assert gateway.primary.received() == []


def test_client_mistakes_get_openai_errors_and_never_reach_the_provider(gateway):
    cases = [
        (chat(gateway, "no-such-model"), 404, "model_not_found"),
        (http("POST", gateway.url("/v1/chat/completions"), b"{not json"), 400, "invalid_json"),
        (http("POST", gateway.url("/v1/chat/completions"), {"messages": []}), 400, "missing_model"),
        (http("POST", gateway.url("/v1/chat/completions"), {"model": "gpt-4o-mini", "pad": "x" * (1024 * 1024 + 10)}), 413, "request_too_large"),
        (http("POST", gateway.url("/v1/unknown"), {"model": "gpt-4o-mini"}), 404, "unsupported_path"),
    ]
    for (status, headers, body), want_status, want_code in cases:
        assert status == want_status, body
        error = json.loads(body)["error"]
        assert error["code"] == want_code
        assert error["message"]
        assert headers.get("content-type", "").startswith("application/json")
    assert gateway.primary.received() == []


def test_model_override_is_what_the_provider_sees(gateway):
    status, _, body = chat(gateway, "renamed")
    assert status == 200, body
    [received] = gateway.primary.received()
    assert received.json()["model"] == "upstream-model"
    assert received.headers["x-ai-eg-model"] == "renamed"


def test_weights_split_traffic(gateway):
    total = 400
    for _ in range(total):
        status, _, body = chat(gateway, "split")
        assert status == 200, body
    secondary = len(gateway.secondary.received())
    primary = len(gateway.primary.received())
    assert primary + secondary == total
    share = secondary / total
    assert 0.19 <= share <= 0.31, f"secondary got {share:.1%}, configured 25%"


def test_costs_reach_envoy_dynamic_metadata(gateway):
    # A prompt of 37 words makes this request's usage recognisable in the access log.
    status, _, body = http("POST", gateway.url("/v1/chat/completions"),
                           {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": " ".join(["word"] * 37)}]})
    assert status == 200
    usage = json.loads(body)["usage"]
    assert usage["prompt_tokens"] == 37

    def logged():
        return [
            e["io.envoy.ai_gateway"]
            for e in gateway.access_log()
            if isinstance(e.get("io.envoy.ai_gateway"), dict)
            and e["io.envoy.ai_gateway"].get("model_name_override") == "gpt-4o-mini"
            and str(e["io.envoy.ai_gateway"].get("llm_input_token")) == "37"
        ]

    wait_for(lambda: len(logged()) > 0, "an access log entry with costs", gateway)
    metadata = logged()[-1]
    assert int(metadata["llm_total_token"]) == usage["total_tokens"]
    assert int(metadata["llm_input_token"]) == usage["prompt_tokens"]
    assert int(metadata["llm_output_token"]) == usage["completion_tokens"]
    assert int(metadata["weighted_cost"]) == usage["prompt_tokens"] + 2 * usage["completion_tokens"]
    assert metadata["backend_name"] == "ai/primary/route/ai/chat/rule/0/ref/0"
    assert metadata["route_name"] == "ai/chat"


def test_upstream_errors_keep_their_status_in_the_openai_shape(gateway):
    status, _, body = chat(gateway, "error-503")
    assert status == 503
    assert json.loads(body)["error"]["message"] == "upstream overloaded"
    status, _, body = chat(gateway, "error-429")
    assert status == 429
    assert json.loads(body)["error"]["code"] == "rate_limit"


def test_metrics_are_exposed(gateway):
    chat(gateway, "gpt-4o-mini")
    status, _, body = http("GET", f"http://127.0.0.1:{gateway.extproc_admin}/metrics")
    assert status == 200
    text = body.decode()
    assert "gen_ai_client_token_usage_bucket" in text
    assert 'gen_ai_request_model="gpt-4o-mini"' in text
    assert "gen_ai_server_request_duration_seconds" in text
    assert SECRET not in text


def test_config_reload_under_traffic_loses_no_request(gateway):
    """A new model on an existing rule: the extproc's config changes, Envoy's routes do not."""
    with traffic(lambda: chat(gateway, "gpt-4o-mini")) as load:
        time.sleep(0.3)
        assert chat(gateway, "added-later")[0] == 404
        gateway.write_crs(extra_models=["added-later"])
        started = time.time()
        gateway.build()
        wait_for(lambda: chat(gateway, "added-later")[0] == 200, "the new model to be served", gateway, timeout=5)
        took = time.time() - started
        time.sleep(0.3)
    assert load.failures == [], load.failures[:3]
    assert load.sent > 5
    assert took < 1.5, f"reload took {took:.2f}s"
    assert "configuration reloaded" in gateway.log_text("extproc")
    status, _, body = http("GET", gateway.url("/v1/models"))
    assert "added-later" in {m["id"] for m in json.loads(body)["data"]}


def test_openai_python_sdk(gateway):


    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="not-used-by-the-gateway")
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert completion.choices[0].message.content == ANSWER
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == ANSWER
    vectors = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(vectors.data[0].embedding) == 3
    models = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in models
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected NotFoundError")
    except openai.NotFoundError as error:
        assert error.status_code == 404
    # The client's own key never reaches the provider: the gateway's does.
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in gateway.primary.received())


def test_azure_openai_gets_the_deployment_path_and_api_key(gateway):
    status, _, body = chat(gateway, "azure-gpt")
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == ANSWER
    [received] = gateway.secondary.received()
    assert received.path == "/openai/deployments/gpt-4o-deployment/chat/completions?api-version=2025-01-01-preview"
    assert received.headers["api-key"] == AZURE_SECRET
    assert "authorization" not in received.headers
    assert received.json()["model"] == "gpt-4o-deployment"


def test_anthropic_backend_through_the_openai_sdk(gateway, anthropic_provider):


    anthropic_provider.clear()
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="client-key")
    completion = client.chat.completions.create(
        model="claude-chat", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}], max_tokens=64
    )
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 5
    stream = client.chat.completions.create(model="claude-chat", messages=[{"role": "user", "content": "hello"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == ANSWER
    buffered, streamed = anthropic_provider.received()
    for received in (buffered, streamed):
        assert received.path == "/v1/messages"
        assert received.headers["x-api-key"] == ANTHROPIC_SECRET
        assert received.headers["anthropic-version"] == "2023-06-01"
        assert received.headers.get("authorization") != "Bearer client-key"
        assert received.json()["model"] == "claude-sonnet-4-5"
    assert buffered.json()["system"] == "be brief"
    assert buffered.json()["max_tokens"] == 64
    assert streamed.json()["stream"] is True
