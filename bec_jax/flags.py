"""What every ``bec-jax`` subcommand shares: flags generated from config dataclasses, the
usage error, and output folders locked for the command's lifetime.

One flag style: every field of a subcommand's config dataclass is a flag
``--[prefix-]field-name`` (``add_dataclass_flags``), parsed by its annotation
(int, float, str, bool as true/false, tuples as comma-separated values, ``X | None``
with "none"), documented from the dataclass's docstring with its default, and
applied with ``dataclasses.replace`` (``config_from_flags``), so that the class's
own validation judges the values. Flags and configs cannot drift apart.

The split, in every subcommand: what changes the result is a field of the command's
config dataclass (``TrainConfig``, ``ShrinkConfig``, ``ImageSettings``, ``BenchConfig``,
...), the same object the Python API takes; what the command reads (``--run``,
``--data``, ``--model``, ``--preset``), where it writes (``--out``, ``--overwrite``)
and how it shows progress (``--no-progress``) are plain arguments.

This module imports neither JAX nor any subcommand: ``cli`` and every
``*/commands.py`` import it, never each other.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import inspect
import os
import re
import types
import typing
from pathlib import Path

from bec_jax.artifacts import locked

__all__ = ["UsageError", "floats", "positive_int", "parse_bool", "lock_output", "set_lead_process", "out_dir", "holding_locks",
           "field_docs", "add_dataclass_flags", "config_from_flags", "flag_given"]


class UsageError(ValueError):
    """Bad user input detected before any work starts (exit code 2)."""


def floats(text: str) -> list[float]:
    """argparse type: comma-separated numbers."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def parse_bool(text: str) -> bool:
    """argparse type: true/false (also 1/0, yes/no, on/off)."""
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# output locks of the running command, released when it ends; a context variable, so that commands run
# from several threads (``main`` called from Python) each hold their own
_held: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar("bec_jax_held_locks", default=None)
_lead = True  # False in processes 1.. of a multi-process run: process 0 holds the output locks


def set_lead_process(lead: bool) -> None:
    """Whether this process takes the output locks: in a multi-process run only process 0 does
    (the others write where process 0 tells them, and would otherwise lock each other out)."""
    global _lead
    _lead = bool(lead)


_open: list[contextlib.ExitStack] = []  # the scopes of the commands running, for ``abandon``


@contextlib.contextmanager
def holding_locks():
    """Scope of one command: the locks taken by ``lock_output`` / ``out_dir`` are released at its end."""
    stack = contextlib.ExitStack()
    token = _held.set(stack)
    _open.append(stack)
    try:
        with stack:
            yield
    finally:
        _open.remove(stack)
        _held.reset(token)


def abandon(exc: BaseException) -> None:
    """Close the scopes of the commands still running as if ``exc`` had stopped them (their locks released,
    output folders they made and left empty removed), from any thread: for an exit that skips unwinding
    (``os._exit`` on a signal while the main thread is inside XLA)."""
    for stack in reversed(list(_open)):
        try:
            stack.__exit__(type(exc), exc, None)
        except BaseException:  # noqa: BLE001  (best effort on the way out; the exit itself must happen)
            pass


def lock_output(path) -> None:
    """Hold the lock of an output (folder or file) until the command ends (``artifacts.locked``);
    only the lead process of a multi-process run locks (``set_lead_process``)."""
    if _lead:
        stack = _held.get()
        if stack is None:
            raise RuntimeError("lock_output outside holding_locks(): the lock would never be released")
        stack.enter_context(locked(path))


def check_apart(out, writes=(), **inputs) -> None:
    """UsageError when the output folder ``out`` is one of the input paths ``inputs`` (flag name -> path; None:
    not given) or lies inside one, or when a folder the command writes there (``writes``: names in ``out``) is
    an input or holds one: a command writes beside what it reads, never into or over it."""
    targets = [Path(os.path.realpath(out))] + [Path(os.path.realpath(Path(out) / w)) for w in writes]
    for flag, path in inputs.items():
        if path is None:
            continue
        i = Path(os.path.realpath(path))
        for k, t in enumerate(targets):
            what = "is" if t == i else "lies inside" if i in t.parents else "holds" if k and t in i.parents else None
            if what:
                name = str(out) if not k else str(Path(out) / writes[k - 1])
                raise UsageError(f"{'--out' if not k else 'the output'} {name!r} {what} --{flag.replace('_', '-')} "
                                 f"{str(path)!r}: write the output elsewhere")


def out_dir(path: str, lock: bool = True) -> Path:
    """Create (if needed), check writable and (``lock``) lock an output folder. Folders it
    creates are removed again if the command fails while they are still empty: a refused
    command leaves nothing behind."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {str(out)!r} is a file")
    # the folders this call makes, by the path's real location ("new/../old" makes new/, not old/)
    real = Path(os.path.realpath(out))
    created = [p for p in (real, *real.parents) if not os.path.lexists(p)]
    stack = _held.get()
    if created and stack is not None:
        stack.push(lambda exc_type, exc, tb: _remove_if_failed_and_empty(created, exc_type))
    for attempt in range(2):
        try:
            out.mkdir(parents=True, exist_ok=True)
            if lock:  # opening the lock file also proves the folder writable
                lock_output(out)
            else:
                probe = out / ".write_test"
                probe.write_text("")
                probe.unlink()
            return out
        except FileNotFoundError as e:  # once: a refused command beside this one removed the folder it made
            if attempt:
                raise UsageError(f"cannot write to output folder {str(out)!r}: {e.strerror or e}") from None
        except OSError as e:
            raise UsageError(f"cannot write to output folder {str(out)!r}: {e.strerror or e}") from None


# ------------------------------------------------------------- config dataclasses -> flags

def _remove_if_failed_and_empty(folders: list[Path], exc_type) -> None:
    """``folders`` (innermost first), created by a command that failed: removed while empty."""
    if exc_type is None:
        return
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the command wrote something worth keeping), or already gone
            return


def field_docs(cls) -> dict[str, str]:
    """{field: its description} read from a config dataclass's docstring, whose entries look like
    ``name: text``, ``a, b: shared text`` or ``name (note): text``, each starting a line, a sentence or
    a clause after a semicolon, and ending at the next entry or a blank line."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    names = sorted((f.name for f in dataclasses.fields(cls)), key=len, reverse=True)
    alt = "|".join(map(re.escape, names))
    item = rf"(?:{alt})\b(?:\s*\([^()]*\))?"
    starts = list(re.finditer(rf"(?:(?m:^)|(?<=\. )|(?<=; ))[ \t]*({item}(?:\s*,\s*{item})*)\s*:\s", doc))
    out = {}
    for m, nxt in zip(starts, starts[1:] + [None]):
        text = doc[m.end(): nxt.start() if nxt else len(doc)].split("\n\n")[0]  # an entry ends at a blank line
        text = " ".join(text.split())
        for name in re.findall(rf"\b({alt})\b", re.sub(r"\([^()]*\)", "", m.group(1))):
            note = re.search(rf"\b{re.escape(name)}\s*(\([^()]*\))", m.group(1))
            out.setdefault(name, f"{note.group(1)} {text}" if note else text)
    return out


def _converter(hint):
    """argparse ``type`` for a field annotation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = _converter(next(a for a in args if a is not type(None)))
        return lambda text: None if text.strip().lower() == "none" else inner(text)
    if origin is tuple:
        item = _converter(args[0])

        def parse_tuple(text: str):
            vals = tuple(item(t.strip()) for t in text.split(",") if t.strip())
            if args[-1] is not Ellipsis and len(vals) != len(args):
                raise argparse.ArgumentTypeError(f"expected {len(args)} comma-separated values, got {text!r}")
            return vals
        return parse_tuple
    if hint is bool:
        return parse_bool
    if hint in (int, float, str):
        def parse_scalar(text: str):
            try:
                return hint(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {hint.__name__}, got {text!r}") from None
        return parse_scalar
    raise TypeError(f"no flag parser for annotation {hint!r}")


def _metavar(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return "A,B,…" if args[-1] is Ellipsis else ",".join("ABCD"[: len(args)])
    if origin in (typing.Union, types.UnionType):
        return _metavar(next(a for a in args if a is not type(None))) + "|none"
    return getattr(hint, "__name__", str(hint)).upper()


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "true" if value is True else "false" if value is False else str(value)


def _dest(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('-').replace('-', '_') or 'config'}__{name}"


def _flag_fields(cls, exclude):
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls) if f.name not in exclude]


def add_dataclass_flags(parser, cls, base=None, *, prefix: str = "", exclude=(), aliases: dict | None = None,
                        defaults: dict | None = None, title: str | None = None) -> None:
    """Add a flag ``--<prefix><field-name>`` for every field of the dataclass ``cls`` (but ``exclude``).

    base: the instance whose values the help shows as defaults (None: the class's own
    defaults). defaults: {field: text} shown instead, for defaults decided at run time.
    Flags default to None (not given); ``config_from_flags`` applies the given ones. A bool
    flag alone means true. aliases: {field: [extra option strings]} kept for older command lines.
    """
    group = parser.add_argument_group(title or f"{cls.__name__} settings")
    docs = field_docs(cls)
    for name, hint in _flag_fields(cls, exclude):
        value = getattr(base if base is not None else cls, name, dataclasses.MISSING)
        default = (defaults or {}).get(name, "required" if value is dataclasses.MISSING else _show(value))
        help_text = f"{docs.get(name, name.replace('_', ' '))} (default: {default})".replace("%", "%%")
        extra = dict(nargs="?", const=True) if hint is bool else {}
        group.add_argument(f"--{prefix}{name.replace('_', '-')}", *(aliases or {}).get(name, ()),
                           dest=_dest(prefix, name), type=_converter(hint), default=None, metavar=_metavar(hint),
                           help=help_text, **extra)


def flag_given(args: argparse.Namespace, name: str, prefix: str = "") -> bool:
    """Whether the flag of the config field ``name`` (``add_dataclass_flags``) was given on the command line."""
    return getattr(args, _dest(prefix, name), None) is not None


def config_from_flags(base, args: argparse.Namespace, *, prefix: str = "", exclude=(), **forced):
    """``base`` (a config dataclass instance) with the flags given on the command line applied,
    then ``forced`` fields; the class's own validation raises ValueError for bad values."""
    given = {name: getattr(args, _dest(prefix, name)) for name, _ in _flag_fields(type(base), exclude)
             if getattr(args, _dest(prefix, name), None) is not None}
    return dataclasses.replace(base, **{**given, **forced})
