"""Progress reporting that suits where the output goes: a tqdm bar in a terminal, plain lines in a log.

A bar redraws itself with carriage returns many times a second; in a SLURM log or a ``> file`` redirect every redraw
stays, so a long job writes megabytes of them. When stderr is not a terminal, :func:`progress` returns a
:class:`PlainProgress` instead, which prints one line such as ::

    epoch 3/40: 37/120 batches (31%), 12.3 batches/s, ETA 6s, loss=0.412

at most every ``interval`` seconds (``AUDIOCERT_PROGRESS_INTERVAL``, default 30) and one final line when it closes.
Lines go through ``logging`` (logger ``audiocert.progress``, level INFO) when logging is configured, as the CLI does,
so they carry its timestamps; otherwise straight to stderr. Both objects offer the part of tqdm's interface the
project uses: iteration, ``update``, ``set_postfix``, ``set_description``, ``close``, ``n``, a settable ``total`` and
use as a context manager.

A log that cannot be written (a full disk, an exhausted quota, a read-only file system) ends the command in one line
naming it, once :func:`stop_on_unwritable_logs` is set (the CLI sets it): logging's default prints a
"--- Logging error ---" traceback for every record and carries on, which on a full disk buries the cause under
hundreds of lines and ends on whatever failed next.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

INTERVAL_ENV = "AUDIOCERT_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0

log = logging.getLogger(__name__)


def interval_from_env() -> float:
    """Seconds between plain progress lines: ``AUDIOCERT_PROGRESS_INTERVAL`` (finite, >= 0), else 30."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{INTERVAL_ENV}={text!r} must be a finite number of seconds >= 0 (0 prints every update)")
    return value


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_rate(per_s: float, unit: str) -> str:
    """``12.3 shards/s``, or ``4.1 s each`` below one per second."""
    return f"{per_s:.3g} {unit}/s" if per_s >= 1 or per_s == 0 else f"{1 / per_s:.3g} s each"


class PlainProgress:
    """tqdm's interface, printing a plain line at most every ``interval`` seconds and once at :meth:`close`.

    ``clock`` is injectable for tests; ``file`` (default: logging if configured, else stderr) receives the lines.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, total: float | None = None, desc: str = "",
                 unit: str = "it", disable: bool = False, initial: float = 0, interval: float | None = None,
                 file: IO[str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable = bool(disable)
        self.interval = interval_from_env() if interval is None else float(interval)
        if not (math.isfinite(self.interval) and self.interval >= 0):
            raise ValueError(f"progress interval={interval} must be a finite number of seconds >= 0")
        self.file, self.clock = file, clock
        self.n = self.initial = initial
        self.postfix = ""
        self.started = self.last_printed = clock()
        self.closed = False

    def __len__(self) -> int:
        return int(self.total) if self.total is not None else len(self.iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress object has no iterable: call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count ``n`` more units; print a line when ``interval`` seconds have passed since the last one."""
        self.n += n
        if self.disable or self.closed:
            return
        now = self.clock()
        if now - self.last_printed >= self.interval:
            self.last_printed = now
            self.emit(self.line(now))

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """``key=value`` pairs appended to the next line (tqdm's signature)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw: a plain line is printed only by update() and close()."""

    def close(self) -> None:
        """Print the final line (once)."""
        if self.closed:
            return
        self.closed = True
        if not self.disable:
            self.emit(self.line(self.clock(), final=True))

    def line(self, now: float, final: bool = False) -> str:
        """``desc: n/total unit (pct%), rate, ETA`` (elapsed time instead of ETA on the final line), postfix."""
        elapsed = max(now - self.started, 0.0)
        count = f"{self.n:g}"
        parts = []
        if self.total:
            parts.append(f"{count}/{self.total:g} {self.unit} ({100 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{count} {self.unit}")
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0  # units done here, not resumed ones
        if rate > 0:
            parts.append(format_rate(rate, self.unit))
        if final:
            parts.append(f"took {format_duration(elapsed)}")
        elif self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: {', '.join(parts)}" if self.desc else ", ".join(parts)

    def emit(self, text: str) -> None:
        if self.file is not None:
            self.file.write(text + "\n")
            self.file.flush()
        elif log.isEnabledFor(logging.INFO) and log.hasHandlers():
            log.info("%s", text)
        else:  # logging not set up (a library caller): stderr, never a silent drop
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(iterable: Iterable[Any] | None = None, total: float | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, leave: bool = True, initial: float = 0, file: IO[str] | None = None,
             interval: float | None = None) -> Any:
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a :class:`PlainProgress` writing plain lines.

    Use it as tqdm: ``for x in progress(items, desc="shards", unit="shard"): ...`` or
    ``with progress(total=n, desc=...) as bar: bar.update(k); bar.set_postfix(loss="0.41")``.
    ``initial``: units already done (a resumed loop). ``leave`` only matters for the bar (a plain log keeps every
    line); ``interval`` (seconds between plain lines) defaults to ``AUDIOCERT_PROGRESS_INTERVAL`` or 30.
    """
    stream = sys.stderr if file is None else file
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, initial=initial,
                    file=stream, dynamic_ncols=True)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial,
                         interval=interval, file=file)


# The errors of a log file that further records cannot fix, and what to do about them.
UNWRITABLE = {errno.ENOSPC: "the file system is full: free space there and rerun",
              errno.EDQUOT: "the disk quota is exhausted: free space and rerun",
              errno.EROFS: "the file system is read-only: point AUDIOCERT_RUNS_DIR at a writable directory"}


class LogWriteError(SystemExit):
    """A log could not be written: the command ends (a SystemExit, so that no ``except Exception`` on the way, a
    shard's failure record say, carries on and logs again). Its message: ``cannot write PATH: STRERROR (FIX)``."""


_default_handle_error = logging.Handler.handleError
_failures: list[LogWriteError] = []


def stop_on_unwritable_logs() -> None:
    """Make every logging handler of this process end the command when its log cannot be written (see
    :class:`LogWriteError`) instead of printing a traceback per record; other logging errors are reported as
    logging reports them."""
    logging.Handler.handleError = _handle_error  # type: ignore[method-assign]


def unwritable_log() -> LogWriteError | None:
    """The first log this process could not write (a thread that logged it could not end the command)."""
    return _failures[0] if _failures else None


def _handle_error(handler: logging.Handler, record: logging.LogRecord) -> None:
    error = sys.exc_info()[1]
    if not (isinstance(error, OSError) and error.errno in UNWRITABLE):
        _default_handle_error(handler, record)
        return
    stream = getattr(handler, "stream", None)
    where = getattr(handler, "baseFilename", None) or getattr(stream, "name", None) or repr(handler)
    handler.setLevel(logging.CRITICAL + 1)  # no more records for it
    try:  # what it still buffers goes nowhere, rather than failing again at every flush and at exit
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (AttributeError, OSError, ValueError):
        pass
    failure = LogWriteError(f"cannot write {where}: {error.strerror} ({UNWRITABLE[error.errno]})")
    _failures.append(failure)
    raise failure
