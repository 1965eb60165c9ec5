import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "results" / "gpu_h200" / "paper_pipeline"
spec = importlib.util.spec_from_file_location("reference_comparison", ROOT / "experiments" / "reference_comparison.py")
rc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rc)


def test_rows_come_from_the_run_and_missing_ones_say_so(tmp_path):
    report = json.loads((RUN / "report.json").read_text())
    result = rc.compare(RUN, {})
    assert (result["grid_n"], result["n_states"], result["params"]) == (200, 1680, 17_314_578)
    assert result["test_mse_ref"] == report["evaluation"]["mse_ref"]
    rows = {r["quantity"]: r for r in result["rows"]}
    adam = rows["test MSE, Adam (dense, best checkpoint)"]
    assert adam["reference"] == 7.8e-4 and adam["bec_jax_masked_mse"] == report["evaluation"]["mse"]
    assert adam["verdict"] == ("matches or beats" if adam["bec_jax"] <= 7.8e-4 else "worse")
    sgd = rows["validation loss at epoch 50, sgd"]
    assert sgd["bec_jax"] is None and sgd["verdict"] is None and "not run" in sgd["note"]
    change = rows["int8 mixed: test MSE change"]["bec_jax"]
    models = report["models"]
    assert change == pytest.approx(models["int8_mixed"]["mse_ref"] / models["dense"]["mse_ref"] - 1)
    # fidelity and vortex counts of the model each row measures, where it was evaluated
    assert adam["fidelity_mean"] == report["evaluation"]["fidelity_mean"]
    assert rows["int8 mixed: test MSE change"]["vortex_count_accuracy"] == models["int8_mixed"]["vortex_count_accuracy"]
    assert rows["int8 mixed: size on disk (MiB)"]["fidelity_mean"] is None
    # another optimizer's run fills its row from its own metrics
    opt = tmp_path / "sgd"
    opt.mkdir()
    shutil.copy(RUN / "metrics.json", opt / "metrics.json")
    rows = {r["quantity"]: r for r in rc.compare(RUN, {"sgd": [opt]})["rows"]}
    assert rows["validation loss at epoch 50, sgd"]["bec_jax"] == rows["validation loss at epoch 50, adam"]["bec_jax"]
    assert rows["validation loss at epoch 50, sgd"]["fidelity_mean"] is None  # not evaluated
    # trained on the masked MSE (the run's loss): SGD's row says at what multiple of the reference's loss
    h50 = next(h for h in json.loads((opt / "metrics.json").read_text())["history"] if h["epoch"] == 50)
    assert f"trained on the masked MSE, {h50['val_mse'] / h50['val_mse_ref']:.1f}×" in \
        rows["validation loss at epoch 50, sgd"]["note"]
    assert "trained on" not in rows["validation loss at epoch 50, adam"]["note"]  # Adam: scale-free steps
    assert rc.plot_optimizers(RUN, {}, tmp_path / "none.png") is None  # no other optimizer: no figure
    assert rc.plot_optimizers(RUN, {"sgd": [opt]}, tmp_path / "opt.png").stat().st_size > 10_000
    # `bec-jax evaluate --checkpoint latest --split val` of that run: the epoch-50 model on the validation split
    for split, epoch, fid in (("test", 50, 0.5), ("val", 49, 0.6), ("val", 50, 0.7)):
        (opt / f"eval_{split}{epoch}").mkdir()
        (opt / f"eval_{split}{epoch}" / "evaluation.json").write_text(json.dumps(dict(
            config=dict(split=split, epoch=epoch), summary=dict(fidelity_mean=fid, vortex_count_accuracy=0.9))))
    rows = {r["quantity"]: r for r in rc.compare(RUN, {"sgd": [opt]})["rows"]}
    assert rows["validation loss at epoch 50, sgd"]["fidelity_mean"] == 0.7


def test_several_seeds_of_an_optimizer_give_their_mean_and_range(tmp_path):
    runs = []
    for seed, scale in ((1, 2.0), (2, 4.0)):
        m = json.loads((RUN / "metrics.json").read_text())
        m["train_config"]["seed"] = seed
        for h in m["history"]:
            h["val_mse_ref"] *= scale
        (tmp_path / str(seed)).mkdir()
        (tmp_path / str(seed) / "metrics.json").write_text(json.dumps(m))
        runs.append(tmp_path / str(seed))
    v0 = rc._epoch(json.loads((RUN / "metrics.json").read_text()), 50)["val_mse_ref"]
    rows = {r["quantity"]: r for r in rc.compare(RUN, {"adam": runs})["rows"]}
    adam = rows["validation loss at epoch 50, adam (mean of 3 seeds)"]
    assert adam["bec_jax"] == pytest.approx(v0 * 7 / 3)
    assert "seeds 0: " in adam["note"] and f"range {v0:.2e}–{4 * v0:.2e}" in adam["note"]
    # the states each run trained on, where recorded: equal, the table names them; different, refused
    for run_dir, digest in zip(runs, ("ab" * 32, None)):
        (run_dir / "metrics.json").write_text(json.dumps(dict(m, data_content_sha256=digest)))
    table = rc.compare(RUN, {"adam": runs})
    assert table["data_content_sha256"] == "ab" * 32 and table["data_content_sha256_runs"] == [str(runs[0])]
    (runs[1] / "metrics.json").write_text(json.dumps(dict(m, data_content_sha256="cd" * 32)))
    with pytest.raises(ValueError, match="different states of the dataset.*abababababab….*cdcdcdcdcdcd…"):
        rc.compare(RUN, {"adam": runs})
    m["train_config"]["split_seed"] += 1  # another split: not comparable
    (runs[1] / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="split_seed 1 instead of 0"):
        rc.compare(RUN, {"adam": runs})
    m["train_config"]["split_seed"] -= 1
    m["model_config"]["depth"] -= 1  # a run of another model is no seed of this one
    (runs[1] / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="another model_config"):
        rc.compare(RUN, {"adam": runs})


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        rc.main(["--run", str(tmp_path)])
    assert e.value.code == 2 and "no report.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        rc.main(["--run", str(RUN), "--optimizer-run", "rmsprop=x", "--out", str(tmp_path)])
    assert e.value.code == 2 and "NAME=DIR" in capsys.readouterr().err
    (tmp_path / "pruning.png").write_bytes(b"an earlier table's")
    assert rc.main(["--run", str(RUN), "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "pruning.png").exists()
    assert "pruning.png" not in (tmp_path / "reference_comparison.md").read_text()


DENSE_MSE = json.loads((RUN / "report.json").read_text())["models"]["dense"]["mse"]


def _prune_run(folder, method, sparsity, stages, ft_epochs=5, dense=DENSE_MSE, **extra):
    folder.mkdir()
    (folder / "prune.json").write_text(json.dumps(dict(method=method, sparsity=sparsity, stages=stages,
                                                       ft_epochs=ft_epochs, ft_lr=5e-4, test_mse_dense=dense, **extra)))
    return folder


def test_pruning_runs_fill_the_rows_of_their_method_and_stages(tmp_path, capsys):
    stages = [dict(sparsity=s, test_mse_pruned=1.0, test_mse_pruned_ref=0.5, test_mse_finetuned=m, test_mse_finetuned_ref=m / 4)
              for s, m in ((0.97, 1e-3), (0.99, 2e-3), (0.995, 3e-3))]
    iterative = _prune_run(tmp_path / "iterative", "iterative", 0.995, stages,
                           evaluation=dict(fidelity_mean=0.8, vortex_count_accuracy=0.75))
    rows = {r["quantity"]: r for r in rc.compare(RUN, {}, [iterative])["rows"]}
    r99 = rows["iterative pruning 99.0%, test MSE"]
    assert (r99["bec_jax"], r99["bec_jax_masked_mse"], r99["reference"]) == (5e-4, 2e-3, 9.1e-4)
    assert r99["verdict"] == "matches or beats" and "baseline" not in r99["note"]
    assert rows["iterative pruning 99.5%, test MSE"]["bec_jax"] == 7.5e-4
    # the saved model (the last stage) was evaluated in full; the stages before it were not
    assert rows["iterative pruning 99.5%, test MSE"]["vortex_count_accuracy"] == 0.75
    assert r99["fidelity_mean"] is None
    stages[1]["evaluation"] = dict(fidelity_mean=0.9, vortex_count_accuracy=0.85)  # kept (bec-jax prune --keep-stages)
    (iterative / "prune.json").write_text(json.dumps(dict(json.loads((iterative / "prune.json").read_text()),
                                                          stages=stages)))
    rows = {r["quantity"]: r for r in rc.compare(RUN, {}, [iterative])["rows"]}
    assert rows["iterative pruning 99.0%, test MSE"]["fidelity_mean"] == 0.9
    assert rows["iterative pruning 99.9%, test MSE"]["bec_jax"] is None  # a stage the run did not reach
    # one shot without and with fine-tuning, and the dense baseline trained as long
    oneshot = _prune_run(tmp_path / "oneshot", "prune", 0.999,
                         [dict(sparsity=0.999, test_mse_pruned=0.4, test_mse_pruned_ref=0.1)], ft_epochs=0)
    ft = _prune_run(tmp_path / "ft", "finetune", 0.99, [dict(sparsity=0.99, test_mse_pruned=0.4, test_mse_pruned_ref=0.1,
                                                             test_mse_finetuned=4e-3, test_mse_finetuned_ref=1e-3)])
    base = _prune_run(tmp_path / "base", "finetune", 0.0, [dict(sparsity=0.0, test_mse_pruned=1.0, test_mse_pruned_ref=0.2,
                                                                test_mse_finetuned=2e-3, test_mse_finetuned_ref=5e-4)],
                      ft_epochs=30)
    rows = {r["quantity"]: r for r in rc.compare(RUN, {}, [iterative, oneshot, ft, base])["rows"]}
    b = rows["dense baseline of the pruning study: test MSE"]
    assert (b["reference"], b["bec_jax"], b["bec_jax_masked_mse"]) == (1.73e-3, 5e-4, 2e-3) and "30 more epochs" in b["note"]
    assert "the iterative schedule fine-tunes 15" in b["note"]  # 3 stages × 5 epochs here, not 30
    only = rows["prune only (one shot) 99.9%, test MSE"]
    assert (only["reference"], only["bec_jax"], only["verdict"]) == (None, 0.1, None) and "200.00× the dense" in only["note"]
    assert rows["one shot + 5 fine-tuning epochs 99.0%, test MSE"]["bec_jax"] == 1e-3
    assert "1.00× the dense baseline" in rows["iterative pruning 99.0%, test MSE"]["note"]
    assert "prune only (one shot) 99.0%, test MSE" not in rows
    # the figure's points: every stage of each run, at each method's MSE, and the dense baseline's
    result = rc.compare(RUN, {}, [iterative, oneshot, ft, base])
    curves = result["pruning_curves"]["curves"]
    assert curves["the paper's iterative schedule, run by bec_jax"] == [
        dict(sparsity=0.97, mse=2.5e-4, vortex_count_accuracy=None),
        dict(sparsity=0.99, mse=5e-4, vortex_count_accuracy=0.85),
        dict(sparsity=0.995, mse=7.5e-4, vortex_count_accuracy=0.75)]
    assert curves["one shot"] == [dict(sparsity=0.999, mse=0.1, vortex_count_accuracy=None)]  # not fine-tuned
    assert curves["one shot + fine-tuning"] == [dict(sparsity=0.99, mse=1e-3, vortex_count_accuracy=None)]
    assert result["pruning_curves"]["baseline"]["mse"] == 5e-4
    assert rc.compare(RUN, {}, [iterative])["pruning_curves"]["baseline"] is None
    assert rc.plot_pruning(result, tmp_path / "pruning.png").stat().st_size > 10_000
    assert rc.plot_pruning(rc.compare(RUN, {}), tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    from bec_jax.compress.plots import plot_pruning_comparison

    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.0"):
        plot_pruning_comparison({"all pruned": [dict(sparsity=1.0, mse=1.0)]}, tmp_path / "bad.png")
    other = _prune_run(tmp_path / "other", "prune", 0.99, [], dense=DENSE_MSE * 1.01)
    with pytest.raises(ValueError, match="did not prune"):
        rc.compare(RUN, {}, [other])
    with pytest.raises(SystemExit) as e:
        rc.main(["--run", str(RUN), "--pruning-run", str(tmp_path), "--out", str(tmp_path)])
    assert e.value.code == 2 and "no prune.json" in capsys.readouterr().err


def test_the_reference_int8_scheme_gets_its_own_rows(tmp_path):
    q = tmp_path / "q"
    q.mkdir()
    dense = json.loads((RUN / "report.json").read_text())["models"]["dense"]["mse"]
    (q / "quantize.json").write_text(json.dumps(dict(mse_change=0.25, bytes_on_disk=16 * 2**20, test_mse_fp32=dense)))
    rows = {r["quantity"]: r for r in rc.compare(RUN, {}, [], q)["rows"]}
    change = rows["int8 per-tensor, the reference's scheme: test MSE change"]
    assert (change["reference"], change["bec_jax"], change["verdict"]) == (0.335, 0.25, "matches or beats")
    assert rows["int8 per-tensor, the reference's scheme: size on disk (MiB)"]["bec_jax"] == 16.0
    # quantized from another dense model (another run's, or one retrained on another machine): refused
    (q / "quantize.json").write_text(json.dumps(dict(mse_change=0.25, bytes_on_disk=16 * 2**20,
                                                     test_mse_fp32=dense * 1.01)))
    with pytest.raises(ValueError, match="did not quantize"):
        rc.compare(RUN, {}, [], q)


def test_an_int8_row_worse_in_relative_terms_says_what_int8_adds():
    """The relative change of a smaller dense MSE can exceed the reference's although int8 adds less error:
    the note gives both absolute figures and says which kind of worse it is."""
    ref = rc.REFERENCE["test_mse_adam"]
    note = rc._int8_note("", 0.010, 0.012, ref / 6)
    assert note.startswith("worse in relative terms only: ")
    assert f"int8 changes the MSE by {ref / 6 * 0.012:+.1e} (the reference's {ref * 0.010:+.1e})" in note
    assert rc._int8_note("", 0.010, 0.012, ref).startswith("worse: ")
    assert rc._int8_note("scheme", 0.335, 0.25, ref).startswith("scheme; int8 model ")


def test_an_iterative_run_of_other_settings_is_a_recipe_of_its_own(tmp_path):
    stages = [dict(sparsity=sp, test_mse_pruned=1.0, test_mse_pruned_ref=0.5, test_mse_finetuned=4e-3,
                   test_mse_finetuned_ref=1e-3) for sp in (0.8, 0.9, 0.95, 0.99, 0.995, 0.999)]
    recipe = _prune_run(tmp_path / "recipe", "iterative", 0.999, stages)
    summary = json.loads((recipe / "prune.json").read_text())
    summary.update(last_ft_epochs=75, ft_lr=1e-3, precise_bn=True, keep="best",
                   prune_config=dict(distribution="global", reclaim_dead_scales=True))
    (recipe / "prune.json").write_text(json.dumps(summary))
    rows = {r["quantity"]: r for r in rc.compare(RUN, {}, [recipe])["rows"]}
    r = rows["bec_jax's recipe 99.9%, test MSE"]
    assert (r["reference"], r["bec_jax"], r["verdict"]) == (7.7e-3, 1e-3, "matches or beats")
    assert "6 stages, 5 fine-tuning epochs each and 75 in the last (100 in all), lr 0.001" in r["note"]
    assert "reclaimed BatchNorm scales, precise BatchNorm statistics, best epoch kept" in r["note"]
    assert rows["iterative pruning 99.9%, test MSE"]["bec_jax"] is None  # not the reference's schedule
    # a second recipe: each curve named by its folder
    shutil.copytree(recipe, tmp_path / "recipe_b")
    curves = rc.compare(RUN, {}, [recipe, tmp_path / "recipe_b"])["pruning_curves"]["curves"]
    assert sorted(curves) == ["bec_jax's recipe (recipe)", "bec_jax's recipe (recipe_b)"]
    assert [p["sparsity"] for p in curves["bec_jax's recipe (recipe)"]] == [0.8, 0.9, 0.95, 0.99, 0.995, 0.999]


def test_a_saved_model_with_recomputed_batchnorm_statistics_gets_a_row(tmp_path):
    stages = [dict(sparsity=s, test_mse_pruned=1.0, test_mse_pruned_ref=0.5, test_mse_finetuned=m, test_mse_finetuned_ref=m / 4,
                   train_losses=[2e-3], kept_epoch=1) for s, m in ((0.99, 2e-3), (0.999, 0.7))]
    it = _prune_run(tmp_path / "it", "iterative", 0.999, stages)
    (it / "bn_recalibration.json").write_text(json.dumps(dict(recomputed_statistics=dict(
        mse=2e-3, mse_ref=5e-4, fidelity_mean=0.84, vortex_count_accuracy=0.82))))
    rows = {r["quantity"]: r for r in rc.compare(RUN, {}, [it])["rows"]}
    failed = rows["iterative pruning 99.9%, test MSE"]
    assert failed["verdict"] == "worse" and "the next row recomputes them" in failed["note"]
    r = rows["iterative pruning 99.9%, same weights, BatchNorm statistics recomputed, test MSE"]
    assert (r["reference"], r["bec_jax"], r["bec_jax_masked_mse"], r["fidelity_mean"]) == (7.7e-3, 5e-4, 2e-3, 0.84)
    assert r["verdict"] == "matches or beats" and "no weight changed" in r["note"]
    # only the saved model (the last stage) was recalibrated
    assert not any("recomputed" in q and "99.0%" in q for q in rows)
    curves = rc.compare(RUN, {}, [it])["pruning_curves"]["curves"]
    assert curves["the same, last stage's BatchNorm statistics recomputed"] == [
        dict(sparsity=0.999, mse=5e-4, vortex_count_accuracy=0.82)]


@pytest.mark.slow  # ~1 min on 2 cores
def test_bn_recalibration_script_scores_a_pruned_model_before_and_after(small_run, tmp_path):
    import subprocess
    import sys

    run, _data = small_run
    bj = [sys.executable, "-m", "bec_jax.cli"]
    pruned = tmp_path / "pruned"
    done = subprocess.run(bj + ["prune", "--run", str(run), "--out", str(pruned), "--sparsity", "0.9", "--method",
                                "finetune", "--ft-epochs", "1", "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    cmd = [sys.executable, str(ROOT / "experiments" / "bn_recalibration.py"), "--run", str(run), "--model",
           str(pruned / "model"), "--out", str(tmp_path / "bn"), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads((tmp_path / "bn" / "bn_recalibration.json").read_text())
    assert 0.89 < r["sparsity"] < 0.91 and r["train_batches"] > 0
    for key in ("running_statistics", "recomputed_statistics"):
        assert set(r[key]) == {"mse", "mse_ref", "fidelity_mean", "vortex_count_accuracy"}
        assert 0 < r[key]["mse"] < float("inf")
    # the running statistics give the MSE the prune command measured for the same saved model
    assert r["running_statistics"]["mse"] == pytest.approx(json.loads((pruned / "prune.json").read_text())["test_mse"],
                                                           rel=1e-4)
    bad = subprocess.run(cmd[:2] + ["--run", str(tmp_path / "nope"), "--model", str(pruned / "model"), "--out",
                                    str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "is not a folder" in bad.stderr.strip().splitlines()[-1]


def test_a_stage_whose_eval_mode_model_fails_says_so():
    healthy = dict(test_mse_finetuned=6e-4, train_losses=[9e-4, 5e-4], kept_epoch=2)
    assert rc._eval_mode_gap(healthy) == ""
    broken = dict(test_mse_finetuned=0.7, train_losses=[1e-2, 2.2e-3], kept_epoch=2)
    assert "test MSE is 318× its training loss in train mode (2.20e-03, masked)" in rc._eval_mode_gap(broken)
    assert rc._eval_mode_gap(dict(test_mse_pruned=0.1)) == ""  # prune only: no training


def test_a_model_no_better_than_a_zero_phase_guess_is_called_out():
    bounds = dict(fidelity_zero_phase_mean=0.05, fidelity_ceiling_mean=1.0, vortex_count_accuracy=0.0)
    assert "not learnt the phase" in rc._unlearnt(dict(bounds, fidelity_mean=0.051))
    assert "not learnt the phase" in rc._unlearnt(dict(bounds, fidelity_mean=0.001))  # worse than the guess
    assert rc._unlearnt(dict(bounds, fidelity_mean=0.2)) == ""  # 16 % of the way to the ceiling
    assert rc._unlearnt(dict(fidelity_mean=0.01)) == "" and rc._unlearnt(None) == ""  # no bounds: no verdict
    # a mean of seeds: each judged alone, the ones that failed named, the ones not evaluated said so
    s0, s1, s2 = (dict(bounds, fidelity_mean=f) for f in (0.06, 0.5, 0.07))
    mean = dict(bounds, fidelity_mean=0.21)  # 17 % of the way: the mean alone would hide seeds 0 and 2
    assert rc._unlearnt(mean) == ""
    note = rc._unlearnt(mean, [(0, s0), (1, s1), (2, s2)])
    assert note.startswith("seeds 0, 2 of 3 have not learnt the phase") and "not evaluated" not in note
    assert "mean fidelity by seed 0: 0.060, 2: 0.070 against a zero-phase guess's 0.050" in note
    assert rc._unlearnt(mean, [(1, s1), (2, s2)]).startswith("seed 2 of 2 has not learnt")
    assert rc._unlearnt(mean, [(0, s0), (2, s2)]).startswith("none of the seeds has learnt the phase")
    assert rc._unlearnt(mean, [(1, s1)]) == ""
    note = rc._unlearnt(mean, [(0, s0), (1, None), (2, dict(fidelity_mean=0.9))])
    assert note.startswith("none of the seeds has learnt") and note.endswith("(seeds 1, 2 not evaluated)")
    assert rc._unlearnt(mean, [(0, s0), (1, s1), (2, None)]).startswith("seed 0 of 2 has not learnt")
