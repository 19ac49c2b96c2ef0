"""The one look of the pipeline's progress bars: label, bar, n of total, extra fields, time.

Bars go to stderr, so stdout keeps only results that scripts read (``GeoPackage: ...``).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(label: str = "[progress.description]{task.description}",
                 extra: tuple[str, ...] = (), remaining: bool = False) -> Progress:
    """A rich ``Progress`` on stderr; ``label`` and ``extra`` are text column templates."""
    columns: list[ProgressColumn | str] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(text) for text in extra]
    columns.append(TimeElapsedColumn())
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), transient=False)
