"""What every ``forestnet`` command shares: the Typer app, config loading, running a flow
on the configured cluster, and one-line errors in place of tracebacks."""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flows.config.overrides import with_cluster_address
from flows.config.schema import (
    PipelineConfig,
    load_config,
)
from pipeline.core.errors import ForestNetError

if TYPE_CHECKING:  # the CLI imports distributed only when a command starts a cluster
    from distributed import Client

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="ForestNet pipeline: map the drivers of deforestation across Indonesia.",
)
console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
AddressOpt = Annotated[
    str | None, typer.Option("--dask-address", help="attach to this Dask scheduler")
]
DEFAULT_DEMO_CONFIG = Path("configs/demo.yaml")


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user can fix: every ``ForestNetError`` names the file or key and the reason."""
    return (ForestNetError, FileNotFoundError, PermissionError)


def _load(config: Path | None, address: str | None) -> PipelineConfig:
    return with_cluster_address(load_config(config), address)


def _run(config: PipelineConfig, flow: Callable[[PipelineConfig, str], dict],
         check_inputs: Callable[[PipelineConfig], None] | None = None,
         preload: Callable[[Client, PipelineConfig], object] | None = None) -> dict:
    """Check the flow's inputs, start (or attach to) the cluster and run the flow on it;
    ``preload`` starts work on the cluster that the flow will need (it runs while the
    Prefect API starts)."""
    from flows.runtime.cluster import dask_client

    _quiet_cluster_logs()
    if check_inputs is not None:
        check_inputs(config)
    echo = lambda m: console.print(m, highlight=False, soft_wrap=True)  # noqa: E731
    with dask_client(config.cluster, echo=echo) as client:
        if preload is not None:
            preload(client, config)
        return flow(config, client.scheduler.address)


#: A full disk, a quota or a read-only file system: the run stops, its finished work stays.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _guard(body: Callable[[], None]) -> None:
    """Known input problems become one line on stderr and exit code 2, no traceback; a
    full disk mid-run becomes one line and exit code 1 (the run could not finish)."""
    try:
        body()
    except _user_errors() as exc:
        _error_line(str(exc))
        raise typer.Exit(2) from None
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        # Every output is written to a temporary name and renamed, so nothing half
        # written is left in place; finished scenes, batches and tiles are reused.
        where = f"{exc.filename}: " if exc.filename else ""
        _error_line(f"{where}{exc.strerror or os.strerror(exc.errno)}; finished work is kept, "
                    "free some space and rerun to resume")
        raise typer.Exit(1) from None


def _error_line(message: str) -> None:
    # One line, verbatim: messages may quote multi-line library errors, and paths or
    # keys in brackets ("landsat[0]", "scenes[old]/") must not be read as markup.
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    console.print(f"[red]error:[/red] {escape(text)}", highlight=False, soft_wrap=True)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        handlers=[_StderrHandler()],
        force=True,  # a second in-process invocation (CliRunner) replaces the first's handler
    )
    _STATE["verbose"] = verbose
    # Prefect waits 20 s for its temporary API server; a busy 2-core machine can need more
    # (seen in CI-sized runs), and a timeout there loses the whole run. Users may override.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Mapping machines are often offline: telemetry would only log a failure per run.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


_STATE = {"verbose": False}


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is now, not to the stream it was created with.

    An in-process caller (CliRunner in tests) swaps stderr for each invocation and closes
    it after; a handler holding the old stream fails on every later record (Prefect logs
    its server's shutdown at exit).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _quiet_cluster_logs() -> None:
    """Cluster start/stop chatter hides the pipeline's own log lines (unless --verbose).

    Called after distributed is imported: its import sets its loggers to INFO.
    """
    if not _STATE["verbose"]:
        for name in ("distributed", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # The dashboard's "host wildcard" warning is about bokeh's defaults, not the run.
        logging.getLogger("bokeh").setLevel(logging.ERROR)
