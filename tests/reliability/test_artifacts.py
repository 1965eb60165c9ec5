"""bec_jax.artifacts: manifests catch damage, deletion never reaches what bec_jax did not write, locks."""

import json
import shutil
import subprocess
import sys

import pytest

from bec_jax.artifacts import (MANIFEST, CorruptArtifact, OutputLocked, atomic_write, atomic_write_text,
                               check_replaceable, locked, remove_tree, verify_manifest, write_manifest)


def _folder(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(bytes(range(256)) * 4)
    (root / "sub" / "b.json").write_text(json.dumps({"x": 1}))
    return root


def test_manifest_detects_flips_truncation_missing_and_kind(tmp_path):
    f = _folder(tmp_path / "m")
    write_manifest(f, "model")
    assert set(verify_manifest(f, "model")["files"]) == {"a.bin", "sub/b.json"}
    with pytest.raises(CorruptArtifact, match="expected a 'checkpoint'"):
        verify_manifest(f, "checkpoint")
    data = bytearray((f / "a.bin").read_bytes())
    data[100] ^= 1
    (f / "a.bin").write_bytes(bytes(data))
    with pytest.raises(CorruptArtifact, match="a.bin.*corrupt"):
        verify_manifest(f)
    (f / "a.bin").write_bytes(bytes(range(256)) * 4)
    (f / "sub" / "b.json").write_text("{")
    with pytest.raises(CorruptArtifact, match="b.json"):
        verify_manifest(f)
    (f / "sub" / "b.json").unlink()
    with pytest.raises(CorruptArtifact, match="b.json.*missing"):
        verify_manifest(f)
    (f / MANIFEST).write_text("not json")
    with pytest.raises(CorruptArtifact, match="damaged"):
        verify_manifest(f)


def test_remove_tree_deletes_only_what_bec_jax_wrote(tmp_path):
    user = _folder(tmp_path / "user")                       # the user's own files
    link = tmp_path / "out" / "model"
    link.parent.mkdir()
    link.symlink_to(user, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        remove_tree(link)
    write_manifest(user, "model")                          # even a bec_jax folder behind a link survives
    with pytest.raises(ValueError, match="symbolic link"):
        remove_tree(link)
    (user / MANIFEST).unlink()
    with pytest.raises(ValueError, match="not written by bec_jax"):
        remove_tree(user)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        remove_tree(tmp_path / "file")
    assert (user / "a.bin").exists() and (tmp_path / "file").exists()
    with pytest.raises(ValueError, match="overwrite"):
        check_replaceable(user, overwrite=False)
    ours = _folder(tmp_path / "ours")
    write_manifest(ours, "model")
    inner = ours / "link_to_user"
    inner.symlink_to(user, target_is_directory=True)        # a link inside is removed, not followed
    remove_tree(ours)
    assert not ours.exists() and (user / "a.bin").exists()
    remove_tree(tmp_path / "absent")                        # nothing to do
    (tmp_path / "empty").mkdir()
    remove_tree(tmp_path / "empty")


def test_a_second_process_on_the_same_output_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    probe = ("import sys; from bec_jax.artifacts import locked, OutputLocked\n"
             "try:\n    with locked(sys.argv[1]): print('got it')\n"
             "except OutputLocked as e: print('refused:', e)")
    with locked(out):
        r = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True, timeout=60)
        assert r.stdout.startswith("refused:") and "in use by another bec-jax process" in r.stdout
        with pytest.raises(OutputLocked):   # a second open of the lock in this process conflicts too
            with locked(out):
                pass
    r = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "got it"    # released with the first holder
    data = tmp_path / "d.h5"               # a file output locks a sibling file
    with locked(data):
        assert (tmp_path / "d.h5.lock").exists()
    assert not (tmp_path / "d.h5.lock").exists() and not (out / ".lock").exists()  # removed when released
    # an output removed and made again while locked: the first holder leaves the second's lock file alone
    first = locked(out)
    first.__enter__()
    shutil.rmtree(out)
    out.mkdir()
    with locked(out):
        first.__exit__(None, None, None)
        assert (out / ".lock").exists()



def test_atomic_write_leaves_no_temporary_file(tmp_path):
    from bec_jax.artifacts import _HOST as host
    path = tmp_path / "loss.png"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # a process that has ended
    stale = tmp_path / f"loss.png.{host}.{dead}.tmp"  # as a killed writer leaves it
    stale.write_text("half a figure")
    others = [tmp_path / "other.png.1.tmp",  # not ours: another naming
              tmp_path / f"metrics.json.elsewhere.{dead}.tmp",  # another machine's, on a shared file system
              tmp_path / f"loss.png.{host}.elsewhere.{dead}.tmp",  # a machine whose name starts like this one's
              tmp_path / f"loss.png.x{host}.{dead}.tmp"]  # ... or ends like it
    for other in others:
        other.write_text("x")

    def interrupted(tmp):
        tmp.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert sorted(tmp_path.iterdir()) == sorted([stale, *others])  # its own temporary file gone
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as writer:
        busy = tmp_path / f"loss.png.{host}.{writer.pid}.tmp"  # a running process's, mid-write
        busy.write_text("being written")
        atomic_write_text(path, "new")
        writer.kill()
    assert path.read_text() == "new" and busy.exists() and all(o.exists() for o in others)
    assert not stale.exists()
