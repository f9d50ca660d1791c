"""How a run shows its progress: a bar with rows/s and ETA on a terminal (rich), a log line
every few seconds otherwise (a CronJob's log, a CI job)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

logger = logging.getLogger("app.batch")

LOG_EVERY_SECONDS = 5.0


class Report(Protocol):
    def update(self, rows: int, failed: int, fraction: float | None) -> None:
        """``rows`` scored by this run so far (``failed`` of them not valid), ``fraction`` of
        the input read."""
        ...

    def close(self) -> None: ...


class _Rate:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first_fraction: float | None = None

    def rows_per_second(self, rows: int) -> float:
        elapsed = time.monotonic() - self.started
        return rows / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self, fraction: float | None) -> float | None:
        if fraction is None:
            return None
        if self.first_fraction is None:
            self.first_fraction = fraction
            return None
        done = fraction - self.first_fraction
        if done <= 0:
            return None
        return (time.monotonic() - self.started) * (1 - fraction) / done


class BarReport:
    def __init__(self, description: str) -> None:
        self._rate = _Rate()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:,} rows ({task.fields[failed]:,} failed)"),
            TextColumn("{task.fields[speed]:,.0f} rows/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(description, total=1.0, rows=0, failed=0, speed=0.0)
        self._progress.start()

    def update(self, rows: int, failed: int, fraction: float | None) -> None:
        speed = self._rate.rows_per_second(rows)
        self._progress.update(
            self._task,
            completed=fraction if fraction is not None else 0.0,
            rows=rows,
            failed=failed,
            speed=speed,
        )

    def close(self) -> None:
        self._progress.update(self._task, completed=1.0)
        self._progress.stop()


class LogReport:
    def __init__(self, description: str) -> None:
        self._rate = _Rate()
        self._description = description
        self._last: float | None = None
        logger.info("%s: started", description)

    def update(self, rows: int, failed: int, fraction: float | None) -> None:
        eta = self._rate.eta_seconds(fraction)
        now = time.monotonic()
        if self._last is not None and now - self._last < LOG_EVERY_SECONDS:
            return
        self._last = now
        read = f", {fraction:.0%} of the input read" if fraction is not None else ""
        left = f", about {eta:.0f} s left" if eta is not None else ""
        logger.info(
            "%s: %s rows scored (%s failed), %s rows/s%s%s",
            self._description,
            f"{rows:,}",
            f"{failed:,}",
            f"{self._rate.rows_per_second(rows):,.0f}",
            read,
            left,
        )

    def close(self) -> None:
        return None


def make_report(bar: bool | None, description: str) -> Report:
    """A bar when asked, or by default when stderr is a terminal; log lines otherwise."""
    if bar is None:
        bar = sys.stderr.isatty()
    return BarReport(description) if bar else LogReport(description)
