"""Progress bars that suit where stderr goes: tqdm's bar on a terminal, plain periodic lines otherwise.

A batch job's log (stderr redirected to a file) gets one line every `LINE_SECONDS` (and at the end)
instead of carriage returns and cursor codes, which make such logs unreadable. Both kinds take the same
calls: update(n), set_postfix(**kw), set_description(text), close().
"""
from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm

# A plain line at most this often per bar (overridable with $RBOLS_PROGRESS_SECONDS): a 28-epoch cell logs
# a few dozen lines, not thousands.
LINE_SECONDS = float(os.environ.get("RBOLS_PROGRESS_SECONDS", "30"))


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    return hasattr(stream, "isatty") and stream.isatty()


def bar(total: int, desc: str, unit: str = "it", *, initial: int = 0, position: int | None = None,
        leave: bool = True, enabled: bool = True):
    """A progress bar on stderr, or None when `enabled` is false."""
    if not enabled:
        return None
    if is_terminal():
        return tqdm(total=total, initial=initial, unit=unit, desc=desc, position=position, leave=leave,
                    dynamic_ncols=True)
    return LineProgress(total, desc, unit, initial=initial)


class LineProgress:
    """`desc: n/total unit (pct%), elapsed, time left, postfix` on its own line every LINE_SECONDS and at close()."""

    def __init__(self, total: int, desc: str, unit: str = "it", *, initial: int = 0, file=None):
        self.total, self.desc, self.unit, self.n, self.initial = total, desc, unit, initial, initial
        self.file = sys.stderr if file is None else file
        self.postfix = ""
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= LINE_SECONDS:
            self._line()

    def set_postfix(self, refresh: bool = True, **kw) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        if time.monotonic() - self.last >= LINE_SECONDS:
            self._line()

    def close(self) -> None:
        self._line()

    def _line(self) -> None:
        self.last = time.monotonic()
        elapsed = self.last - self.start
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = ""
        if self.total and self.initial < self.n < self.total:  # at this session's pace
            left = f", about {elapsed / (self.n - self.initial) * (self.total - self.n):.0f} s left"
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}, {elapsed:.0f} s{left}{extra}",
              file=self.file, flush=True)
