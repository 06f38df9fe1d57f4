"""The visdom logger against a real visdom server on loopback (started here, killed after)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import warnings

import pytest
from tests.helpers.training import reserved_port

pytest.importorskip("visdom")

# The server's own entry point downloads JavaScript from CDNs first; its main() does not.
_SERVER = "import sys; from visdom.server.run_server import main; sys.argv[0] = 'visdom'; main()"


@pytest.fixture
def visdom_url(tmp_path):
    # The port stays reserved while the server runs (tornado binds with SO_REUSEADDR, as the run's
    # DDP store does): no other process can be handed it between our choice and the server's bind.
    with reserved_port() as port:
        yield from _serve(port, tmp_path)


def _serve(port, tmp_path):
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SERVER,
            "-port",
            str(port),
            "--hostname",
            "127.0.0.1",
            "-env_path",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Only a guard against a hang: the verdict is whether it starts, not how fast.
        deadline = time.monotonic() + 300
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the visdom server exited or did not start within 300 s")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.slow
def test_metrics_reach_a_live_visdom_server(tmp_path, visdom_url, tiny_data, tiny_config):
    import visdom

    from sepconv.train import fit

    messages: list[str] = []
    result = fit(
        tiny_config(tmp_path / "run", epochs=2, visdom=visdom_url), data=tiny_data, warn=messages.append
    )
    assert messages == []
    host, port = visdom_url.rsplit(":", 1)
    with warnings.catch_warnings():  # visdom warns about its own deprecated logger calls
        warnings.simplefilter("ignore", DeprecationWarning)
        client = visdom.Visdom(
            server=host, port=int(port), env="sepconv", use_incoming_socket=False, raise_exceptions=True
        )
    window = json.loads(client.get_window_data(win="loss", env="sepconv"))
    traces = {trace["name"]: trace for trace in window["content"]["data"]}
    assert set(traces) == {"train_loss", "val_loss"}
    for name, trace in traces.items():
        assert trace["x"] == [1, 2]
        # The losses travel as JSON numbers (decimal text of the float64): equal, or within float32
        # rounding (6e-8) should visdom store them as float32; approx's default rel 1e-6 covers both.
        assert trace["y"] == pytest.approx([row[name] for row in result.history])
