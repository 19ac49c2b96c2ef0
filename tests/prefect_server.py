"""A real, self-hosted Prefect server for tests: `prefect server start` in its own session.

CLI runs that point at it (``PREFECT_API_URL``) skip starting Prefect's temporary API,
10-15 s each on a 2-core machine; the deployment tests need a server that outlives runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


@contextmanager
def session_process(args: list[str], log: Path, env: dict[str, str] | None
                    ) -> Iterator[subprocess.Popen]:
    """Run ``args`` in its own session; on exit kill the whole session, children too."""
    children: list[psutil.Process] = []
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)
    try:
        yield proc
    finally:
        # Flow-run processes may sit in sessions of their own: note them by id first.
        with suppress(psutil.Error):
            children = psutil.Process(proc.pid).children(recursive=True)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # lets a runner pause its schedules
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        # Dask workers and flow runs may outlive the leader: end its group and its children.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for child in children:
            with suppress(psutil.Error):
                child.kill()
        proc.wait(timeout=10)


@contextmanager
def prefect_server(home: Path, timeout: float = 180) -> Iterator[dict]:
    """A server on a free port with an isolated PREFECT_HOME (its own SQLite database).

    Yields ``{"api", "env", "home", "start_s"}``; ``env`` is this process's environment
    without its PREFECT_* settings, pointed at the server.
    """
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api,
               PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_RUNNER_POLL_FREQUENCY="1")  # a runner notices a new run within 1 s
    log = home / "server.log"
    started = time.perf_counter()
    args = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    with session_process(args, log, env) as proc:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"prefect server exited:\n{tail(log)}"
            assert time.monotonic() < deadline, f"server not healthy in {timeout} s:\n{tail(log)}"
            with suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield {"api": api, "env": env, "home": home, "start_s": time.perf_counter() - started}
