"""Progress bars that the runner can print: tqdm, which also writes the current bar to the file named by
EMOLIB_PROGRESS (set by `emolib run` for each notebook's kernel), at most every few seconds."""

from __future__ import annotations

import json
import os
import time

from tqdm.auto import tqdm as _tqdm

ENV = "EMOLIB_PROGRESS"
EVERY = 2.0  # seconds between writes


class tqdm(_tqdm):  # noqa: N801  (a drop-in for tqdm.auto.tqdm)
    """tqdm.auto.tqdm that reports its description, count, total and ETA to $EMOLIB_PROGRESS."""

    def __iter__(self):
        """Iterate as tqdm does, reporting the count after each item."""
        done = self.n
        for x in super().__iter__():
            yield x
            done += 1
            self._report(done)

    def update(self, n: float | None = 1) -> bool | None:
        """Advance the bar by hand, reporting."""
        out = super().update(n)
        self._report(self.n)
        return out

    def _report(self, done: float) -> None:
        """Write the bar's state to $EMOLIB_PROGRESS when it is due (never for a disabled bar)."""
        path = os.environ.get(ENV)
        now = time.time()
        if self.disable or not path or now - getattr(self, "_reported", 0.0) < EVERY:
            return
        self._reported = now
        write_bar(path, self.desc or "", done, self.total, now - self.start_t)


def write_bar(path: str, desc: str, done: float, total: float | None, elapsed: float) -> None:
    """Write one bar's state (an atomic replace, so the reader never sees half a file)."""
    from .safeio import atomic_write_json

    eta = (total - done) * elapsed / done if total and done else None
    try:
        atomic_write_json(path, {"step": desc, "done": done, "total": total, "elapsed_s": elapsed, "eta_s": eta})
    except OSError:
        pass  # a report that cannot be written never stops the work


def mmss(seconds: float) -> str:
    """Seconds as 'M min S s'."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s"


def bar_line(path: str, stage: str) -> str | None:
    """One terminal line from a bar file (None if absent or unreadable)."""
    try:
        s = json.loads(open(path).read())
        count = f"{int(s['done'])} of {int(s['total'])}" if s.get("total") else f"{int(s['done'])}"
        eta = f" · about {mmss(s['eta_s'])} left" if s.get("eta_s") is not None else ""
        return f"  {stage} · {s['step']} · {count} · {mmss(s['elapsed_s'])} elapsed{eta}"
    except (OSError, ValueError, KeyError, TypeError):
        return None
