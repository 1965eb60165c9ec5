"""`bec-jax pipeline`: config and flags, one tiny end-to-end run, resume, conflicts, CLI errors."""

import argparse
import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from flax import nnx

from bec_jax.artifacts import verify_manifest
from bec_jax.cli import build_parser
from bec_jax.compress.workflow import STALE_BN_RATIO
from bec_jax.models import count_params, init_model
from bec_jax.pipeline import PRESETS, STAGES, PipelineConfig, RunConflict, run_pipeline
from bec_jax.pipeline.clock import StageClock
from bec_jax.pipeline.config import add_config_flags, config_from_args

ROOT = Path(__file__).resolve().parents[2]

# The tiny flags as the CLI takes them: every stage runs, on a 16² grid in about a minute.
TINY_FLAGS = ["--data-n", "16", "--data-n-groups", "10", "--data-states-per-group", "2", "--data-batch-size", "10",
              "--data-n-starts", "1", "--data-max-iter", "300", "--data-g-range", "20,60",
              "--data-omega-range", "0.2,0.5", "--data-keep-unconverged", "true", "--model-base-width", "2",
              "--model-depth", "2", "--train-epochs", "2", "--train-batch-size", "4", "--compress-sparsity", "0.8",
              "--compress-ft-epochs", "1", "--compress-schemes", "per_channel", "--report-samples", "2",
              "--report-latency-repeats", "3", "--report-latency-batch", "2"]


def parse(flags):
    p = argparse.ArgumentParser()
    add_config_flags(p)
    return p.parse_args(flags)


TINY = config_from_args(PRESETS["quick"], parse(TINY_FLAGS))


def test_flags_cover_every_field_and_follow_the_grid():
    c = TINY
    assert (c.data.n, c.model.input_size, c.model.depth, c.train.epochs) == (16, 16, 2, 2)
    assert c.data.g_range == (20.0, 60.0) and c.compress.schemes == ("per_channel",) and c.data.keep_unconverged
    assert c.ft_lr == pytest.approx(c.train.learning_rate / 10)
    # --data-n alone moves the input size and the default depth along
    c64 = config_from_args(PRESETS["paper"], parse(["--data-n", "64"]))
    assert (c64.model.input_size, c64.model.depth) == (64, 6)
    # no flags: the preset itself; the config survives its JSON form
    assert config_from_args(PRESETS["quick"], parse([])) == PRESETS["quick"]
    assert PipelineConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    # every field of every section has a flag (except the derived model sizes)
    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["pipeline"]._actions}
    for section in ("data", "model", "train", "compress", "report"):
        for f in dataclasses.fields(getattr(TINY, section)):
            if f.name not in ("input_size", "in_channels", "out_channels"):
                assert f"{section}__{f.name}" in flags, (section, f.name)


def test_paper_preset_is_the_reference_setup():
    c = PRESETS["paper"]
    assert (c.data.n, c.data.n_samples, c.train.epochs) == (200, 1680, 50)
    model = nnx.eval_shape(lambda: init_model(c.model, 0))
    assert count_params(model) == 17_314_578  # the reference U-Net's 17.3M parameters


@pytest.mark.parametrize("flags, match", [
    (["--compress-sparsity", "1.0"], "sparsity must be in"),
    (["--compress-schemes", "int4"], "unknown quantization scheme"),
    (["--model-depth", "9"], "2\\*\\*depth = 512 for depth 9"),
    (["--train-epochs", "0"], "epochs must be >= 1"),
    (["--report-latency-repeats", "1"], "latency_repeats must be >= 3"),
])
def test_bad_values_are_value_errors_naming_the_field(flags, match):
    with pytest.raises(ValueError, match=match):
        config_from_args(PRESETS["quick"], parse(flags))


def test_bad_flag_types_exit_2():
    with pytest.raises(SystemExit) as e:
        parse(["--train-augment", "maybe"])
    assert e.value.code == 2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    log = []
    run_pipeline(TINY, out, progress=False, log=log.append)
    return out, log


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_tiny_run_writes_report_models_and_figures(tiny_run):
    out, log = tiny_run
    assert [line.split("]")[1].strip() for line in log[:-1]] == list(STAGES)
    r = json.loads((out / "report.json").read_text())
    assert r["schema"] == "bec_jax.pipeline.report/1"
    assert PipelineConfig.from_dict(r["config"]) == TINY
    assert r["dataset"]["n_samples"] >= 5 and r["dataset"]["grid_n"] == 16
    assert r["training"]["epochs"] == 2 and set(r["stage_seconds"]) == set(STAGES) - {"report"}
    assert set(r["stage_invocations"].values()) == {1} and not list((out / "stages").glob("*.elapsed"))
    verify_manifest(out / "stages")  # the stage records' checksums hold (the manifest does not list itself)
    assert set(r["models"]) == {"dense", "pruned", "int8_per_channel", "pruned_int8_per_channel"}
    m = r["models"]
    # every model was reloaded from disk and evaluated; int8 of the same weights barely moves the MSE
    assert m["dense"]["mse_ratio_vs_dense"] == 1.0
    assert abs(m["int8_per_channel"]["mse"] / m["dense"]["mse"] - 1) < 0.1
    assert m["pruned_int8_per_channel"]["payload_bytes"] < m["int8_per_channel"]["payload_bytes"]
    assert m["int8_per_channel"]["payload_bytes"] < 0.4 * m["dense"]["payload_bytes"]
    assert m["int8_per_channel"]["latency_int8_ms"] > 0 and m["dense"]["latency_int8_ms"] is None
    assert 0.79 < r["pruning"]["achieved_sparsity"] < 0.81
    # the pruned model's eval-mode test MSE over its training loss, and the warning exactly when it is far off
    gap, warning = r["pruning"]["eval_to_train_ratio"], r["pruning"]["warning"]
    assert 0 < gap < float("inf") and (warning is None) == (gap <= STALE_BN_RATIO)
    for k in ("mse", "fidelity_mean", "fidelity_zero_momentum_mean", "vortex_count_accuracy"):
        assert 0 <= r["evaluation"][k] < float("inf")
    md = (out / "report.md").read_text()
    assert ("**Warning**" in md) == (warning is not None)
    assert f"| {r['evaluation']['fidelity_zero_momentum_mean']:.4f} |" in md
    for png in r["figures"]:
        assert (out / png).stat().st_size > 5000 and f"]({png})" in md
    assert (out / "models" / "pruned" / "quantized.json").exists() and (out / "train" / "checkpoints").is_dir()
    check_deployment(out, r)


def check_deployment(out: Path, r: dict):
    """The deployed files: listed with size, latency and accuracy when a runtime is installed, else one line."""
    dep, md = r["deployment"], (out / "report.md").read_text()
    if dep["format"] is None:
        assert dep["artifacts"] == {} and "pip install 'bec_jax[deploy]'" in dep["note"]
        assert f"None: {dep['note']}." in md
    else:
        assert set(dep["artifacts"]) == {"dense", "int8_per_channel"}
        for name, a in dep["artifacts"].items():
            assert (out / a["file"]).stat().st_size == a["bytes"] and a["latency_ms"] > 0 and a["file"] in md
            assert a["format"] == dep["format"]
            assert a["mse"] == pytest.approx(r["models"][name]["mse"], rel=1e-4 if name == "dense" else 0.2)
        assert [a["precision"] for a in dep["artifacts"].values()] == ["fp32", "int8"]


@pytest.mark.slow  # the tiny run's deploy stage again, ~10 s a runtime
@pytest.mark.parametrize("fmt", [None, "jax", "onnx"])
def test_the_deploy_stage_with_each_runtime(tiny_run, tmp_path, monkeypatch, fmt):
    """Each branch runs whichever runtimes this machine has beyond the one a branch needs: as if only
    flatbuffers (jax.export) or nothing were installed. The files of the first run's runtime stay in deploy/
    and are not this run's."""
    import shutil

    from bec_jax.deploy import export

    for module in {"jax": ["flatbuffers"], "onnx": ["onnx", "onnxruntime"]}.get(fmt, []):
        pytest.importorskip(module)
    why = "no runtime: pip install 'bec_jax[deploy]' to export" if fmt is None else f"{fmt} runtime"
    monkeypatch.setattr(export, "available_format", lambda: (fmt, why))
    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)
    (out / "stages" / "deploy.json").unlink()
    log = []
    run_pipeline(TINY, out, progress=False, log=log.append)
    assert [line.split("]")[1].strip() for line in log[:-1] if "done earlier" not in line] == ["deploy", "report"]
    r = json.loads((out / "report.json").read_text())
    assert r["deployment"]["format"] == fmt
    check_deployment(out, r)
    recorded = json.loads((out / "stages" / "deploy.json").read_text())["artifacts"]
    assert set(recorded) == {a["file"] for a in r["deployment"]["artifacts"].values()}


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_rerun_resumes_and_redoes_only_unfinished_stages(tiny_run):
    out, _ = tiny_run
    before = json.loads((out / "report.json").read_text())
    stages = out / "stages"
    (stages / "evaluate_compressed.json").unlink()  # as if killed during that stage, twice, after 1000 s
    (stages / "evaluate_compressed.elapsed").write_text(json.dumps(dict(seconds=1000.0, invocations=2)))
    (stages / "deploy.elapsed").write_text(json.dumps(dict(seconds=500.0, invocations=1)))  # a later stage's
    log = []
    run_pipeline(TINY, out, progress=False, log=log.append)
    redone = [line for line in log[:-1] if "done earlier" not in line]
    assert [line.split("]")[1].strip() for line in redone] == ["evaluate_compressed", "deploy", "report"]
    after = json.loads((out / "report.json").read_text())
    # every invocation's time is counted; the later stage's clock went with the results it timed
    ec, dep = (json.loads((stages / f"{s}.json").read_text()) for s in ("evaluate_compressed", "deploy"))
    assert ec["invocations"] == 3 and ec["stage_seconds"] == pytest.approx(1000 + ec["stage_seconds_this_run"])
    assert dep["invocations"] == 1 and dep["stage_seconds"] < 500
    assert after["stage_invocations"]["evaluate_compressed"] == 3 and not list(stages.glob("*.elapsed"))
    assert f"| evaluate_compressed | {ec['stage_seconds']:.0f} | 3 |" in (out / "report.md").read_text()
    assert after["models"]["pruned"]["mse"] == before["models"]["pruned"]["mse"]
    assert after["dataset"] == before["dataset"]


def test_stage_clock_counts_every_invocation(tmp_path):
    """A stopped invocation leaves its time; the next adds its own; a running one saves it every heartbeat."""
    path = tmp_path / "train.elapsed"
    with pytest.raises(KeyboardInterrupt), StageClock(path, heartbeat=0.01) as clock:
        for _ in range(500):  # the heartbeat thread saves while the stage runs
            if path.exists():
                break
            threading.Event().wait(0.01)
        assert json.loads(path.read_text())["invocations"] == 1
        raise KeyboardInterrupt
    first = json.loads(path.read_text())
    assert first == dict(seconds=pytest.approx(clock.this_run), invocations=1) and first["seconds"] > 0
    with StageClock(path) as clock:
        pass
    assert clock.invocations == 2 and clock.seconds == pytest.approx(first["seconds"] + clock.this_run)
    assert path.exists()  # until the stage's record is written
    clock.finish()
    assert not path.exists()
    path.write_text("{not json")
    clock = StageClock(path)
    assert clock.earlier == 0 and str(path) in clock.note


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_other_config_in_the_same_folder_is_refused(tiny_run):
    out, _ = tiny_run
    other = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, epochs=3))
    with pytest.raises(RunConflict, match=r"train.epochs: 2 -> 3"):
        run_pipeline(other, out, progress=False, log=None)


def test_a_run_resumes_with_another_data_batch_size(tmp_path):
    """The batch size of generation only sets how many states are solved at once (after an out-of-memory
    error, a rerun with a smaller one continues); every other setting is the run's."""
    from bec_jax.pipeline.run import prepare_run

    prepare_run(TINY, tmp_path)
    smaller = dataclasses.replace(TINY, data=dataclasses.replace(TINY.data, batch_size=1))
    prepare_run(smaller, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["data"]["batch_size"] == 10  # the run's first
    with pytest.raises(RunConflict, match=r"data.seed: 0 -> 1"):
        prepare_run(dataclasses.replace(smaller, data=dataclasses.replace(smaller.data, seed=1)), tmp_path)


CLI = [sys.executable, "-m", "bec_jax.cli", "pipeline", "--no-progress"]


@pytest.mark.parametrize("args, message", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--out", "/proc/bec_jax_run"], "cannot write to output folder"),
    (["--compress-sparsity", "1.5"], "sparsity must be in [0, 1)"),
])
def test_cli_bad_input_is_one_line_exit_2(args, message, tmp_path):
    r = subprocess.run(CLI + ["--out", str(tmp_path / "x")] + args, capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_cli_conflicting_run_is_one_line_exit_2(tiny_run):
    out, _ = tiny_run
    r = subprocess.run(CLI + TINY_FLAGS + ["--out", str(out), "--train-epochs", "5"], capture_output=True, text=True)
    assert r.returncode == 2 and "another config" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_cli_rerun_of_a_finished_run_from_its_config_json(tiny_run):
    out, _ = tiny_run
    r = subprocess.run(CLI + ["--config", str(out / "config.json"), "--out", str(out)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["report"].endswith("report.md") and summary["test_mse"] > 0


@pytest.mark.slow  # the tiny run's models scored again: ~10 s
def test_vortex_errors_of_a_pipeline_run_s_models(tiny_run, tmp_path):
    """experiments/vortex_errors.py --pipeline: every true vortex of the test split is found or missed by each
    saved model, and false vortices are counted with their sign."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vortex_errors", ROOT / "experiments" / "vortex_errors.py")
    ve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ve)
    out, _ = tiny_run
    assert ve.main(["--pipeline", str(out), "--models", "dense,int8_per_channel", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "vortex_errors.json").read_text())
    true = json.loads((out / "stages" / "evaluate.json").read_text())["summary"]["vortices_true"]
    for name in ("dense", "int8_per_channel"):
        t = result["models"][name]["totals"]
        assert t["found"] + t["missed"] == true and 0 <= t["false_antivortices"] <= t["false"]
        assert sum(r["found"] + r["missed"] for r in result["models"][name]["by_density"]) <= true
    assert "## int8_per_channel" in (tmp_path / "vortex_errors.md").read_text()
    with pytest.raises(SystemExit):
        ve.main(["--pipeline", str(out), "--models", "nothing", "--out", str(tmp_path)])


def test_the_deploy_stage_exports_every_int8_scheme_with_an_integer_path():
    from bec_jax.compress.workflow import CompressConfig
    from bec_jax.pipeline.run import _deployed

    config = dataclasses.replace(PRESETS["paper"], compress=CompressConfig(
        schemes=("per_tensor", "per_channel", "mixed", "reference_per_tensor")))
    assert _deployed(config) == ["dense", "int8_per_tensor", "int8_per_channel", "int8_mixed"]
