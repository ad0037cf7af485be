"""Mock cloud providers and token servers that check what they receive the way the real ones do.

Every mock is a threaded HTTP server on 127.0.0.1 with a random port that records each request
(``received()``) and answers in the provider's own format:

- ``MockBedrock``: AWS Bedrock runtime. Every request's SigV4 signature is recomputed with
  botocore from the known test credentials and compared byte for byte with the Authorization
  header; a mismatch is answered 403 ``InvalidSignatureException`` as AWS does. Serves Converse,
  ConverseStream (binary ``application/vnd.amazon.eventstream`` frames, written in several TCP
  writes with frames split across them), Titan text embeddings and Claude InvokeModel /
  InvokeModelWithResponseStream.
- ``MockVertex``: GCP Vertex AI. Accepts only access tokens that ``MockGoogleOAuth`` issued and
  only the configured project and location; serves Gemini ``generateContent`` /
  ``streamGenerateContent?alt=sse`` and Claude ``rawPredict`` / ``streamRawPredict``.
- ``MockGoogleOAuth``: the Google OAuth token endpoint for service-account keys (JWT-bearer
  grant); verifies the assertion's RS256 signature with the key's public key and its claims.
- ``MockEntra``: the Entra ID v2 token endpoint (client secret or federated client assertion).
- ``MockAzureOpenAI``: an Azure OpenAI resource that accepts only tokens ``MockEntra`` issued.
- ``MockSts`` and ``MockOidcProvider``: AWS STS ``AssumeRoleWithWebIdentity`` and an OIDC
  identity provider (discovery and client-credentials grant) for the OIDC-exchange flows.

``service_account_key`` makes a GCP service-account key file (RSA 2048, PKCS#8 PEM).
"""

import base64
import datetime
import hashlib
import json
import re
import secrets
import socket
import struct
import time
import urllib.parse
import uuid
import zlib

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mock_provider import ANSWER, MockProvider
from mockhttp import HttpMock, JsonHandler, Recorded

WORDS = ANSWER.split(" ")
# The pieces a streamed answer is sent in: "The", " quick", " brown", ...
PIECES = [w if i == 0 else " " + w for i, w in enumerate(WORDS)]
GCP_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BAD_SIGNATURE = ("The request signature we calculated does not match the signature you provided. "
                 "Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")


def words_in(text):
    return max(1, len(str(text).split()))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class MockServer(HttpMock):
    """A threaded HTTP server that records every request and hands it to ``handle``."""

    name = "mock"

    def __init__(self):
        owner = self

        class Handler(JsonHandler):
            def do_POST(self):
                owner._dispatch(self, "POST")

            def do_GET(self):
                owner._dispatch(self, "GET")

        super().__init__(Handler, poll_interval=0.05)

    def _dispatch(self, handler, method):
        if handler.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    handler.rfile.readline()
                    break
                body += handler.rfile.read(size)
                handler.rfile.readline()
        else:
            length = int(handler.headers.get("content-length") or 0)
            body = handler.rfile.read(length) if length else b""
        recorded = Recorded(method, handler.path, dict(handler.headers), body)
        recorded.problem = None  # why the mock refused the request, if it did
        self.record(recorded)
        try:
            self.handle(handler, recorded)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as error:  # a bug in the mock: make it visible to the test
            recorded.problem = f"mock error: {error!r}"
            send(handler, 500, {"message": f"{self.name} mock error: {error!r}"})

    def handle(self, handler, recorded):
        raise NotImplementedError


class TokenServer(MockServer):
    """A MockServer that issues tokens; ``tokens()`` are those it issued."""

    def __init__(self):
        super().__init__()
        self.issued = []

    def tokens(self):
        with self.lock:
            return set(self.issued)

    def issue(self, token):
        with self.lock:
            self.issued.append(token)
        return token


def send(handler, status, payload, headers=None, content_type="application/json"):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("content-type", content_type)
    handler.send_header("content-length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)
    handler.wfile.flush()


def start_chunked(handler, content_type, headers=None):
    handler.send_response(200)
    handler.send_header("content-type", content_type)
    handler.send_header("transfer-encoding", "chunked")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.flush()
    # Small writes leave as separate TCP segments, so Envoy sees them as separate chunks.
    handler.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def write_chunk(handler, data):
    handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    handler.wfile.flush()


def end_chunked(handler):
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()


def form_of(recorded):
    return {k: v[0] for k, v in urllib.parse.parse_qs(recorded.body.decode(), keep_blank_values=True).items()}


# --- AWS event stream ---------------------------------------------------------------------------


def event_frame(headers, payload):
    """One ``application/vnd.amazon.eventstream`` message with string (type 7) headers."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def bedrock_event(event_type, payload):
    return event_frame({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                       json.dumps(payload).encode())


def split_writes(frames):
    """The concatenated frames cut into writes that never end on a frame boundary (except the last)."""
    data = b"".join(frames)
    boundaries, offset = set(), 0
    for frame in frames:
        offset += len(frame)
        boundaries.add(offset)
    writes, start = [], 0
    # Roughly 1.5 frames per write, nudged off any frame boundary.
    step = max(8, (len(data) * 3) // (2 * len(frames)))
    while start < len(data):
        end = min(len(data), start + step)
        while end in boundaries and end < len(data):
            end += 1
        writes.append(data[start:end])
        start = end
    return writes


# --- AWS Bedrock --------------------------------------------------------------------------------

AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})")
CONVERSE_KEYS = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
                 "promptVariables", "additionalModelResponseFieldPaths", "requestMetadata", "performanceConfig"}
TITAN_KEYS = {"inputText", "dimensions", "normalize", "embeddingTypes"}


class MockBedrock(MockServer):
    """Bedrock runtime for ``region``; ``credentials`` maps access key id -> (secret, session token)."""

    name = "bedrock"

    def __init__(self, region, credentials):
        super().__init__()
        self.region = region
        self.credentials = dict(credentials)

    def allow(self, access_key_id, secret_access_key, session_token=None):
        with self.lock:
            self.credentials[access_key_id] = (secret_access_key, session_token)

    def signature_problem(self, recorded):
        """None when the request is signed correctly, else why not."""
        headers = recorded.headers
        auth = headers.get("authorization")
        if not auth:
            return "no Authorization header"
        match = AUTHORIZATION.fullmatch(auth)
        if not match:
            return "malformed Authorization header"
        with self.lock:
            known = self.credentials.get(match["key"])
        if known is None:
            return f"unknown access key id {match['key']}"
        secret, token = known
        if match["service"] != "bedrock" or match["region"] != self.region:
            return f"credential scope {match['region']}/{match['service']}, expected {self.region}/bedrock"
        amz_date = headers.get("x-amz-date", "")
        try:
            signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            return f"bad X-Amz-Date {amz_date!r}"
        if amz_date[:8] != match["date"]:
            return "credential scope date differs from X-Amz-Date"
        if abs((datetime.datetime.now(datetime.timezone.utc) - signed_at).total_seconds()) > 300:
            return "X-Amz-Date is more than 5 minutes off"
        names = match["signed"].split(";")
        if names != sorted(names) or "host" not in names:
            return f"SignedHeaders {match['signed']} not sorted or without host"
        missing = [n for n in names if n not in headers]
        if missing:
            return f"signed headers not received: {missing}"
        if "x-amz-content-sha256" in headers and headers["x-amz-content-sha256"] != hashlib.sha256(recorded.body).hexdigest():
            return "x-amz-content-sha256 is not the body's hash"
        if token is not None and headers.get("x-amz-security-token") != token:
            return "temporary credentials without their X-Amz-Security-Token"
        request = AWSRequest(method=recorded.method, url=f"http://{headers['host']}{recorded.path}", data=recorded.body,
                             headers={n: headers[n] for n in names})
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(match["key"], secret, token), "bedrock", self.region)
        canonical = signer.canonical_request(request)
        signature = signer.signature(signer.string_to_sign(request, canonical), request)
        expected = (f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
                    f"SignedHeaders={signer.signed_headers(signer.headers_to_sign(request))}, Signature={signature}")
        if auth != expected:
            return "signature mismatch; canonical request was:\n" + canonical
        return None

    def handle(self, h, recorded):
        request_id = str(uuid.uuid4())
        base = {"x-amzn-requestid": request_id}
        recorded.request_id = request_id
        problem = self.signature_problem(recorded)
        if problem:
            recorded.problem = problem
            return send(h, 403, {"message": BAD_SIGNATURE}, {
                **base, "x-amzn-errortype": "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/"})
        match = re.fullmatch(r"/model/([^/?]+)/(converse|converse-stream|invoke|invoke-with-response-stream|count-tokens)", recorded.path)
        if not match:
            return send(h, 404, {"message": f"Unknown operation {recorded.path}"}, {**base, "x-amzn-errortype": "UnknownOperationException"})
        model, action = urllib.parse.unquote(match[1]), match[2]
        recorded.model, recorded.action = model, action
        try:
            request = json.loads(recorded.body)
        except ValueError:
            return self._validation(h, base, "Malformed input request, please reformat your input and try again.")
        if action == "count-tokens":
            # CountTokens takes exactly one of the two request forms, and no inference settings.
            forms = request.get("input") if set(request) == {"input"} else None
            if not isinstance(forms, dict) or len(forms) != 1:
                return self._validation(h, base, "Malformed input request: input must hold one of converse, invokeModel")
            if "converse" in forms:
                converse = forms["converse"]
                if set(converse) - {"messages", "system", "toolConfig", "additionalModelRequestFields"}:
                    return self._validation(h, base, "Malformed input request: extraneous key in converse")
                return send(h, 200, {"inputTokens": self._input_tokens(converse)}, base)
            invoked = json.loads(base64.b64decode(forms["invokeModel"]["body"]))
            return send(h, 200, {"inputTokens": sum(words_in(m["content"]) for m in invoked["messages"]
                                                    if isinstance(m["content"], str))}, base)
        if action.startswith("converse"):
            extra = sorted(set(request) - CONVERSE_KEYS)
            if extra:
                return self._validation(h, base, f"Malformed input request: extraneous key [{extra[0]}] is not permitted, please reformat your input and try again.")
            if not isinstance(request.get("messages"), list) or not request["messages"]:
                return self._validation(h, base, "The model returned the following errors: messages: field required")
            if action == "converse":
                return send(h, 200, self._converse(request), base)
            return self._converse_stream(h, request, base)
        if model.startswith("amazon.titan-embed"):
            extra = sorted(set(request) - TITAN_KEYS)
            if extra or not isinstance(request.get("inputText"), str):
                return self._validation(h, base, f"Malformed input request: #: extraneous key [{(extra or ['inputText'])[0]}] is not permitted")
            dimensions = request.get("dimensions", 1024)
            if dimensions not in (256, 512, 1024):
                return self._validation(h, base, "Malformed input request: #/dimensions: 3 is not a valid enum value")
            vector = [round(0.001 * (i % 97), 3) for i in range(dimensions)]
            return send(h, 200, {"embedding": vector, "embeddingsByType": {"float": vector},
                                 "inputTextTokenCount": words_in(request["inputText"])}, base)
        if model.startswith("anthropic."):
            problem = anthropic_problem(request, version_field="bedrock-2023-05-31")
            if problem:
                return self._validation(h, base, problem)
            if action == "invoke":
                return send(h, 200, anthropic_message(request, model), base)
            frames = [bedrock_event("chunk", {"bytes": base64.b64encode(json.dumps(e).encode()).decode(), "p": "abcd"})
                      for _, e in anthropic_events(request, model, bedrock_metrics=True)]
            return self._write_frames(h, frames, base)
        return self._validation(h, base, f"The provided model identifier is invalid: {model}")

    def _validation(self, h, base, message):
        return send(h, 400, {"message": message}, {**base, "x-amzn-errortype": "ValidationException"})

    @staticmethod
    def _input_tokens(request):
        return sum(words_in(block.get("text", "")) for m in request["messages"] for block in m.get("content", []))

    def _converse(self, request):
        prompt = self._input_tokens(request)
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": ANSWER}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": prompt, "outputTokens": len(WORDS), "totalTokens": prompt + len(WORDS)},
            "metrics": {"latencyMs": 321},
        }

    def _converse_stream(self, h, request, base):
        prompt = self._input_tokens(request)
        frames = [bedrock_event("messageStart", {"p": "abcdefghijk", "role": "assistant"})]
        frames += [bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}, "p": "abcdef"}) for piece in PIECES]
        frames += [
            bedrock_event("contentBlockStop", {"contentBlockIndex": 0, "p": "abcdefghijklmnopq"}),
            bedrock_event("messageStop", {"p": "abcdefghijkl", "stopReason": "end_turn"}),
            bedrock_event("metadata", {"metrics": {"latencyMs": 321}, "p": "abc",
                                       "usage": {"inputTokens": prompt, "outputTokens": len(WORDS), "totalTokens": prompt + len(WORDS)}}),
        ]
        return self._write_frames(h, frames, base)

    def _write_frames(self, h, frames, base):
        start_chunked(h, "application/vnd.amazon.eventstream", base)
        for piece in split_writes(frames):
            write_chunk(h, piece)
            time.sleep(0.01)
        end_chunked(h)


# --- Anthropic message bodies (Bedrock InvokeModel and Vertex rawPredict) ------------------------

ANTHROPIC_KEYS = {"anthropic_version", "anthropic_beta", "max_tokens", "messages", "system", "stop_sequences", "temperature",
                  "top_p", "top_k", "tools", "tool_choice", "thinking", "metadata", "stream"}


def anthropic_problem(request, version_field):
    if request.get("anthropic_version") != version_field:
        return f"anthropic_version must be {version_field}, got {request.get('anthropic_version')!r}"
    extra = sorted(set(request) - ANTHROPIC_KEYS)
    if extra:
        return f"extraneous key [{extra[0]}] is not permitted"
    if not isinstance(request.get("max_tokens"), int):
        return "max_tokens: field required"
    if not isinstance(request.get("messages"), list) or not request["messages"]:
        return "messages: field required"
    return None


def anthropic_input_tokens(request):
    total = 0
    for message in request["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            total += words_in(content)
        else:
            total += sum(words_in(b.get("text", "")) for b in content or [])
    return total


def anthropic_message(request, model):
    return {"id": "msg_e2e", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": ANSWER}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": anthropic_input_tokens(request), "output_tokens": len(WORDS)}}


def anthropic_events(request, model, bedrock_metrics=False):
    prompt = anthropic_input_tokens(request)
    events = [("message_start", {"type": "message_start", "message": {
        "id": "msg_e2e", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
               for p in PIECES]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": len(WORDS)}})]
    stop = {"type": "message_stop"}
    if bedrock_metrics:
        stop["amazon-bedrock-invocationMetrics"] = {"inputTokenCount": prompt, "outputTokenCount": len(WORDS),
                                                    "invocationLatency": 321, "firstByteLatency": 123}
    events.append(("message_stop", stop))
    return events


# --- GCP ----------------------------------------------------------------------------------------


def service_account_key(token_uri, project, client_email=None):
    """(key file JSON text, RSA private key): a service-account key whose token_uri is the mock."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    client_email = client_email or f"aigw-e2e@{project}.iam.gserviceaccount.com"
    key = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": client_email,
        "client_id": "104729837465019283746",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{urllib.parse.quote(client_email)}",
        "universe_domain": "googleapis.com",
    }
    return json.dumps(key, indent=2), private_key


class MockGoogleOAuth(TokenServer):
    """``POST /token`` with the JWT-bearer grant of a registered service account."""

    name = "google-oauth"

    def __init__(self):
        super().__init__()
        self.accounts = {}  # client_email -> (private_key_id, public key)
        self.assertions = []

    @property
    def token_uri(self):
        return f"{self.url}/token"

    def register(self, key_json, private_key):
        key = json.loads(key_json)
        self.accounts[key["client_email"]] = (key["private_key_id"], private_key.public_key())

    def assertion_problem(self, assertion):
        try:
            head, body, signature = assertion.split(".")
            header, claims = json.loads(b64url_decode(head)), json.loads(b64url_decode(body))
        except ValueError:
            return "the assertion is not a JWT", None
        if header.get("alg") != "RS256":
            return f"alg {header.get('alg')!r}, expected RS256", claims
        account = self.accounts.get(claims.get("iss"))
        if account is None:
            return f"unknown issuer {claims.get('iss')!r}", claims
        key_id, public_key = account
        if "kid" in header and header["kid"] != key_id:
            return "kid is not the key's private_key_id", claims
        try:
            public_key.verify(b64url_decode(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return "Invalid JWT Signature.", claims
        if claims.get("aud") != self.token_uri:
            return f"aud {claims.get('aud')!r}, expected {self.token_uri}", claims
        if GCP_SCOPE not in str(claims.get("scope", "")).split():
            return f"scope {claims.get('scope')!r} lacks {GCP_SCOPE}", claims
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or abs(iat - now) > 300 or not 0 < exp - iat <= 3600:
            return f"bad iat/exp {iat}/{exp}", claims
        return None, claims

    def handle(self, h, recorded):
        if recorded.path != "/token" or recorded.method != "POST":
            return send(h, 404, {"error": "not_found"})
        form = form_of(recorded)
        if form.get("grant_type") != JWT_BEARER:
            recorded.problem = f"grant_type {form.get('grant_type')!r}"
            return send(h, 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        problem, claims = self.assertion_problem(form.get("assertion", ""))
        recorded.claims = claims
        if problem:
            recorded.problem = problem
            return send(h, 400, {"error": "invalid_grant", "error_description": problem})
        token = self.issue(f"ya29.e2e-{secrets.token_urlsafe(24)}")
        send(h, 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})


GEMINI_KEYS = {"contents", "systemInstruction", "tools", "toolConfig", "safetySettings", "generationConfig", "labels", "cachedContent"}


class MockVertex(MockServer):
    """Vertex AI for one project and location; ``tokens()`` returns the access tokens accepted."""

    name = "vertex"
    # Vertex AI separates server-sent events with CRLF pairs.
    sse_separator = b"\r\n\r\n"

    def __init__(self, project, region, tokens):
        super().__init__()
        self.project, self.region, self.tokens = project, region, tokens

    def _error(self, h, status, state, message):
        return send(h, status, {"error": {"code": status, "message": message, "status": state}})

    def handle(self, h, recorded):
        auth = recorded.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in self.tokens():
            recorded.problem = "no valid access token"
            return self._error(h, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                               "login cookie or other valid authentication credential.")
        path, _, query = recorded.path.partition("?")
        match = re.fullmatch(r"/v1/projects/([^/]+)/locations/([^/]+)/publishers/(google|anthropic)/models/([^/:]+):(\w+)", path)
        if not match:
            recorded.problem = f"unexpected path {path}"
            return self._error(h, 404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")
        project, region, publisher, model, method = match.groups()
        recorded.model, recorded.method_name, recorded.query = model, method, query
        if (project, region) != (self.project, self.region):
            recorded.problem = f"project/location {project}/{region}"
            return self._error(h, 403, "PERMISSION_DENIED", f"Permission denied on resource project {project}.")
        try:
            request = json.loads(recorded.body)
        except ValueError:
            return self._error(h, 400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if publisher == "google":
            extra = sorted(set(request) - GEMINI_KEYS)
            if extra:
                return self._error(h, 400, "INVALID_ARGUMENT", f'Invalid JSON payload received. Unknown name "{extra[0]}": Cannot find field.')
            contents = request.get("contents")
            if not isinstance(contents, list) or not contents or any(c.get("role") not in ("user", "model") for c in contents):
                return self._error(h, 400, "INVALID_ARGUMENT", "Please use a valid role: user, model.")
            if method == "generateContent":
                return send(h, 200, self._gemini(request, model, ANSWER, final=True))
            if method == "streamGenerateContent":
                if query != "alt=sse":
                    recorded.problem = f"streamGenerateContent without alt=sse ({query!r})"
                start_chunked(h, "text/event-stream")
                for i, piece in enumerate(PIECES):
                    event = self._gemini(request, model, piece, final=i == len(PIECES) - 1)
                    write_chunk(h, b"data: " + json.dumps(event).encode() + self.sse_separator)
                    time.sleep(0.005)
                return end_chunked(h)
            return self._error(h, 400, "INVALID_ARGUMENT", f"Unknown method {method}")
        problem = anthropic_problem(request, version_field="vertex-2023-10-16")
        if problem or "model" in request:
            recorded.problem = problem or "model in the body"
            return self._error(h, 400, "INVALID_ARGUMENT", recorded.problem)
        if (method == "streamRawPredict") != (request.get("stream") is True):
            recorded.problem = f"{method} with stream={request.get('stream')!r} in the body"
            return self._error(h, 400, "INVALID_ARGUMENT", recorded.problem)
        if method == "rawPredict":
            return send(h, 200, anthropic_message(request, model))
        if method == "streamRawPredict":
            start_chunked(h, "text/event-stream")
            for name, event in anthropic_events(request, model):
                write_chunk(h, f"event: {name}\ndata: {json.dumps(event)}\n\n".encode())
                time.sleep(0.005)
            return end_chunked(h)
        return self._error(h, 400, "INVALID_ARGUMENT", f"Unknown method {method}")

    @staticmethod
    def _gemini(request, model, text, final):
        prompt = sum(words_in(p.get("text", "")) for c in request["contents"] for p in c.get("parts", []))
        candidate = {"content": {"role": "model", "parts": [{"text": text}]}}
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": len(WORDS), "totalTokenCount": prompt + len(WORDS),
                 "trafficType": "ON_DEMAND"}
        if final:
            candidate["finishReason"] = "STOP"
        else:
            usage = {"trafficType": "ON_DEMAND"}
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
                "createTime": "2025-06-01T12:00:00.000000Z", "responseId": "e2e-response"}


# --- Azure --------------------------------------------------------------------------------------


class MockEntra(TokenServer):
    """``POST /<tenant>/oauth2/v2.0/token``: client-credentials with a client secret, or with a
    federated client assertion that ``assertions()`` accepts."""

    name = "entra"
    # Whether a grant must carry the client secret (no federated client assertion is taken).
    secret_only = False

    def __init__(self, tenant, client_id, client_secret, assertions=lambda: set()):
        super().__init__()
        self.tenant, self.client_id, self.client_secret, self.assertions = tenant, client_id, client_secret, assertions

    def refusal(self, form):
        """(status, error, description) as Entra ID answers a grant it refuses, None for one it grants."""
        if form.get("grant_type") != "client_credentials":
            return 400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type."
        if form.get("client_id") != self.client_id:
            return 400, "unauthorized_client", "AADSTS700016: Application not found in the directory."
        if form.get("scope") != AZURE_SCOPE:
            return 400, "invalid_scope", f"AADSTS70011: The provided value for scope {form.get('scope')!r} is not valid."
        if "client_secret" in form or self.secret_only:
            if form.get("client_secret") != self.client_secret:
                return 401, "invalid_client", "AADSTS7000215: Invalid client secret provided."
        elif form.get("client_assertion_type") == CLIENT_ASSERTION_TYPE:
            if form.get("client_assertion") not in self.assertions():
                return 401, "invalid_client", "AADSTS700211: No matching federated identity record found for presented assertion."
        else:
            return 401, "invalid_client", "AADSTS7000218: The request body must contain client_assertion or client_secret."
        return None

    def handle(self, h, recorded):
        if recorded.path != f"/{self.tenant}/oauth2/v2.0/token" or recorded.method != "POST":
            recorded.problem = f"unexpected {recorded.method} {recorded.path}"
            return send(h, 404, {"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."})
        refusal = self.refusal(form_of(recorded))
        if refusal:
            status, error, description = refusal
            recorded.problem = description
            return send(h, status, {"error": error, "error_description": description})
        self.grant(h, recorded)

    def grant(self, h, recorded):
        """Issues a token for the grant ``recorded`` and answers it."""
        token = self.issue(f"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e2e-{secrets.token_urlsafe(24)}")
        send(h, 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token})


class MockAzureOpenAI(MockProvider):
    """An Azure OpenAI resource (the OpenAI mock's answers) that requires an Entra token."""

    def __init__(self, name, tokens):
        self.tokens = tokens
        super().__init__(name)

    def _handler(self):
        provider = self
        base = super()._handler()

        class Handler(base):
            def do_POST(self):
                auth = self.headers.get("authorization", "")
                if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in provider.tokens():
                    self.read_recorded(provider)
                    return self._send(401, {"error": {"code": "401", "message": "Unauthorized. Access token is missing, invalid, "
                                                      "audience is incorrect (https://cognitiveservices.azure.com), or have expired."}})
                return super().do_POST()

        return Handler


# --- OIDC identity provider and AWS STS ----------------------------------------------------------


class MockOidcProvider(TokenServer):
    """Discovery document and the client-credentials grant."""

    name = "oidc"

    def __init__(self, client_id, client_secret):
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret

    def handle(self, h, recorded):
        if recorded.method == "GET" and recorded.path == "/.well-known/openid-configuration":
            return send(h, 200, {"issuer": self.url, "token_endpoint": f"{self.url}/oauth2/token",
                                 "jwks_uri": f"{self.url}/keys", "grant_types_supported": ["client_credentials"]})
        if recorded.method != "POST" or recorded.path != "/oauth2/token":
            return send(h, 404, {"error": "not_found"})
        form = form_of(recorded)
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = recorded.headers.get("authorization", "")
        if basic.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
            client_id, client_secret = urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(client_secret)
        if form.get("grant_type") != "client_credentials" or client_id != self.client_id or client_secret != self.client_secret:
            recorded.problem = "bad client credentials"
            return send(h, 401, {"error": "invalid_client"})
        now = int(time.time())
        claims = {"iss": self.url, "sub": self.client_id, "aud": "sts.amazonaws.com", "iat": now, "exp": now + 3600,
                  "jti": secrets.token_hex(8)}
        token = self.issue(".".join([b64url(b'{"alg":"RS256","typ":"JWT"}'), b64url(json.dumps(claims).encode()),
                                     b64url(secrets.token_bytes(32))]))
        send(h, 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": form.get("scope", "")})


class MockSts(MockServer):
    """``AssumeRoleWithWebIdentity`` for ``role_arn``, accepting tokens ``web_identities()`` returns.
    Issued credentials are registered with ``bedrock``."""

    name = "sts"

    def __init__(self, role_arn, web_identities, bedrock):
        super().__init__()
        self.role_arn, self.web_identities, self.bedrock = role_arn, web_identities, bedrock
        self.issued = []  # (access key id, secret, session token)

    def handle(self, h, recorded):
        form = form_of(recorded) if recorded.method == "POST" else {
            k: v[0] for k, v in urllib.parse.parse_qs(recorded.path.partition("?")[2]).items()}
        request_id = str(uuid.uuid4())
        if form.get("Action") != "AssumeRoleWithWebIdentity" or form.get("Version") != "2011-06-15":
            recorded.problem = f"Action/Version {form.get('Action')}/{form.get('Version')}"
            return self._error(h, 400, "InvalidAction", "Could not find operation", request_id)
        if form.get("RoleArn") != self.role_arn:
            recorded.problem = f"RoleArn {form.get('RoleArn')}"
            return self._error(h, 403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity", request_id)
        if not form.get("RoleSessionName"):
            recorded.problem = "no RoleSessionName"
            return self._error(h, 400, "ValidationError", "1 validation error detected: RoleSessionName", request_id)
        if form.get("WebIdentityToken") not in self.web_identities():
            recorded.problem = "unknown WebIdentityToken"
            return self._error(h, 400, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider", request_id)
        access_key = "ASIAE2E" + secrets.token_hex(6).upper()
        secret = secrets.token_urlsafe(30)
        token = "IQoJb3JpZ2luX2VjE" + secrets.token_urlsafe(60)
        with self.lock:
            self.issued.append((access_key, secret, token))
        self.bedrock.allow(access_key, secret, token)
        expiration = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        if "json" in recorded.headers.get("accept", ""):
            return send(h, 200, {"AssumeRoleWithWebIdentityResponse": {"AssumeRoleWithWebIdentityResult": {
                "Credentials": {"AccessKeyId": access_key, "SecretAccessKey": secret, "SessionToken": token,
                                "Expiration": expiration.timestamp()},
                "AssumedRoleUser": {"Arn": f"{self.role_arn}/{form['RoleSessionName']}", "AssumedRoleId": "AROAE2E:" + form["RoleSessionName"]},
                "SubjectFromWebIdentityToken": "aigw-e2e"}, "ResponseMetadata": {"RequestId": request_id}}})
        xml = f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>aigw-e2e</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>{self.role_arn}/{form['RoleSessionName']}</Arn>
      <AssumedRoleId>AROAE2E:{form['RoleSessionName']}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expiration.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>
      <AccessKeyId>{access_key}</AccessKeyId>
    </Credentials>
    <Provider>{form.get('ProviderId', 'e2e-oidc')}</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>{request_id}</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
"""
        send(h, 200, xml.encode(), content_type="text/xml")

    @staticmethod
    def _error(h, status, code, message, request_id):
        xml = (f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>{code}</Code>'
               f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
        send(h, status, xml.encode(), content_type="text/xml")
