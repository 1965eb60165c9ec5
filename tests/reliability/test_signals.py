"""SIGINT and SIGTERM: a one-line message, exit 130 / 143 within seconds, never a crash, and the same
command resumes."""

import signal
import subprocess
import sys
import time

import pytest

from bec_jax.data.storage import read_h5

GEN = [sys.executable, "-m", "bec_jax.cli", "generate", "--out", "s.h5", "--n", "64", "--n-groups", "100",
       "--states-per-group", "2", "--batch-size", "2", "--n-starts", "2", "--max-iter", "600", "--no-progress"]

# The generator with SIGINT's default disposition: a suite run in the background (``cmd &``, ``nohup``) has
# SIGINT ignored, and bec-jax keeps a signal its parent ignores. Reset in the child's Python, not by a
# preexec_fn (a fork of the multithreaded test process).
INTERRUPTIBLE = [sys.executable, "-c", "import runpy, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                 "runpy.run_module('bec_jax.cli', run_name='__main__', alter_sys=True)"]


def _wait_for(path, timeout=120):
    t0 = time.monotonic()
    while not path.exists():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(path)
        time.sleep(0.2)


# SIGTERM takes the same path as SIGINT (and the finalizer test below sends it): the slow suite runs it
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)])
def test_signal_stops_cleanly_and_the_run_resumes(sig, code, tmp_path):
    proc = subprocess.Popen(INTERRUPTIBLE + GEN[3:], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(tmp_path / "s.h5.partial" / "batch_000000000_000000002.h5")   # in the middle of the work
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10, err
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"bec-jax generate: stopped by {sig.name}; rerun the same command to resume"]
    batches = list(tmp_path.glob("s.h5.partial/batch_*.h5"))
    for b in batches:                                          # nothing half-written is left as a batch
        read_h5(b)
    done = len(batches)
    r = subprocess.run(GEN + ["--max-batches", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list(tmp_path.glob("s.h5.partial/batch_*.h5"))) == done + 1


# A signal that lands in a __del__ or weakref callback (a garbage-collection pass: JAX frees buffers there)
# raises where Python swallows exceptions; it must still stop at once, with the one line.
SWALLOWED = ("import os, signal, time; from bec_jax import cli; cli._install_signal_handlers('generate')\n"
             "class Dying:\n"
             "    def __del__(self):\n"
             "        os.kill(os.getpid(), signal.SIGTERM)\n"
             "        for _ in range(10**6): pass\n"
             "Dying()\n"
             "time.sleep(30)\n")


def test_signal_inside_a_finalizer_stops_at_once():
    r = subprocess.run([sys.executable, "-c", SWALLOWED], capture_output=True, text=True, timeout=60)
    assert r.returncode == 143, r.stderr
    assert r.stderr.strip().splitlines() == ["bec-jax generate: stopped by SIGTERM; rerun the same command to resume"]


@pytest.mark.parametrize("command, then", [("predict", "rerun the same command to resume"),
                                           ("demo", "rerun the same command to start again")])
def test_the_stop_message_says_whether_a_rerun_resumes(command, then):
    code = (f"import os, signal, time; from bec_jax import cli; cli._install_signal_handlers({command!r})\n"
            "try:\n    os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
            "except BaseException:\n    time.sleep(30)  # the watchdog's exit\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 143 and r.stderr.strip().splitlines() == [f"bec-jax {command}: stopped by SIGTERM; {then}"]


def test_the_watchdogs_exit_releases_the_lock_and_removes_the_empty_output(tmp_path):
    """A stop while the main thread is stuck (inside XLA) ends by ``os._exit``, which skips unwinding: the
    lock file and the output folder the command made, still empty, go all the same."""
    out = tmp_path / "new" / "out"
    code = ("import os, signal, sys, time; from bec_jax import cli, flags; cli._install_signal_handlers('quantize')\n"
            "with flags.holding_locks():\n    flags.out_dir(sys.argv[1])\n"
            "    try:\n        os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
            "    except BaseException:\n        time.sleep(30)  # stuck: the watchdog's exit\n")
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 143, r.stderr
    assert not (tmp_path / "new").exists()
