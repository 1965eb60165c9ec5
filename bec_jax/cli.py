"""`bec-jax` command line.

One error path for every subcommand: bad input, a damaged or foreign file, a busy or
unwritable output are one line naming the file or value, exit code 2; anything
unexpected prints a one-line summary before its traceback (exit 1); bec_jax's warnings
are one line too. SIGINT and SIGTERM exit 130 and 143 with one line, within a few seconds even
inside a long XLA call: every file bec_jax writes is replaced atomically, so stopping
anywhere leaves nothing half-written, and the long commands (``RESUMABLE``) resume. Each output folder
(or file) is locked for the command's lifetime, so a second process on it refuses at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import time
import traceback
import warnings

from bec_jax.artifacts import first_line
from bec_jax.distributed import DistributedConfig, is_collective_failure
from bec_jax.flags import add_dataclass_flags, config_from_flags, holding_locks, positive_int, set_lead_process


COMMAND_MODULES = ["bec_jax.gpe.commands", "bec_jax.data.commands", "bec_jax.train.commands", "bec_jax.compress.commands",
                   "bec_jax.pipeline.commands", "bec_jax.deploy.commands", "bec_jax.deploy.export_commands",
                   "bec_jax.bench.commands"]


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors as one line naming the command, not the whole usage block."""

    def error(self, message):
        if message.endswith("expected one argument"):  # argparse takes "-0.5,-0.3" or "-1e-3" for an option
            message += " (a value starting with '-' goes as --flag=VALUE)"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bec-jax", description="Rotating BEC ground states, data and models in JAX.")
    p.add_argument("--cpu-devices", type=positive_int, default=None,
                   help="split the host CPU into this many XLA devices, over which batched solvers shard "
                        "(default: one per core, or the count JAX_NUM_CPU_DEVICES / XLA_FLAGS set; 1: no split)")
    add_dataclass_flags(p, DistributedConfig, prefix="", title="multi-process runs (jax.distributed; default: the "
                        "JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment, or a detected "
                        "SLURM / Open MPI job)")
    sub = p.add_subparsers(dest="command", required=True)
    # Each concern registers its own subcommands: module.register(subparsers).
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    p.subcommands = sub.choices  # name -> its parser
    return p


#: seconds a signalled command has to reach Python's handler before it is ended from outside
SIGNAL_GRACE_S = 3.0


class _Signalled(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _install_signal_handlers(command: str) -> None:
    """SIGINT/SIGTERM raise ``_Signalled`` in the main thread (or, where Python swallows it, end
    the process from ``sys.unraisablehook``). A watchdog woken by the signal
    itself (``signal.set_wakeup_fd``) ends the process if the main thread is still inside a
    long native call after ``SIGNAL_GRACE_S`` (Python runs handlers only between bytecodes)."""
    def handler(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):  # one stop: a second Ctrl-C must not break the exit
            signal.signal(sig, signal.SIG_IGN)
        raise _Signalled(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # a signal the parent chose to ignore stays ignored
            signal.signal(sig, handler)
    previous_hook = sys.unraisablehook

    def unraisable(info):
        # The handler ran inside a __del__ or weakref callback (a GC pass, often XLA's buffers), where
        # Python swallows exceptions: stop here instead of printing "Exception ignored" and waiting.
        if isinstance(info.exc_value, _Signalled):
            _exit_signalled(command, info.exc_value.signum)
        previous_hook(info)

    sys.unraisablehook = unraisable
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)

    def watchdog():
        while (signum := os.read(r, 1)[0]) not in (signal.SIGINT, signal.SIGTERM):
            pass
        time.sleep(SIGNAL_GRACE_S)
        _exit_signalled(command, signum)

    threading.Thread(target=watchdog, daemon=True, name="bec-jax-signal-watchdog").start()


_exiting = threading.Lock()

#: the commands a rerun continues where a stop left them (the others start again; a stopped shrink or quantize
#: replaces the model it saved)
RESUMABLE = frozenset({"generate", "train", "prune", "pipeline", "predict"})


def _exit_signalled(command: str, signum: int):
    if not _exiting.acquire(blocking=False):  # the main thread and the watchdog met here: one message
        time.sleep(60)
    name = signal.Signals(signum).name
    then = "rerun the same command to " + ("resume" if command in RESUMABLE else "start again")
    # os.write, not print: the main thread may hold the stdio locks when the watchdog gets here.
    os.write(2, f"bec-jax {command}: stopped by {name}; {then}\n".encode())
    from bec_jax.flags import abandon

    abandon(_Signalled(signum))  # what unwinding would have done: locks released, empty output folders removed
    # Skip interpreter teardown: XLA and orbax threads still running then are what crashed it.
    os._exit(128 + signum)


def main(argv=None) -> int:
    """Run ``bec-jax`` with ``argv`` (default: the command line). As the console script
    (argv None) it also handles SIGINT/SIGTERM (module doc)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the subcommand they were given to
        parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        from bec_jax.gpe.sharding import use_cpu_cores

        use_cpu_cores(args.cpu_devices)
    except RuntimeError:
        if args.cpu_devices is not None:  # JAX already runs in this process (called from Python)
            print("bec-jax: error: --cpu-devices must be set before JAX starts in this process", file=sys.stderr)
            return 2
    except ValueError as e:
        print(f"bec-jax: error: --cpu-devices: {e}", file=sys.stderr)
        return 2
    try:
        from bec_jax.distributed import initialize

        joined = initialize(config_from_flags(DistributedConfig(), args))
        if joined:
            import jax

            set_lead_process(jax.process_index() == 0)
    except (ValueError, RuntimeError) as e:
        print(f"bec-jax: error: multi-process set-up: {first_line(e, 500)}", file=sys.stderr)
        return 2
    console = argv is None and threading.current_thread() is threading.main_thread()
    if console:
        _install_signal_handlers(args.command)
    code = _run_command(args, console)
    if code and joined:
        _exit_multi_process(args.command, code)
    return code


def _exit_multi_process(command: str, code: int):
    """End a failed process of a multi-process run at once: JAX's orderly shutdown would wait for every
    other process first. The others then fail too (a collective with this one breaks; the coordinator
    stops a run whose process stopped sending heartbeats)."""
    import jax

    sys.stdout.flush()
    then = ("fix the settings the error names and rerun every process" if code == 2 else  # a usage error
            "if the error names another process or a closed connection, look for the first failure in every "
            "process's log; rerun every process with the same command to resume")
    os.write(2, f"bec-jax {command}: process {jax.process_index()} of {jax.process_count()} stopped (exit {code}); "
                f"the other processes of the run stop too. {then[0].upper() + then[1:]}\n".encode())
    os._exit(code)


@contextlib.contextmanager
def _warnings_as_lines(command: str, enabled: bool):
    """Show bec_jax's warnings as the commands' own lines (``bec-jax CMD: warning: ...``), not as
    ``path:line: Category: ...`` followed by a line of bec_jax's source; other libraries' keep their
    format. Only at the console: a Python caller (pytest, a notebook) keeps its own warning handling."""
    if not enabled:
        yield
        return
    previous = warnings.showwarning

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep

    def show(message, category, filename, lineno, file=None, line=None):
        # bec_jax's own categories, or any warning bec_jax's code raised (ground_state's RuntimeWarning)
        if not (category.__module__.startswith("bec_jax") or os.path.abspath(filename).startswith(package)):
            return previous(message, category, filename, lineno, file, line)
        try:
            print(f"bec-jax {command}: warning: {first_line(message, 1000)}", file=file or sys.stderr, flush=True)
        except OSError:  # stderr closed: as Python's own printer, do not fail the command for a warning
            pass

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _run_command(args, console: bool = False) -> int:
    try:
        with holding_locks(), _warnings_as_lines(args.command, console):
            return args.func(args)
    except _Signalled as e:
        _exit_signalled(args.command, e.signum)
    except KeyboardInterrupt:
        print(f"bec-jax {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        return _report_error(args.command, e)


def _report_error(command: str, e: Exception) -> int:
    """One line on stderr for a failed command; the exit code (2: the user's input or files, 1: other)."""
    if is_collective_failure(e):  # before ValueError: a broken exchange can surface as one
        print(f"bec-jax {command}: error: an exchange with the other processes failed, most likely because "
              f"another process stopped: {first_line(e, 500)}", file=sys.stderr)
        return 1
    if str(e).lstrip().startswith("RESOURCE_EXHAUSTED:"):  # XLA out of (device) memory: the settings ask too much
        print(f"bec-jax {command}: error: out of memory; use a smaller batch size or grid "
              f"({first_line(e, 300)})", file=sys.stderr)
        return 2
    if isinstance(e, Warning):  # a warning the user made an error (-W error, PYTHONWARNINGS)
        print(f"bec-jax {command}: error: {type(e).__name__}: {first_line(e, 1000)}", file=sys.stderr)
        return 2
    if isinstance(e, ValueError):  # UsageError, CorruptArtifact, OutputLocked, config and data errors
        print(f"bec-jax {command}: error: {first_line(e, 1000)}", file=sys.stderr)
        return 2
    if isinstance(e, OSError):  # missing, unreadable or unwritable files, a full disk
        where = f"{e.filename!r}: " if e.filename else ""
        print(f"bec-jax {command}: error: {where}{e.strerror or first_line(e)}", file=sys.stderr)
        return 2
    print(f"bec-jax {command}: unexpected error: {type(e).__name__}: {first_line(e)} (traceback below; "
          "please report it)", file=sys.stderr, flush=True)
    traceback.print_exception(e)
    return 1


if __name__ == "__main__":
    sys.exit(main())
