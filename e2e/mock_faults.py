"""A provider that misbehaves on demand, written on raw sockets so every byte, pause and reset
is under the test's control.

The fault is named by the request's model: everything after the first `-` (`oa-nonjson`,
`an-nonjson` both mean `nonjson`). Chat completions and Anthropic Messages are answered in their
own shapes when the fault is `ok`. Every request is recorded.
"""

import json
import socket
import struct
import threading
import time

from mockhttp import RequestLog

# Body of a hang: how long the provider holds a connection before giving up itself.
HANG_SECONDS = 30


def chat_answer(model):
    return {"id": "chatcmpl-f", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def messages_answer(model):
    return {"id": "msg_f", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "fine"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 1}}


class FaultyProvider(RequestLog):
    """Records each request as (method, path, headers, body)."""

    def __init__(self):
        super().__init__()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self.stopping.set()
        self.listener.close()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            with conn:
                conn.settimeout(HANG_SECONDS + 5)
                while self._one(conn):
                    pass
        except OSError:
            pass

    def _read_request(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        return method, path, headers, body

    def _one(self, conn):
        request = self._read_request(conn)
        if request is None:
            return False
        method, path, headers, body = request
        self.record((method, path, headers, body))
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            parsed = {}
        model = parsed.get("model") if isinstance(parsed, dict) else None
        model = model if isinstance(model, str) else ""
        # Anthropic backends get the model in the body too (the Messages API).
        fault = model.split("-", 1)[1] if "-" in model else "ok"
        messages = path.split("?")[0].endswith("/messages")
        handler = getattr(self, "fault_" + fault.replace("-", "_"), None)
        if handler is None:
            handler = self.fault_ok
        return handler(conn, model, messages, parsed)

    @staticmethod
    def respond(conn, status, body, content_type="application/json", reason="OK"):
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body)
        return True

    @staticmethod
    def start_stream(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")

    @staticmethod
    def chunk(conn, data):
        conn.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def fault_ok(self, conn, model, messages, request):
        answer = messages_answer(model) if messages else chat_answer(model)
        return self.respond(conn, 200, json.dumps(answer).encode())

    def fault_nonjson(self, conn, model, messages, request):
        return self.respond(conn, 200, b"not json")

    def fault_truncated(self, conn, model, messages, request):
        return self.respond(conn, 200, b'{"id": "chatcmpl-f", "choices": [{"index": 0, "mess')

    def fault_empty(self, conn, model, messages, request):
        return self.respond(conn, 200, b"")

    def fault_jsonstream(self, conn, model, messages, request):
        # Asked for a stream, answers one JSON document.
        return self.fault_ok(conn, model, messages, request)

    def fault_cutstream(self, conn, model, messages, request):
        self.start_stream(conn)
        if messages:
            self.chunk(conn, b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"x","content":[],"usage":{"input_tokens":1,"output_tokens":0}}}\n\n')
            self.chunk(conn, b'event: content_block_delta\ndata: {"type":"content_block_del')
        else:
            self.chunk(conn, b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"x","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n')
            self.chunk(conn, b'data: {"id":"c","object":"chat.completion.ch')
        time.sleep(0.2)
        return False  # the connection closes mid-event, without the last chunk

    def fault_hangheaders(self, conn, model, messages, request):
        self._hold(conn)
        return False

    def fault_hangbody(self, conn, model, messages, request):
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        self._hold(conn)
        return False

    def fault_hangstream(self, conn, model, messages, request):
        self.start_stream(conn)
        self.chunk(conn, b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"x","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n')
        self._hold(conn)
        return False

    def fault_reset(self, conn, model, messages, request):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        return False

    def fault_html500(self, conn, model, messages, request):
        return self.respond(conn, 500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", "text/html", "Internal Server Error")

    def fault_html503(self, conn, model, messages, request):
        return self.respond(conn, 503, b"<html><body>Service Unavailable</body></html>", "text/html", "Service Unavailable")

    def fault_huge(self, conn, model, messages, request):
        size = 100 * 1024 * 1024
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
        conn.sendall(head.encode() + b'{"pad": "')
        block = b"x" * (1024 * 1024)
        sent = 9
        try:
            while sent + len(block) < size - 2:
                conn.sendall(block)
                sent += len(block)
            conn.sendall(b"x" * (size - 2 - sent) + b'"}')
        except OSError:
            pass
        return False

    def _hold(self, conn):
        # Until the gateway gives up (it closes the connection) or the hang ends.
        conn.settimeout(HANG_SECONDS)
        try:
            while conn.recv(1024):
                pass
        except OSError:
            pass
