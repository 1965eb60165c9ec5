import json

import pytest

from bec_jax.cli import main


def test_bad_input_is_a_clear_error(capsys, tmp_path):
    assert main(["prune", "--sparsity", "1.2", "--out", str(tmp_path / "o")]) == 2
    assert "[0, 1)" in capsys.readouterr().err
    assert main(["quantize", "--scheme", "int4", "--run", str(tmp_path)]) == 2
    assert "unknown scheme 'int4'" in capsys.readouterr().err
    assert main(["quantize", "--scheme", "reference_per_tensor", "--qat-epochs", "1", "--run", str(tmp_path)]) == 2
    assert "reference_per_tensor is post-training only" in capsys.readouterr().err
    assert main(["prune", "--run", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no training run" in capsys.readouterr().err
    assert main(["prune", "--distribution", "layerwise", "--out", str(tmp_path / "o")]) == 2
    assert "'layerwise'" in capsys.readouterr().err
    assert main(["prune", "--last-ft-epochs", "0", "--out", str(tmp_path / "o")]) == 2
    assert "last_ft_epochs must be >= 1, got 0" in capsys.readouterr().err
    assert main(["prune", "--method", "finetune", "--last-ft-epochs", "5", "--out", str(tmp_path / "o")]) == 2
    assert "last_ft_epochs sets the last stage of the iterative method" in capsys.readouterr().err
    for keep in ("0", "1.5"):
        assert main(["shrink", "--keep", keep]) == 2
        assert "keep must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["shrink", "--keep", "half"])
    assert e.value.code == 2 and "expected float, got 'half'" in capsys.readouterr().err
    assert main(["shrink", "--ft-epochs", "-1", "--run", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    assert "ft_epochs must be >= 0" in capsys.readouterr().err
    assert main(["shrink", "--run", str(tmp_path / "none"), "--out", str(tmp_path / "s")]) == 2
    assert "no training run" in capsys.readouterr().err


def test_prune_flags_are_the_compress_config_s(capsys):
    import argparse
    import dataclasses

    from bec_jax.compress import CompressConfig
    from bec_jax.compress.commands import register

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    options = {o for a in sub.choices["prune"]._actions for o in a.option_strings}
    fields = {f.name for f in dataclasses.fields(CompressConfig)} - {"schemes", "combined_scheme"}
    assert {"--" + f.replace("_", "-") for f in fields} <= options
    help_text = " ".join(sub.choices["prune"].format_help().split())
    assert "(default: iterative)" in help_text and "(default: 0.9)" in help_text
    for name in ("prune", "shrink", "quantize"):  # long work shows a bar unless asked not to
        assert "--no-progress" in {o for a in sub.choices[name]._actions for o in a.option_strings}


@pytest.mark.slow
def test_shrink_end_to_end(small_run, tmp_path):
    from bec_jax.compress.quantization import load_quantized

    run, _ = small_run
    assert main(["shrink", "--run", str(run), "--keep", "0.5", "--outer", "--ft-epochs", "1", "--repeats", "3",
                 "--out", str(tmp_path / "s")]) == 0
    rep = json.loads((tmp_path / "s" / "shrink.json").read_text())
    assert rep["params"] < 0.3 * rep["params_dense"]  # every conv halved in both dimensions
    assert rep["outer_widths"] == [2, 4, 4, 2, 2] and rep["kept_epoch"] == 1
    assert rep["test_mse_reloaded"] > 0 and rep["speedup"] > 0
    assert rep["evaluation"]["mse"] == pytest.approx(rep["test_mse_reloaded"], rel=1e-4)
    back, meta = load_quantized(tmp_path / "s" / "model")
    assert meta["outer_widths"] == rep["outer_widths"] and meta["extra"]["kind"] == "structured"


@pytest.mark.slow
def test_prune_then_quantize_end_to_end(small_run, tmp_path, capsys):
    run, data = small_run
    assert main(["prune", "--run", str(run), "--sparsity", "0.9", "--method", "iterative", "--schedule", "0.5",
                 "--ft-epochs", "1", "--last-ft-epochs", "2", "--reclaim-dead-scales", "--precise-bn",
                 "--out", str(tmp_path / "p")]) == 0
    rep = json.loads((tmp_path / "p" / "prune.json").read_text())
    assert rep["precise_bn"] and rep["last_ft_epochs"] == 2
    assert [len(s["val_mse"]) for s in rep["stages"]] == [1, 2]
    assert rep["prune_config"]["reclaim_dead_scales"] and rep["prune_config"]["distribution"] == "global"
    assert rep["sparsity_table"]["total"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert [s["sparsity"] for s in rep["stages"]] == [0.5, 0.9]
    # the summary's test MSE is the reloaded model's, the last stage's in memory to round-off
    assert rep["test_mse"] == pytest.approx(rep["stages"][-1]["test_mse_finetuned"], rel=1e-5)
    assert rep["test_mse_ref"] == pytest.approx(rep["stages"][-1]["test_mse_finetuned_ref"], rel=1e-5)
    assert not (tmp_path / "p" / "stages").exists() and "evaluation" not in rep["stages"][0]  # kept only if asked
    # and the full evaluation of the reloaded model, as the pipeline gives its models
    ev = rep["evaluation"]
    assert ev["mse"] == pytest.approx(rep["test_mse"], rel=1e-4) and 0 <= ev["fidelity_mean"] <= 1
    assert ev["true_positives"] + ev["false_negatives"] == ev["vortices_true"]
    assert 0 < rep["test_mse_dense_ref"] < rep["test_mse_dense"]
    assert main(["quantize", "--run", str(run), "--scheme", "per_channel", "--from-pruned", str(tmp_path / "p"),
                 "--sparse", "--qat-epochs", "1", "--out", str(tmp_path / "q")]) == 0
    q = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert q["payload_bytes"] < q["fp32_payload_bytes"] / 4
    assert q["test_mse_reloaded"] > 0
    assert q["evaluation"]["mse"] == pytest.approx(q["test_mse_reloaded"], rel=1e-4)
    # stopped after saving its models, during the evaluation: the same command replaces them, no --overwrite;
    # a folder holding another command's model (prune's) stays protected
    (tmp_path / "q" / "quantize.json").unlink()
    again = ["quantize", "--run", str(run), "--scheme", "per_channel", "--no-progress"]
    assert main([*again, "--out", str(tmp_path / "q")]) == 0 and (tmp_path / "q" / "quantize.json").is_file()
    capsys.readouterr()
    assert main([*again, "--out", str(tmp_path / "q")]) == 2  # finished: nothing to do
    assert "holds a finished `bec-jax quantize` (quantize.json): nothing to do" in capsys.readouterr().err
    assert main([*again, "--scheme", "per_tensor", "--out", str(tmp_path / "q")]) == 2
    assert "with other settings (scheme per_channel there, per_tensor here)" in capsys.readouterr().err
    # the saved model folder itself (a pipeline's models/pruned) is a pruned model too
    assert main([*again, "--from-pruned", str(tmp_path / "p" / "model"), "--out", str(tmp_path / "q4")]) == 0
    assert json.loads((tmp_path / "q4" / "quantize.json").read_text())["test_mse_reloaded"] > 0
    capsys.readouterr()  # quantize's model over the one it reads: refused before any work, even with --overwrite
    assert main([*again, "--from-pruned", str(tmp_path / "p" / "model"), "--out", str(tmp_path / "p"),
                 "--overwrite"]) == 2
    assert "the output" in capsys.readouterr().err and (tmp_path / "p" / "prune.json").is_file()
    capsys.readouterr()
    assert main([*again, "--out", str(tmp_path / "p")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err and (tmp_path / "p" / "prune.json").is_file()
    # a pruned model of another architecture is refused
    from bec_jax.compress.quantization import save_quantized
    from bec_jax.models import UNetConfig, init_model

    save_quantized(tmp_path / "other" / "model", init_model(UNetConfig(base_width=6, depth=2, input_size=32)), None)
    assert main(["quantize", "--run", str(run), "--from-pruned", str(tmp_path / "other"),
                 "--out", str(tmp_path / "q2")]) == 2
    assert "other/model' holds a model of another architecture" in capsys.readouterr().err
    # an int8 model given as the pruned one (quantize's, a pipeline's int8 variant), and no folder at all: one line
    # each, nothing left behind
    from bec_jax.compress.quantization import QuantConfig, load_quantized

    save_quantized(tmp_path / "variant", load_quantized(tmp_path / "p" / "model")[0],
                   QuantConfig.preset("per_channel"), extra=dict(kind="int8_per_channel"))
    for given, words in (("q", "holds an int8 model already"), ("variant", "holds an int8 model already"),
                         ("nope", "no model folder at")):
        assert main(["quantize", "--run", str(run), "--from-pruned", str(tmp_path / given),
                     "--out", str(tmp_path / "q3")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "q3").exists()


@pytest.mark.slow
def test_prune_keeps_and_evaluates_every_stage_when_asked(small_run, tmp_path):
    from bec_jax.compress.quantization import load_quantized

    run, _ = small_run
    out = tmp_path / "p"
    assert main(["prune", "--run", str(run), "--sparsity", "0.8", "--method", "iterative", "--schedule", "0.5",
                 "--ft-epochs", "1", "--keep-stages", "--no-progress", "--out", str(out)]) == 0
    rep = json.loads((out / "prune.json").read_text())
    first, last = rep["stages"]
    assert 0 < rep["eval_to_train_ratio"] < float("inf")  # the saved (last) stage's eval-mode MSE / training loss
    # each stage's saved model, reloaded, scores the stage's test MSE; the last one is the run's model
    assert first["model"] == str(out / "stages" / "stage_0")
    assert first["evaluation"]["mse"] == pytest.approx(first["test_mse_finetuned"], rel=1e-4)
    assert 0 <= first["evaluation"]["fidelity_mean"] <= 1 and last["evaluation"] == rep["evaluation"]
    back, meta = load_quantized(out / "stages" / "stage_0")
    assert meta["extra"]["row"]["sparsity"] == 0.5


@pytest.mark.slow  # ~50 s on 2 cores
def test_a_physics_informed_run_prunes_and_quantizes(small_dataset, tmp_path, capsys):
    """The run's own loss ("mse+fidelity") and optimizer fine-tune the pruned model."""
    from bec_jax.compress.workflow import FineTuner, load_setup
    from bec_jax.models import UNetConfig
    from bec_jax.train import TrainConfig, fit

    config = TrainConfig(epochs=1, batch_size=4, loss="mse+fidelity", fidelity_weight=0.5, optimizer="sgd",
                         learning_rate=1e-2, momentum=0.9)
    fit(small_dataset, tmp_path / "run", UNetConfig(base_width=4, depth=2, input_size=32), config, progress=False,
        log=None)
    setup = load_setup(tmp_path / "run")
    assert setup.train_config == config and setup.train.batch_size == 4
    # fine-tuning uses the run's optimizer (SGD with momentum: one trace in the optimizer state), not Adam
    tuner = FineTuner(setup.model, setup.train, learning_rate=1e-3, config=setup.train_config)
    assert "TraceState" in repr(tuner.tx.init(nnx_params(setup.model)))
    assert main(["prune", "--run", str(tmp_path / "run"), "--sparsity", "0.5", "--method", "finetune",
                 "--ft-epochs", "1", "--out", str(tmp_path / "p")]) == 0
    assert main(["quantize", "--run", str(tmp_path / "run"), "--scheme", "per_channel", "--from-pruned",
                 str(tmp_path / "p"), "--out", str(tmp_path / "q")]) == 0
    report = json.loads((tmp_path / "p" / "prune.json").read_text())
    assert report["stages"][-1]["test_mse_finetuned"] > 0 and (tmp_path / "q" / "quantize.json").is_file()


def nnx_params(model):
    from flax import nnx

    return nnx.state(model, nnx.Param)


@pytest.mark.slow
def test_a_prune_stopped_after_saving_its_model_reruns(small_run, tmp_path, monkeypatch, capsys):
    """A kill between the model's save and prune.json (while the reloaded model is evaluated) leaves the
    saved stages and the model: the same command then finishes instead of refusing the model folder."""
    import bec_jax.compress.quantization as quantization

    run, _ = small_run
    argv = ["prune", "--run", str(run), "--sparsity", "0.5", "--method", "prune", "--out", str(tmp_path / "p")]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(quantization, "load_quantized", killed)
        assert main([*argv, "--ft-epochs", "3", "--keep", "last"]) == 130
    assert (tmp_path / "p" / "model").is_dir() and not (tmp_path / "p" / "prune.json").exists()
    assert ("bec-jax prune: warning: --ft-epochs, --keep not used by --method prune (one shot, no fine-tuning)"
            in capsys.readouterr().err)
    assert main(argv) == 0
    said = capsys.readouterr().err
    assert f"bec-jax prune: resuming after stage 1 of 1 in {str(tmp_path / 'p' / 'stages')!r}" in said
    rep = json.loads((tmp_path / "p" / "prune.json").read_text())
    assert rep["test_mse"] > 0 and not (tmp_path / "p" / "stages").exists() and rep["schedule"] is None
    assert "not used by" not in said
    assert main(argv) == 2  # a finished run is not replaced without --overwrite
    assert "(prune.json): nothing to do" in capsys.readouterr().err
    assert main([*argv, "--ft-epochs", "3"]) == 2  # a setting the one-shot method does not use is no difference
    assert "(prune.json): nothing to do" in capsys.readouterr().err
    assert main([*argv, "--run", str(run) + "/"]) == 2  # the same run, spelled another way
    assert "(prune.json): nothing to do" in capsys.readouterr().err
    assert main([*argv, "--run", str(tmp_path / "another")]) == 2
    assert f"run {run} there, {tmp_path / 'another'} here" in capsys.readouterr().err
    assert main([*argv, "--sparsity", "0.6", "--distribution", "lamp"]) == 2
    assert "with other settings (sparsity 0.5 there, 0.6 here; distribution global there, lamp here)" in \
        capsys.readouterr().err


@pytest.mark.slow
def test_prune_warns_when_the_saved_model_s_statistics_look_stale(small_run, tmp_path, monkeypatch, capsys):
    """The warning line and prune.json's eval_to_train_ratio come from the last stage's row: training losses made
    1000x smaller than the run's (the eval-mode MSE then far above them) raise it; the run's own do not."""
    import bec_jax.compress.workflow as workflow

    run, _ = small_run
    argv = ["prune", "--run", str(run), "--sparsity", "0.5", "--method", "finetune", "--ft-epochs", "1",
            "--no-progress", "--out"]
    assert main(argv + [str(tmp_path / "healthy")]) == 0
    healthy = json.loads((tmp_path / "healthy" / "prune.json").read_text())["eval_to_train_ratio"]
    stale = "bec-jax prune: warning: the pruned model's test MSE in eval mode"
    assert 0 < healthy and (stale in capsys.readouterr().err) == (healthy > workflow.STALE_BN_RATIO)
    real = workflow.prune_and_finetune

    def small_losses(*args, **kwargs):
        model, masks, rows = real(*args, **kwargs)
        rows[-1]["train_losses"] = [loss / 1000 for loss in rows[-1]["train_losses"]]
        return model, masks, rows

    monkeypatch.setattr(workflow, "prune_and_finetune", small_losses)
    assert main(argv + [str(tmp_path / "stale")]) == 0
    gap = json.loads((tmp_path / "stale" / "prune.json").read_text())["eval_to_train_ratio"]
    assert gap == pytest.approx(1000 * healthy, rel=1e-2)
    assert f"bec-jax prune: warning: the pruned model's test MSE in eval mode is {gap:.3g}x its training loss" \
        in capsys.readouterr().err
    assert main(argv + [str(tmp_path / "precise"), "--precise-bn"]) == 0  # precise statistics: another cause
    assert stale not in capsys.readouterr().err


def test_the_printed_line_gives_fidelity_and_warns_of_a_model_that_has_not_learnt_the_phase(tmp_path, capsys):
    from bec_jax.compress.commands import _print_headline

    ev = dict(fidelity_mean=0.128, fidelity_zero_phase_mean=0.131, vortex_count_accuracy=0.0)
    _print_headline("shrink", dict(ratio_to_dense=1.9, evaluation=ev), ("ratio_to_dense",), tmp_path / "shrink.json")
    out, err = capsys.readouterr()
    assert json.loads(out) == dict(ratio_to_dense=1.9, fidelity_mean=0.128, vortex_count_accuracy=0.0,
                                   json=str(tmp_path / "shrink.json"))
    assert err.strip() == ("bec-jax shrink: warning: this model has not learnt the phase: mean fidelity 0.128, no "
                           "better than a zero-phase guess's 0.131")
    _print_headline("shrink", dict(ratio_to_dense=1.0, evaluation=dict(ev, fidelity_mean=0.9)), ("ratio_to_dense",),
                    tmp_path / "shrink.json")
    assert capsys.readouterr().err == ""
