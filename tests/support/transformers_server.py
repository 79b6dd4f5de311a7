"""A real OpenAI-compatible server for tests and benchmarks: ``transformers serve`` on 127.0.0.1.

Needs transformers' ``serving`` extra (``pip install "mralign_plugin[serving]"``). The server runs as
a subprocess preloading one local model folder (``transformers serve MODEL_DIR``: the positional
``force_model`` of transformers/cli/serve.py, used for every request); :func:`start` returns once
``GET /health`` answers 200, which the server does only after the model is loaded and uvicorn
listens, and :func:`stop` ends it. Requests name the model by the same folder path.

    with serve_local_model("/tmp/tiny-llama", tmp / "serve.log") as server:
        print(server.base_url)            # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(model_dir: str | Path, port: int) -> list[str]:
    """The ``transformers serve`` command line of the installed transformers (its console script)."""
    script = Path(sys.executable).with_name("transformers")
    return [str(script), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]


def start(model_dir: str | Path, log_path: Path, timeout: float = 180.0,
          extra_args: tuple[str, ...] = ()) -> RunningServer:
    """Start ``transformers serve MODEL_DIR`` and wait until ``GET /health`` answers 200.

    Raises:
        RuntimeError: the server exited, or was not ready within ``timeout`` seconds (with its log).
    """
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(log_path, "wb")
    process = subprocess.Popen([*serve_command(model_dir, port), *extra_args], stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    log.close()
    server = RunningServer(process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {process.returncode}:\n{server.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)  # polling interval of the readiness check, not a stand-in for it
    stop(server)
    raise RuntimeError(f"transformers serve not ready after {timeout:.0f} s:\n{server.log()[-3000:]}")


def stop(server: RunningServer) -> None:
    """SIGTERM the server's process group, SIGKILL after 20 s."""
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(20)


@contextlib.contextmanager
def serve_local_model(model_dir: str | Path, log_path: Path, timeout: float = 180.0,
                      extra_args: tuple[str, ...] = ()) -> Iterator[RunningServer]:
    server = start(model_dir, log_path, timeout, extra_args)
    try:
        yield server
    finally:
        stop(server)
