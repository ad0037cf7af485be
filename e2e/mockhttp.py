"""What the mock servers share: a log of the requests they received and a threaded HTTP server.

- ``RequestLog``: the requests a mock received (``received()``, ``clear()``), safe to share
  between the threads that serve it.
- ``HttpMock``: a ``RequestLog`` served by a ``ThreadingHTTPServer`` on a random port of
  127.0.0.1 (``start()``, ``stop()``, ``port``, ``url``).
- ``JsonHandler``: the request handler the HTTP mocks derive from: it records a request and
  answers JSON, plain bodies or a chunked event stream.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorded:
    """One request as a mock received it."""

    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self):
        return json.loads(self.body)


class RequestLog:
    """The requests a mock received, in the order they arrived."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()

    def record(self, request):
        with self.lock:
            self.requests.append(request)
        return request

    def clear(self):
        with self.lock:
            self.requests.clear()

    def received(self):
        with self.lock:
            return list(self.requests)


class HttpMock(RequestLog):
    """A threaded HTTP server with ``handler`` on a random port of 127.0.0.1."""

    def __init__(self, handler, poll_interval=0.5):
        super().__init__()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class JsonHandler(BaseHTTPRequestHandler):
    """Response helpers shared by the mock providers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_recorded(self, provider):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length) if length else b""
        provider.record(Recorded("POST", self.path, dict(self.headers), body))
        return body

    def _send(self, status, payload):
        self._send_raw(status, json.dumps(payload).encode(), "application/json")

    def _send_raw(self, status, data, content_type):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def _chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
