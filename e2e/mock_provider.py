"""A mock OpenAI-compatible provider that records every request it receives.

It answers chat completions (buffered and streamed as server-sent events), embeddings and
legacy completions the way OpenAI does, with deterministic content and usage, so tests can
compare what the client got with what the provider sent. Special models trigger errors:
``error-503`` answers 503 with a plain-text body, ``error-429`` a JSON rate-limit error.
"""

import json
import re
import time

from mockhttp import HttpMock, JsonHandler

# The text every chat answer carries; streamed answers send it word by word.
ANSWER = "The quick brown fox jumps over the lazy dog."


class MockProvider(HttpMock):
    """The OpenAI API described above; ``name`` is the ``system_fingerprint`` of its answers."""

    def __init__(self, name="mock"):
        self.name = name
        super().__init__(self._handler())

    def _handler(self):
        provider = self

        class Handler(JsonHandler):
            def do_POST(self):
                body = self.read_recorded(provider)
                path = self.path.split("?", 1)[0]
                if path.endswith(("/audio/transcriptions", "/audio/translations")):
                    return self._transcribe(body)
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    return self._send(400, {"error": {"message": "mock: bad json", "type": "invalid_request_error"}})
                model = request.get("model", "")
                path = self.path.split("?", 1)[0]
                if model == "error-503":
                    return self._send_raw(503, b"upstream overloaded", "text/plain")
                if model == "error-429":
                    return self._send(429, {"error": {"message": "rate limited by provider", "type": "rate_limit_error", "code": "rate_limit"}})
                if path.endswith("/chat/completions"):
                    if request.get("stream"):
                        return self._stream_chat(request)
                    return self._send(200, chat_completion(request, provider.name))
                if path.endswith("/embeddings"):
                    return self._send(200, embeddings(request))
                if path.endswith("/completions"):
                    return self._send(200, completion(request))
                return self._send(404, {"error": {"message": f"mock: no route {self.path}", "type": "invalid_request_error"}})

            def _transcribe(self, body):
                found = re.search(rb'name="model"\r\n\r\n([^\r]*)\r\n', body)
                if not self.headers.get("content-type", "").startswith("multipart/form-data") or not found:
                    return self._send(400, {"error": {"message": "mock: expected a form with a model", "type": "invalid_request_error"}})
                model = found.group(1).decode()
                return self._send(200, {"text": f"transcribed by {model}",
                                        "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 5, "total_tokens": 19}})

            def _stream_chat(self, request):
                self._start_stream()
                words = ANSWER.split(" ")
                for i, word in enumerate(words):
                    piece = word if i == 0 else " " + word
                    event = {
                        "id": "chatcmpl-mock",
                        "object": "chat.completion.chunk",
                        "created": 1700000000,
                        "model": request["model"],
                        "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                    }
                    self._chunk(f"data: {json.dumps(event)}\n\n".encode())
                    time.sleep(0.005)
                final = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000, "model": request["model"],
                         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self._chunk(f"data: {json.dumps(final)}\n\n".encode())
                if (request.get("stream_options") or {}).get("include_usage"):
                    usage = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000, "model": request["model"],
                             "choices": [], "usage": usage_of(request)}
                    self._chunk(f"data: {json.dumps(usage)}\n\n".encode())
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

        return Handler


def usage_of(request):
    prompt = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", [])) or 1
    completion_tokens = len(ANSWER.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def chat_completion(request, name):
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": request["model"],
        "system_fingerprint": name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": usage_of(request),
    }


def embeddings(request):
    inputs = request.get("input", "")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return {
        "object": "list",
        "model": request["model"],
        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i, _ in enumerate(inputs)],
        "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
    }


def completion(request):
    return {
        "id": "cmpl-mock", "object": "text_completion", "created": 1700000000, "model": request["model"],
        "choices": [{"index": 0, "text": ANSWER, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 9, "total_tokens": 11},
    }


class MockAnthropic(MockProvider):
    """Answers the Anthropic Messages API (buffered and as Anthropic's event stream)."""

    def _handler(self):
        provider = self

        class Handler(JsonHandler):
            def do_POST(self):
                body = self.read_recorded(provider)
                request = json.loads(body or b"{}")
                if self.path != "/v1/messages":
                    return self._send(404, {"type": "error", "error": {"type": "not_found_error", "message": f"no route {self.path}"}})
                if "max_tokens" not in request:
                    return self._send(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
                words = ANSWER.split(" ")
                usage = {"input_tokens": 5, "output_tokens": len(words)}
                if request.get("stream"):
                    self._start_stream()
                    self._event("message_start", {"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": request["model"], "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}})
                    self._event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
                    for i, word in enumerate(words):
                        self._event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word if i == 0 else " " + word}})
                    self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
                    self._event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": len(words)}})
                    self._event("message_stop", {"type": "message_stop"})
                    self._chunk(b"")
                    return
                self._send(200, {"id": "msg_mock", "type": "message", "role": "assistant", "model": request["model"],
                                 "content": [{"type": "text", "text": ANSWER}], "stop_reason": "end_turn", "usage": usage})

            def _event(self, name, payload):
                self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

        return Handler
