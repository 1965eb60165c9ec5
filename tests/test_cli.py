"""The `bec-jax` command line: demo output and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import pytest

from bec_jax.cli import main

BEC = [sys.executable, "-m", "bec_jax.cli"]


def test_demo_writes_png_and_json(tmp_path):
    rc = main(["demo", "--out", str(tmp_path), "--n", "32", "--omega", "0.0,0.5", "--g", "50", "--starts", "1"])
    assert rc == 0
    summary = json.loads((tmp_path / "ground_states.json").read_text())
    assert [s["omega"] for s in summary["states"]] == [0.0, 0.5]
    assert all(s["converged"] for s in summary["states"])
    png = (tmp_path / "ground_states.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_warning_is_one_line_naming_the_command(tmp_path):
    # a cloud wider than the box: ground_state's BoxTooSmallWarning, at the console one line like the commands' own
    small_box = ["demo", "--out", str(tmp_path), "--n", "16", "--length", "6", "--g", "400", "--omega", "0",
                 "--starts", "1"]
    out = subprocess.run(BEC + small_box, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bec-jax demo: warning: 1 of 1 ground states reach the edge"), err
    assert json.loads((tmp_path / "ground_states.json").read_text())["states"][0]["touches_edge"]
    # called from Python, the caller's warning handling is left alone
    with pytest.warns(RuntimeWarning, match="reach the edge"):
        assert main(small_box) == 0


def test_warning_made_an_error_is_one_line_exit_2(tmp_path, capsys):
    import warnings

    import bec_jax as bj

    with warnings.catch_warnings():
        warnings.simplefilter("error", bj.BoxTooSmallWarning)
        rc = main(["demo", "--out", str(tmp_path), "--n", "16", "--length", "6", "--g", "400", "--omega", "0",
                   "--starts", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("bec-jax demo: error: BoxTooSmallWarning: 1 of 1"), err


@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "--omega", "1.2"], "|omega| < 1"),
        (["demo", "--g", "-3"], "g must be"),
        (["demo", "--n", "31"], "even"),
        (["demo", "--g", "1,2,3", "--omega", "0.1,0.2"], "one g or one per omega"),
        (["demo", "--out", "/proc/forbidden"], "cannot write"),
        (["generate", "--preset", "huge"], "unknown preset"),
        (["generate", "--out", "x.txt"], ".h5"),
        (["show-data", "--data", "/nonexistent.h5"], "no dataset"),
        (["show-data", "--out", "figure"], "--out must be a .png file, got 'figure'"),
        (["show-data", "--seed=-3"], "seed must be in [0, 2**31), got -3"),
        (["show-data", "--samples", "1000"], "samples must be in [1, 16], got 1000"),
        (["demo", "--seed", str(2**63)], "seed must be in [0, 2**31)"),
        (["demo", "--out", "/etc/passwd"], "output folder '/etc/passwd' is a file"),
    ],
)
def test_bad_input_one_line_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_entry_point_exit_code_and_argparse_errors(tmp_path):
    out = subprocess.run(BEC + ["demo", "--omega", "abc"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "expected float, got 'abc'" in out.stderr
    # argparse's own errors: one line naming the subcommand, not the usage block
    for args, words in ((["train", "--epochs", "1.5"], "bec-jax train: error: argument --epochs: expected int"),
                        (["train", "--epochz", "2"], "bec-jax train: error: unrecognized arguments: --epochz 2"),
                        (["demo", "--omega", "-0.5,-0.3"], "bec-jax demo: error: argument --omega: expected one "
                                                           "argument (a value starting with '-' goes as --flag=VALUE)")):
        out = subprocess.run(BEC + args, capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith(words), out.stderr
    out = subprocess.run(BEC + ["demo", "--omega", "1.5"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "|omega| < 1" in out.stderr


def test_cpu_devices_flag(capsys):
    import jax

    # JAX runs in this process: too late to split the host into another number of
    # devices (asking for the count it already has is harmless, and an earlier CLI
    # test in this process may have set it to the number of cores)
    other = str(jax.local_device_count() + 1)
    assert main(["--cpu-devices", other, "demo"]) == 2
    assert "--cpu-devices must be set before JAX starts" in capsys.readouterr().err
    out = subprocess.run(BEC + ["--cpu-devices", "0", "demo"], capture_output=True, text=True)
    assert out.returncode == 2 and "expected an integer >= 1" in out.stderr


@pytest.mark.slow  # a fresh process compiling a demo: ~20 s on 2 cores
def test_cli_splits_the_host_into_devices(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    out = subprocess.run(BEC + ["--cpu-devices", "2", "demo", "--out", str(tmp_path), "--n", "16", "--length", "8",
                                "--omega", "0.0,0.3", "--g", "5", "--starts", "1"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "(2 device(s))" in out.stdout, out.stderr[-2000:]


def test_flags_are_generated_from_config_dataclasses(capsys):
    """Every field of a command's config is a flag whose help states its meaning and default."""
    import dataclasses

    from bec_jax.bench.measure import BenchConfig
    from bec_jax.compress.workflow import CompressConfig, QuantizeConfig, ShrinkConfig
    from bec_jax.data.generate import GenerateConfig
    from bec_jax.data.plots import SampleFigure
    from bec_jax.deploy.export import ExportConfig
    from bec_jax.deploy.predict import ImageSettings
    from bec_jax.flags import field_docs
    from bec_jax.gpe import PCG
    from bec_jax.gpe.commands import DemoConfig
    from bec_jax.train import TrainConfig
    from bec_jax.train.evaluate import EvalConfig

    for command, cls, prefix, exclude in (
            ("demo", DemoConfig, "", ()), ("demo", PCG, "pcg-", ()), ("train", TrainConfig, "", ()),
            ("evaluate", EvalConfig, "", ()), ("generate", GenerateConfig, "", ()), ("show-data", SampleFigure, "", ()),
            ("prune", CompressConfig, "", ("schemes", "combined_scheme")), ("shrink", ShrinkConfig, "", ()),
            ("quantize", QuantizeConfig, "", ()), ("export", ExportConfig, "", ()),
            ("predict", ImageSettings, "", ()), ("bench", BenchConfig, "", ())):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name in exclude:
                continue
            assert f"--{prefix}{f.name.replace('_', '-')}" in text, (command, f.name)
            assert " ".join(docs[f.name].split()[:4]) in text, (command, f.name)  # its description, from the docstring
        if command == "train":
            assert "--learning-rate FLOAT, --lr FLOAT" in text and "(default: 0.001)" in text


def test_out_of_memory_is_one_line_naming_the_remedy(capsys):
    import jax

    from bec_jax.cli import _report_error

    for error in (jax.errors.JaxRuntimeError, ValueError):  # raised by a fetch, or by jit's dispatch
        assert _report_error("train", error("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "out of memory; use a smaller batch size" in err and "9.1GiB" in err
