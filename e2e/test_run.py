"""`aigw run`: compile, start the extproc and Envoy, serve, stop cleanly on SIGTERM."""

import json
import signal
import subprocess
import time

from conftest import AIGW, EXTPROC, SECRET, crs, envoy_bin, free_port, http
from mock_provider import ANSWER


def test_aigw_run_serves_and_stops_cleanly(tmp_path, providers):
    primary, secondary = providers
    listener = free_port()
    config = tmp_path / "config"
    config.mkdir()
    (config / "crs.yaml").write_text(crs(listener, primary.port, secondary.port))
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [str(AIGW), "run", str(config), "--dir", str(run_dir), "--envoy-bin", envoy_bin(), "--extproc-bin", str(EXTPROC),
         "--envoy-admin-port", str(free_port())],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        deadline = time.time() + 30
        while time.time() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "listening on" in line:
                break
        assert any(f"http://127.0.0.1:{listener}" in line for line in lines), "".join(lines)
        status, _, body = http("POST", f"http://127.0.0.1:{listener}/v1/chat/completions",
                               {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200, body
        assert json.loads(body)["choices"][0]["message"]["content"] == ANSWER
        assert primary.received()[-1].headers["authorization"] == f"Bearer {SECRET}"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        rest = process.stderr.read()
    assert code == 0, rest
