#!/usr/bin/env python3
"""Set up the locked environment (with uv) and run the demo or the tests.

    python3 dev.py demo     # sample world -> ingest -> chips -> train -> map -> GeoPackage
    python3 dev.py test     # the test suite

Needs only Python 3.11+. uv is installed into ./.tools if it is not on PATH; the
environment is created from uv.lock exactly (``uv sync --frozen``), so every machine gets
the same packages, with their bytecode compiled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
UV_VERSION = "0.13.8"
#: Each command is a sequence of steps; the first that fails stops the rest.
COMMANDS = {
    "demo": [["forestnet", "demo", "--config", "configs/demo.yaml"]],
    # Style and the one-way stage imports are checked before the (longer) test suite.
    "test": [["ruff", "check", "."], ["lint-imports"], ["pytest", "-q"]],
}


def uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    tools = ROOT / ".tools"
    local = tools / "bin" / "uv"
    if not local.exists():
        subprocess.run([sys.executable, "-m", "venv", str(tools)], check=True)
        subprocess.run([str(tools / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        f"uv=={UV_VERSION}"], check=True)
    return str(local)


COMPILE = (
    "import compileall, re, sys, sysconfig; "
    "compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2, workers=0, "
    "rx=re.compile(r'[/\\\\]tests?[/\\\\]'))"
)


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - users may run an older python3
        print("error: Python 3.11+ is required", file=sys.stderr)
        return 2
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    env = {**os.environ, "UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never"}
    uv_bin = uv()
    subprocess.run([uv_bin, "sync", "--frozen"], cwd=ROOT, env=env, check=True)
    # Bytecode is compiled once here: every Dask worker, Prefect server and CLI test
    # process would otherwise compile torch, prefect and friends from source on import
    # (about 15 s each where PYTHONDONTWRITEBYTECODE is set, as on CI machines). The
    # packages' own test suites (a quarter of the files) are never imported: skipped.
    subprocess.run([uv_bin, "run", "--frozen", "--no-sync", "python", "-c", COMPILE], cwd=ROOT,
                   env=env, check=True)
    *steps, last = COMMANDS[argv[0]]
    for step in [*steps, [*last, *argv[1:]]]:  # extra arguments go to the last step
        code = subprocess.run([uv_bin, "run", "--frozen", "--no-sync", *step], cwd=ROOT,
                              env=env).returncode
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
