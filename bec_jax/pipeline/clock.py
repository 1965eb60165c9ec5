"""``StageClock``: the wall time of a pipeline stage over all the invocations that worked on it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from bec_jax.artifacts import atomic_write_text

__all__ = ["CLOCK_HEARTBEAT", "StageClock"]

#: seconds between two saves of a running stage's clock (``StageClock``): what a kill can leave uncounted
CLOCK_HEARTBEAT = 10.0


class StageClock:
    """Wall seconds a stage takes over all its invocations, kept in ``path`` until it finishes.

    A context manager around one invocation: ``path`` (JSON {seconds, invocations}) holds what the
    earlier, interrupted invocations spent; a daemon thread rewrites it every ``heartbeat`` seconds
    with this invocation's time added, and so does a stop by an exception (Ctrl-C, SIGTERM, an
    error), so a kill loses at most ``heartbeat`` seconds of it. ``seconds`` / ``invocations``:
    totals including this invocation; ``this_run``: this invocation's seconds. ``finish()``
    deletes ``path`` once the stage's record is written. An unreadable ``path`` counts as no earlier
    time, and ``note`` says so.
    """

    def __init__(self, path: Path, heartbeat: float = CLOCK_HEARTBEAT):
        self.path, self.heartbeat, self.note = Path(path), heartbeat, None
        self.earlier, self.before = 0.0, 0
        if self.path.exists():
            try:
                d = json.loads(self.path.read_text())
                self.earlier, self.before = float(d["seconds"]), int(d["invocations"])
            except (ValueError, KeyError, TypeError):
                self.note = f"{self.path} is unreadable: the time of earlier invocations is not counted"
        self._stop = threading.Event()

    @property
    def this_run(self) -> float:
        return (self._t1 if self._t1 is not None else time.perf_counter()) - self._t0

    @property
    def seconds(self) -> float:
        return self.earlier + self.this_run

    @property
    def invocations(self) -> int:
        return self.before + 1

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps(dict(seconds=self.seconds, invocations=self.invocations)))

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            self._save()

    def __enter__(self):
        self._t0, self._t1 = time.perf_counter(), None
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"clock {self.path.name}")
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._t1 = time.perf_counter()
        self._stop.set()
        self._thread.join()
        if exc_type is not None:
            try:
                self._save()
            except OSError:  # the stop's own exception matters more than the clock
                pass
        return False

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)
