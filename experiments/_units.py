"""Experiments that resume after a kill: each unit of work (one solve, one training run) is saved as JSON the
moment it finishes, so a run killed and started again with the same settings redoes only the unit it was in.

    units = Units(out / "units", settings)          # exits naming the difference if they are another run's
    run = units("g100_om0.85_seed0", lambda: relax(...))   # read if saved, else computed, then saved
    ...                                              # write the results from the units
    units.finish()                                   # the unit files go; a later run starts afresh

A unit's value must be JSON (lists, numbers, strings, dicts): it is what the results are made of, so a
resumed run computes the same results as an uninterrupted one (its own time and count of units read back
aside). No pickle.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Callable

from bec_jax.artifacts import atomic_write_text

SETTINGS = "settings.json"


class Units:
    """Saved units of one experiment run in ``folder`` (created), made with ``settings`` (a JSON dict: every
    flag that changes a unit's value). ``folder`` holding units of other settings, or units without their
    settings, ends the program with one line naming the problem (exit 2): resume with those settings, or
    remove the folder."""

    def __init__(self, folder, settings: dict):
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))  # as it reads back: tuples are lists
        path = self.folder / SETTINGS
        units = [p for p in self.folder.glob("*.json") if p.name != SETTINGS]
        if path.is_file() and units:
            try:
                saved = json.loads(path.read_text())
            except json.JSONDecodeError:
                saved = None
            if saved != self.settings:
                diff = ("unreadable" if not isinstance(saved, dict) else
                        "; ".join(f"{k} {saved.get(k)!r} there, {self.settings.get(k)!r} here"
                                  for k in sorted(set(saved) | set(self.settings))
                                  if saved.get(k) != self.settings.get(k)))
                _refuse(f"{str(self.folder)!r} holds the saved units of a run with other settings ({diff}); "
                        "rerun with those settings to resume it, or remove the folder to start afresh")
        elif units:  # a finish() cut short: whose units these are is unknown
            _refuse(f"{str(self.folder)!r} holds saved units but no {SETTINGS}: remove the folder to start afresh")
        else:  # nothing saved yet (or a run killed before its first unit): these settings start it
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(self.settings, indent=1))
        self.resumed = 0  # units read back, not computed, by this run

    def path(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.=+-]+", name) or name == Path(SETTINGS).stem:
            raise ValueError(f"unit names are letters, digits and _.=+- (not {Path(SETTINGS).stem!r}), got {name!r}")
        return self.folder / f"{name}.json"

    def __call__(self, name: str, compute: Callable[[], object]):
        """The value of unit ``name``: read back if a run saved it, else ``compute()``, saved, returned. A unit
        file that does not read as JSON (written by hand, or damaged) is computed again, with a warning."""
        path = self.path(name)
        if path.is_file():
            try:
                value = json.loads(path.read_text())
                self.resumed += 1
                return value
            except json.JSONDecodeError as e:
                print(f"warning: {str(path)!r} is not valid JSON ({e.msg}): computing that unit again", file=sys.stderr)
        value = compute()
        atomic_write_text(path, json.dumps(value))
        return json.loads(json.dumps(value))  # the same value a resumed run reads back

    def finish(self) -> None:
        """Remove the unit files, then their settings, then the folder (call once the results are written)."""
        for p in self.folder.glob("*.json"):
            if p.name != SETTINGS:
                p.unlink()
        (self.folder / SETTINGS).unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:  # something else in it: leave it
            pass


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
