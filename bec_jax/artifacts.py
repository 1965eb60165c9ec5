"""What bec_jax writes to disk, made safe to trust, to replace and to share.

One implementation serves every writer (datasets, checkpoints, saved models, pipeline runs):

- ``atomic_write_text``: a file is replaced whole or not at all (temporary name, fsync, rename).
- A **manifest** ``.bec_jax.json`` in a folder bec_jax wrote: its kind and the SHA-256 of every
  file in it, written last and atomically. It is the proof that a save completed and the
  reference a load checks (``verify_manifest``): a flipped byte, a truncated or a missing file
  is a ``CorruptArtifact`` naming the file, never a silently wrong model.
- ``remove_tree``: bec_jax deletes only folders that carry its manifest, and never through a
  symbolic link, so ``--overwrite`` or a rerun cannot reach a user's own files.
- ``locked``: one process at a time per output (an advisory ``flock`` on ``<out>.lock`` or
  ``<out>/.lock``; the kernel drops it when the process dies, so a killed run resumes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
from pathlib import Path

__all__ = ["MANIFEST", "CorruptArtifact", "OutputLocked", "first_line", "atomic_write", "atomic_write_text", "claim_folder", "sha256_file", "write_manifest",
           "verify_manifest", "read_manifest", "has_manifest", "check_replaceable", "remove_tree", "locked"]

MANIFEST = ".bec_jax.json"
_LOCK = ".lock"


class CorruptArtifact(ValueError):
    """A file bec_jax wrote earlier is missing, truncated or altered (the message names it)."""


class OutputLocked(ValueError):
    """Another process is writing to the same output."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (library errors often span many), or its type."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def short_repr(value, limit: int = 40) -> str:
    """``repr(value)`` for a one-line message, cut to ``limit`` characters (a sidecar may hold a huge value)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def atomic_write(path, write) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, fsync it, then rename it over ``path``: a kill
    (even SIGKILL) leaves the old file or the new one, never half of one. The name is this process's own
    (``NAME.<host>.<pid>.tmp``), so processes writing the same file, on one machine or several sharing a
    file system, do not take each other's temporary file away. A failed or interrupted write removes its
    temporary file; those that killed processes of this machine left in the folder go at this process's
    first write there."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{_HOST}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # an error or Ctrl-C: no temporary file left
        tmp.unlink(missing_ok=True)
        raise
    _sweep(path.parent)


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())  # no dot: "NAME.HOST.PID.tmp" parses one way
_swept: set[str] = set()  # folders already cleared of stale temporary files by this process


def _sweep(folder: Path) -> None:
    """Remove the temporary files of ``atomic_write`` in ``folder`` whose process, on this machine, has ended;
    once per folder and process (a folder of many files is listed once, not at every write)."""
    key = os.path.abspath(folder)
    if key in _swept:
        return
    _swept.add(key)
    for old in folder.glob("*.tmp"):
        name, _, pid = old.name[:-len(".tmp")].rpartition(".")
        if name.endswith(f".{_HOST}") and pid.isdigit() and not _alive(int(pid)):
            old.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether the process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def atomic_write_text(path, text: str) -> None:
    """``atomic_write`` of a text file."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def sha256_file(path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel not in (MANIFEST, _LOCK) and not rel.endswith(".tmp"):
                out.append(rel)
    return out


def write_manifest(folder, kind: str, files=None, **info) -> dict:
    """Hash every file under ``folder`` (or only ``files``, paths relative to it, or a {path: sha256} of
    digests already taken) and write ``folder/.bec_jax.json`` (last, atomically)."""
    folder = Path(folder)
    if not isinstance(files, dict):
        files = {rel: sha256_file(folder / rel) for rel in (_files(folder) if files is None else files)}
    manifest = dict(kind=kind, files=dict(files), **info)
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def claim_folder(folder, kind: str) -> None:
    """Create ``folder`` and mark it as bec_jax's before anything is written into it (an incomplete
    manifest), so a save stopped halfway can still be replaced, yet is never loaded as complete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / MANIFEST, json.dumps(dict(kind=kind, complete=False, files={})))


def has_manifest(folder) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError
    except FileNotFoundError:
        raise CorruptArtifact(f"{str(path)!r} is missing: {str(folder)!r} is incomplete or not written by "
                              "bec_jax") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise CorruptArtifact(f"{str(path)!r} is damaged (not a bec_jax manifest)") from None
    return manifest


def verify_manifest(folder, kind: str | None = None, only=None) -> dict:
    """Check every file of ``folder`` (or those of the collection ``only``, paths relative to it) against
    its manifest; returns the manifest.

    Raises CorruptArtifact naming the first missing, extra-truncated or altered file (or a
    manifest of another ``kind``).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.get("complete") is False:
        raise CorruptArtifact(f"{str(folder)!r} is incomplete: its save was stopped before it finished")
    if kind is not None and manifest.get("kind") != kind:
        raise CorruptArtifact(f"{str(folder)!r} holds a bec_jax {manifest.get('kind')!r}, expected a {kind!r}")
    for rel, digest in manifest["files"].items():
        if only is not None and rel not in only:
            continue
        path = folder / rel
        if not path.is_file():
            raise CorruptArtifact(f"{str(path)!r} is missing (listed in {MANIFEST})")
        if sha256_file(path) != digest:
            raise CorruptArtifact(f"{str(path)!r} is corrupt: its content does not match the checksum saved with it")
    return manifest


def _occupied(folder: Path) -> bool:
    return folder.is_symlink() or (folder.exists() and (not folder.is_dir() or any(folder.iterdir())))


def check_replaceable(folder, overwrite: bool) -> None:
    """Raise ValueError unless an output folder may be written: it is absent or empty, or
    ``overwrite`` is set and it is a folder bec_jax wrote (``remove_tree`` would delete it).
    Deletes nothing: commands call it before any work."""
    folder = Path(folder)
    if not _occupied(folder):
        return
    if not overwrite:
        raise ValueError(f"{str(folder)!r} exists and is not empty (use another folder, or --overwrite: "
                         "overwrite=True from Python)")
    if folder.is_symlink():
        raise ValueError(f"{str(folder)!r} is a symbolic link; bec_jax replaces only folders it wrote, "
                         "remove it yourself or choose another output")
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is a file, not a folder bec_jax wrote; remove it yourself or choose "
                         "another output")
    if not has_manifest(folder):
        raise ValueError(f"{str(folder)!r} was not written by bec_jax (no {MANIFEST}); it is not deleted: remove it "
                         "yourself or choose another output")


def remove_tree(folder) -> None:
    """Delete ``folder``, a folder bec_jax wrote (it carries a manifest), or an empty one.

    Raises ValueError, deleting nothing, for a symbolic link, a file, or a folder without
    bec_jax's manifest: such a path may hold the user's own files. (``rmtree`` itself unlinks
    links inside the folder without following them.)
    """
    folder = Path(folder)
    check_replaceable(folder, overwrite=True)
    if folder.exists():
        shutil.rmtree(folder)


@contextlib.contextmanager
def locked(output):
    """Hold an exclusive lock on ``output`` (a folder: ``output/.lock``; a file: ``output.lock``),
    removed again when released (a killed process leaves it, unlocked, for the next to take).

    Raises OutputLocked at once when another process holds it.
    """
    output = Path(output)
    lock = output / _LOCK if output.is_dir() else output.with_name(output.name + _LOCK)
    while True:
        fh = open(lock, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "?"
            fh.close()
            raise OutputLocked(f"{str(output)!r} is in use by another bec-jax process (pid {owner}); wait for it "
                               "or choose another output") from None
        try:  # the lock taken must be the file at the path: a holder may have removed it as we opened it
            st, own = os.stat(lock), os.fstat(fh.fileno())
            if (st.st_ino, st.st_dev) == (own.st_ino, own.st_dev):
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        try:  # while held: one that opened it meanwhile sees the path changed. Only our own file: the output
            # may have been removed and made again meanwhile, its new lock another process's
            st, own = os.stat(lock), os.fstat(fh.fileno())
            if (st.st_ino, st.st_dev) == (own.st_ino, own.st_dev):
                lock.unlink()
        except FileNotFoundError:
            pass
        finally:
            fh.close()
