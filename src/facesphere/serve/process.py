"""Run `facesphere serve` in a child process on loopback (for tests and benchmarks)."""

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
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on the loopback address right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`facesphere serve` on 127.0.0.1 with `home` as FACESPHERE_HOME; a context manager that
    starts it, waits until it answers /health, and stops it (and its workers) on exit."""

    def __init__(
        self,
        home: str | Path,
        workers: int = 1,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 180.0,
        log_path: str | Path | None = None,
    ) -> None:
        self.home = Path(home)
        self.workers = workers
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else self.home / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> str:
        """Start the server and wait until it serves; returns its base URL."""
        self.home.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-c",
            "from facesphere.cli.main import app; app(prog_name='facesphere')",
            "serve",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
            *self.extra_args,
        ]
        env = {**os.environ, "FACESPHERE_HOME": str(self.home)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()
        return self.url

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        # No proxies: the request must go straight to the loopback address.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at startup:\n{self.log_tail()}")
            try:
                with opener.open(f"{self.url}/health", timeout=5.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(
            f"the server did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """Ask the server to stop (SIGINT, as Ctrl-C), then kill its process group if needed."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        # Workers left behind by a supervisor that died are in the same process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.returncode

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
