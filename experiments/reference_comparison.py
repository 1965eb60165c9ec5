"""The reference's published numbers beside bec_jax's, measured the same way, from a paper-preset run.

Reads a ``bec-jax pipeline --preset paper`` run (its report.json and train/metrics.json, or the copies
that benchmarks/gpu_check.sh brings back) and, optionally, ``bec-jax train`` runs of each optimizer and
seed on the same data (their metrics.json), ``bec-jax prune`` runs from its dense model (the reference's
three schedules, a dense baseline and bec_jax's recipes; their prune.json) and a ``bec-jax quantize`` run
of the reference's int8 scheme, and writes one table (markdown + JSON) and its figures (optimizers.png:
validation loss against epoch; pruning.png: test MSE and vortex count accuracy against sparsity). A run made
from another model, data, split or training setting is refused, and so are training runs whose recorded states
differ (``data_content_sha256``: another generation of the dataset). Every row gives the reference's value and
bec_jax's, in the reference's loss convention (mean of (out − target)² · valid over all pixels, ``mse_ref``) and,
beside it, bec_jax's masked MSE (mean over valid pixels). A row whose measurement has not run yet says so; it is
never filled in from elsewhere.

    python experiments/reference_comparison.py --run benchmarks/results/gpu_h200/paper_pipeline \\
        --out runs/reference_comparison_h200
    python experiments/reference_comparison.py --run RUN --optimizer-run adamw=RUN_ADAMW --optimizer-run sgd=RUN_SGD \\
        --pruning-run PRUNE_RUN [--pruning-run PRUNE_RUN_2 ...] --reference-int8 QUANTIZE_RUN
    (experiments/reference_campaign.sh runs all of them and calls it)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bec_jax.models import UNetConfig, count_params

MIB = 2**20
#: the evaluation metrics each row gives beside its MSEs, where bec_jax evaluated that model
METRICS = ("fidelity_mean", "vortex_count_accuracy")
#: fidelities of a zero-phase guess and of the true target integrated: the floor and ceiling of fidelity_mean
BOUNDS = ("fidelity_zero_phase_mean", "fidelity_ceiling_mean")
#: a model whose mean fidelity gains less than this fraction of the way from the zero-phase guess to the ceiling
#: has not learnt the phase, whatever its MSE
LEARNT_PHASE = 0.1

# DESIGN.md §5: the reference's public notebooks. MSEs in its convention (all-pixel mean).
REFERENCE = dict(
    params=17_314_578, grid_n=200, n_states=1680,
    test_mse_adam=7.8e-4, val_loss_epoch50=dict(adam=9.2e-4, adamw=7.7e-4, sgd=1.24e-2),
    pruning_test_mse={"0.99": 9.1e-4, "0.995": 9.6e-4, "0.999": 7.7e-3}, pruning_baseline_test_mse=1.73e-3,
    fp32_mib=66.16, int8_mib=16.65,
    int8_mse_change=dict(per_tensor=0.335, per_channel=0.181, mixed=0.010),
)
# the reference's iterative schedule: its stages, 5 fine-tuning epochs each at lr 5e-4, global L1 magnitude
REFERENCE_SCHEDULE = dict(stages=(0.8, 0.9, 0.97, 0.99, 0.995, 0.999), ft_epochs=5, ft_lr=5e-4)


def _is_reference_schedule(summary: dict) -> bool:
    """Whether an iterative ``bec-jax prune`` run (its prune.json) follows the reference's schedule (or a
    stretch of it); any other iterative run is one of bec_jax's recipes."""
    pc = summary.get("prune_config", {})
    return (all(st["sparsity"] in REFERENCE_SCHEDULE["stages"] for st in summary["stages"])
            and summary["ft_epochs"] == REFERENCE_SCHEDULE["ft_epochs"]
            and summary.get("last_ft_epochs") in (None, REFERENCE_SCHEDULE["ft_epochs"])
            and summary["ft_lr"] == REFERENCE_SCHEDULE["ft_lr"] and summary.get("keep", "last") == "last"
            and not summary.get("precise_bn", False)
            and pc.get("distribution", "global") == "global" and not pc.get("reclaim_dead_scales", False))


def _recipe(summary: dict) -> str:
    """One line naming a pruning run's settings."""
    pc, n = summary.get("prune_config", {}), len(summary["stages"])
    last = summary.get("last_ft_epochs") or summary["ft_epochs"]
    total = summary["ft_epochs"] * (n - 1) + last
    return (f"{n} stages, {summary['ft_epochs']} fine-tuning epochs each" +
            (f" and {last} in the last" if last != summary["ft_epochs"] else "") +
            f" ({total} in all), lr {summary['ft_lr']:g}, {pc.get('distribution', 'global')} magnitude" +
            (" + reclaimed BatchNorm scales" if pc.get("reclaim_dead_scales") else "") +
            (", precise BatchNorm statistics" if summary.get("precise_bn") else "") +
            f", {summary.get('keep', 'best')} epoch kept")


def _metrics(folder: Path) -> dict:
    for p in (folder / "train" / "metrics.json", folder / "metrics.json"):
        if p.is_file():
            return json.loads(p.read_text())
    raise SystemExit(f"no metrics.json in {folder} or {folder / 'train'}")


# training settings an optimizer run may change; every other one must be the run's
_FREE = ("optimizer", "seed", "weight_decay", "momentum", "epochs")


def _check_same_setting(folder: Path, m: dict, run: Path, metrics: dict) -> None:
    """ValueError unless the training run ``m`` (metrics.json of ``folder``) trained the model of ``run``
    on its data and split, with its settings apart from ``_FREE``."""
    for key in ("model_config", "dataset", "split_sizes"):
        if m[key] != metrics[key]:
            raise ValueError(f"{str(folder)!r} trained with another {key} than {str(run)!r}: "
                             f"{m[key]} instead of {metrics[key]}")
    differ = {k: (v, metrics["train_config"].get(k)) for k, v in m["train_config"].items()
              if k not in _FREE and v != metrics["train_config"].get(k)}
    if differ:
        raise ValueError(f"{str(folder)!r} trained with other settings than {str(run)!r}: " +
                         ", ".join(f"{k} {a!r} instead of {b!r}" for k, (a, b) in differ.items()))


def _same_content(runs: list) -> tuple[str | None, list[str]]:
    """The digest of the states every training run of ``runs`` ((folder, metrics.json) pairs) trained on, where
    any recorded it (``data_content_sha256``; runs from before it exists have none), else None, and the folders
    of the runs that recorded it (the others' data are unchecked). ValueError when two runs recorded different
    ones: another generation of the dataset, whose states differ."""
    known = {str(folder): m["data_content_sha256"] for folder, m in runs if m.get("data_content_sha256")}
    if len(set(known.values())) > 1:
        raise ValueError("the runs trained on different states of the dataset (data_content_sha256): " +
                         ", ".join(f"{f!r} {d[:12]}…" for f, d in known.items()))
    return next(iter(known.values()), None), sorted(known)


def _check_dense(folder: Path, verb: str, its_dense_mse: float, run: Path, dense_mse: float) -> None:
    """ValueError unless the compression run ``folder`` started from ``run``'s dense model: the same test MSE
    (masked; to 1e-4, as two evaluations of one model agree). Another machine's retrained model is another one."""
    if abs(its_dense_mse / dense_mse - 1) > 1e-4:
        raise ValueError(f"{str(folder)!r} did not {verb} {str(run)!r}'s dense model: its dense test MSE is "
                         f"{its_dense_mse:.6g}, the run's {dense_mse:.6g}")


def _epoch(metrics: dict, epoch: int) -> dict | None:
    return next((h for h in metrics["history"] if h["epoch"] == epoch), None)


def _evaluation(folder: Path, split: str, epoch: int) -> dict | None:
    """The summary of a ``bec-jax evaluate`` of a training run (``folder`` or its train/) on ``split`` at
    checkpoint ``epoch`` (an eval*/evaluation.json in it), or None."""
    for path in sorted(folder.glob("eval*/evaluation.json")) + sorted(folder.glob("train/eval*/evaluation.json")):
        e = json.loads(path.read_text())
        if e["config"]["split"] == split and e["config"]["epoch"] == epoch:
            return e["summary"]
    return None


def _mean_metrics(summaries: list) -> dict | None:
    """Mean fidelity and vortex count accuracy (and fidelity bounds where all have them) over ``summaries``;
    None unless every one is there."""
    if not summaries or any(e is None for e in summaries):
        return None
    keys = METRICS + tuple(k for k in BOUNDS if all(k in e for e in summaries))
    return {k: sum(e[k] for e in summaries) / len(summaries) for k in keys}


def _unlearnt(metrics: dict | None, seeds: list | None = None) -> str:
    """A note when ``metrics`` (an evaluation summary) show a mean fidelity hardly above a zero-phase guess's
    (less than LEARNT_PHASE of the way to the ceiling): a low MSE then does not mean a working model.
    seeds: (seed, summary or None) of the models whose mean ``metrics`` is; each is judged alone, and the note
    names the seeds that have not learnt the phase (a mean can hide one that has). Models without a summary with
    the bounds are not judged, and the note says so."""
    def judgeable(m):
        return m is not None and all(m.get(k) is not None for k in BOUNDS)

    def fails(m):
        zero, ceiling = m["fidelity_zero_phase_mean"], m["fidelity_ceiling_mean"]
        return m["fidelity_mean"] - zero < LEARNT_PHASE * (ceiling - zero)

    judged = [(None, metrics)] if seeds is None else seeds
    failed = [(s, m) for s, m in judged if judgeable(m) and fails(m)]
    if not failed:
        return ""
    m = failed[0][1]
    against = (f"against a zero-phase guess's {m['fidelity_zero_phase_mean']:.3f} "
               f"(ceiling {m['fidelity_ceiling_mean']:.3f})")
    if seeds is None:
        return (f"mean fidelity {m['fidelity_mean']:.3f} {against}: this model has not learnt the phase, "
                "whatever its loss")
    unjudged = [str(s) for s, m in seeds if not judgeable(m)]
    n = len(seeds) - len(unjudged)
    which = "none of the seeds has" if len(failed) == n else \
        f"seed{'s' if len(failed) > 1 else ''} {', '.join(str(s) for s, _ in failed)} of {n} " + \
        ("have not" if len(failed) > 1 else "has not")
    return (f"{which} learnt the phase, whatever the loss: mean fidelity by seed " +
            ", ".join(f"{s}: {m['fidelity_mean']:.3f}" for s, m in failed) + f" {against}" +
            (f" (seed{'s' if len(unjudged) > 1 else ''} {', '.join(unjudged)} not evaluated)" if unjudged else ""))


def compare(run: Path, optimizer_runs: dict[str, list[Path]], pruning_runs: list[Path] = (),
            reference_int8: Path | None = None) -> dict:
    """The comparison rows of the paper-preset run ``run`` (see module doc).

    optimizer_runs: ``bec-jax train`` runs per optimizer on the same data (one per seed; the run's own
    training is Adam's first). pruning_runs: ``bec-jax prune`` outputs from ``run``'s dense model (their
    prune.json), sorted by what they are: "iterative" (the reference's schedule; any other iterative
    run is one of bec_jax's recipes, with rows of its own), "prune" (one shot, no
    fine-tuning), "finetune" (one shot + fine-tuning) and "finetune" at sparsity 0 (the dense model trained
    as many more epochs at the fine-tuning rate: the baseline pruned models are compared with).
    reference_int8: a ``bec-jax quantize --scheme reference_per_tensor`` output of the run's dense model
    (quantize.json).
    ValueError for an optimizer run of another model, data, split or setting (``_check_same_setting``), training
    runs that recorded different states (``_same_content``), or a pruning or reference-int8 run whose dense test
    MSE is not the run's (``_check_dense``).
    """
    report = json.loads((run / "report.json").read_text())
    metrics = _metrics(run)
    models, ev = report["models"], report["evaluation"]
    dense = models["dense"]
    rows = []

    def row(quantity, reference, bec_jax, *, bec_jax_masked=None, note="", better="lower", metrics=None, seeds=None):
        note = "; ".join(n for n in (note, _unlearnt(metrics, seeds)) if n)
        rows.append(dict(quantity=quantity, reference=reference, bec_jax=bec_jax, bec_jax_masked_mse=bec_jax_masked,
                         better=better, note=note, **{k: None if metrics is None else metrics[k] for k in METRICS},
                         verdict=None if bec_jax is None or reference is None else
                         ("matches or beats" if (bec_jax <= reference if better == "lower" else bec_jax >= reference)
                          else "worse")))

    row("test MSE, Adam (dense, best checkpoint)", REFERENCE["test_mse_adam"], ev["mse_ref"], bec_jax_masked=ev["mse"],
        metrics=ev)
    others = {opt: [_metrics(f) for f in folders] for opt, folders in optimizer_runs.items()}
    evals = {opt: [_evaluation(f, "val", 50) for f in folders] for opt, folders in optimizer_runs.items()}
    trained = [(f, m) for opt, folders in optimizer_runs.items() for f, m in zip(folders, others[opt])]
    for folder, m in trained:
        _check_same_setting(folder, m, run, metrics)
    content, recorded_by = _same_content([(run, metrics)] + trained)
    for opt, ref in REFERENCE["val_loss_epoch50"].items():
        runs = ([metrics] if opt == "adam" else []) + others.get(opt, [])
        run_evals = ([_evaluation(run, "val", 50)] if opt == "adam" else []) + evals.get(opt, [])
        found = [(m, h, e) for m, e in zip(runs, run_evals) if (h := _epoch(m, 50)) is not None]
        if not found:
            row(f"validation loss at epoch 50, {opt}", ref, None,
                note="not run yet (benchmarks/gpu_check.sh's optimizers step, experiments/reference_campaign.sh)")
            continue
        vals = [h["val_mse_ref"] for _, h, _ in found]
        masked = sum(h["val_mse"] for _, h, _ in found) / len(found)
        seeds = [m["train_config"]["seed"] for m, _, _ in found]
        note = "" if len(vals) == 1 else ("seeds " + ", ".join(f"{s}: {v:.2e}" for s, v in zip(seeds, vals))
                                          + f"; range {min(vals):.2e}–{max(vals):.2e}")
        if opt == "sgd" and all(m["train_config"]["loss"] == "masked_mse" for m, _, _ in found):
            # Adam's steps do not depend on the loss's scale; SGD's do
            note = "; ".join(n for n in (note, f"trained on the masked MSE, {masked * len(vals) / sum(vals):.1f}× "
                                         "the reference's loss: for SGD, whose step scales with the loss, that is "
                                         "the reference's loss at that multiple of the learning rate") if n)
        row(f"validation loss at epoch 50, {opt}" + (f" (mean of {len(vals)} seeds)" if len(vals) > 1 else ""), ref,
            sum(vals) / len(vals), bec_jax_masked=masked, metrics=_mean_metrics([e for _, _, e in found]), note=note,
            seeds=None if len(found) == 1 else list(zip(seeds, (e for _, _, e in found))))
    pr = report["pruning"]
    kinds = {"iterative": {}, "prune": {}, "finetune": {}}
    recipes = []  # iterative runs of other settings than the reference's
    control = None
    for folder in pruning_runs:
        summary = json.loads((folder / "prune.json").read_text())
        _check_dense(folder, "prune", summary["test_mse_dense"], run, dense["mse"])
        if summary["method"] == "finetune" and summary["sparsity"] == 0:
            control = (folder, summary)
            continue
        if summary["method"] == "iterative" and not _is_reference_schedule(summary):
            recipes.append((folder, summary))
            continue
        for st in summary["stages"]:
            kinds[summary["method"]][f"{st['sparsity']:g}"] = (folder, summary, st)
    if control is not None:
        folder, summary = control
        st = summary["stages"][-1]
        it = next(iter(kinds["iterative"].values()), None)
        total = None if it is None else len(it[1]["stages"]) * it[1]["ft_epochs"]
        row("dense baseline of the pruning study: test MSE", REFERENCE["pruning_baseline_test_mse"],
            st["test_mse_finetuned_ref"], bec_jax_masked=st["test_mse_finetuned"], metrics=_final(summary, st),
            note=f"reference: its dense model after 10 epochs; bec_jax ({folder}): the dense model trained "
                 f"{summary['ft_epochs']} more epochs at lr {summary['ft_lr']:g}" +
                 ("" if total is None else ", as many as the iterative schedule's fine-tuning"
                  if total == summary["ft_epochs"] else f"; the iterative schedule fine-tunes {total}"))
    base = None if control is None else control[1]["stages"][-1]["test_mse_finetuned_ref"]

    def vs_base(mse_ref):
        return "" if base is None else f"; {mse_ref / base:.2f}× the dense baseline"

    for s in REFERENCE["pruning_test_mse"]:
        key = f"{float(s):g}"
        if key in kinds["prune"]:
            folder, summary, st = kinds["prune"][key]
            row(f"prune only (one shot) {float(s):.1%}, test MSE", None, st["test_mse_pruned_ref"],
                bec_jax_masked=st["test_mse_pruned"], metrics=_final(summary, st),
                note=f"{folder}; no published value" + vs_base(st["test_mse_pruned_ref"]))
        if key in kinds["finetune"]:
            folder, summary, st = kinds["finetune"][key]
            row(f"one shot + {summary['ft_epochs']} fine-tuning epochs {float(s):.1%}, test MSE", None,
                st["test_mse_finetuned_ref"], bec_jax_masked=st["test_mse_finetuned"], metrics=_final(summary, st),
                note=f"{folder}; no published value" + vs_base(st["test_mse_finetuned_ref"]) + _eval_mode_gap(st))
    for s, ref in REFERENCE["pruning_test_mse"].items():
        key = f"{float(s):g}"
        hit = kinds["iterative"].get(key)
        if hit is not None and "test_mse_finetuned_ref" in hit[2]:
            folder, summary, st = hit
            row(f"iterative pruning {float(s):.1%}, test MSE", ref, st["test_mse_finetuned_ref"],
                bec_jax_masked=st["test_mse_finetuned"], metrics=_final(summary, st),
                note=f"{folder}: fine-tuned stage of the schedule" + vs_base(st["test_mse_finetuned_ref"])
                + _eval_mode_gap(st, recomputed=_recalibrated(folder, summary, st) is not None))
            recalibrated = _recalibrated(folder, summary, st)
            if recalibrated is not None:
                row(f"iterative pruning {float(s):.1%}, same weights, BatchNorm statistics recomputed, test MSE",
                    ref, recalibrated["mse_ref"], bec_jax_masked=recalibrated["mse"], metrics=recalibrated,
                    note=f"{folder}/bn_recalibration.json (experiments/bn_recalibration.py): the row above's model "
                         "with its BatchNorm running statistics replaced by means over one epoch of the training "
                         "split; no weight changed" + vs_base(recalibrated["mse_ref"]))
            continue
        row(f"iterative pruning {float(s):.1%}, test MSE", ref, None,
            note=f"not run yet: this run prunes to {pr['achieved_sparsity']:.1%} "
                 f"(test MSE {models['pruned']['mse_ref']:.2e}, {models['pruned']['mse_ratio_vs_dense']:.2f}× dense)")
    for folder, summary in recipes:
        for s, ref in REFERENCE["pruning_test_mse"].items():
            st = next((st for st in summary["stages"] if f"{st['sparsity']:g}" == f"{float(s):g}"), None)
            if st is not None:
                row(f"bec_jax's recipe {float(s):.1%}, test MSE", ref, st["test_mse_finetuned_ref"],
                    bec_jax_masked=st["test_mse_finetuned"], metrics=_final(summary, st),
                    note=f"{folder}: {_recipe(summary)}" + vs_base(st["test_mse_finetuned_ref"]) + _eval_mode_gap(st))
    curves = _pruning_curves(kinds, recipes, control)
    row("fp32 model on disk (MiB)", REFERENCE["fp32_mib"], dense["bytes_on_disk"] / MIB,
        note="orbax checkpoint of the parameters and BatchNorm statistics")
    for scheme, ref in REFERENCE["int8_mse_change"].items():
        m = models.get(f"int8_{scheme}")
        change = None if m is None else m["mse_ref"] / dense["mse_ref"] - 1
        note = ("bec_jax's per-tensor scheme is symmetric per conv; the reference's is one asymmetric scale over all "
                "convs" if scheme == "per_tensor" else "")
        row(f"int8 {scheme.replace('_', '-')}: test MSE change", ref, change, metrics=m,
            note=note if change is None else _int8_note(note, ref, change, dense["mse_ref"]))
        if m is not None:
            row(f"int8 {scheme.replace('_', '-')}: size on disk (MiB)", REFERENCE["int8_mib"], m["bytes_on_disk"] / MIB,
                note=_payload_note(m))
    if reference_int8 is not None:
        q = json.loads((reference_int8 / "quantize.json").read_text())
        _check_dense(reference_int8, "quantize", q["test_mse_fp32"], run, dense["mse"])
        # a ratio of MSEs on one test split is the same in both conventions (valid pixels / pixels cancels)
        ref = REFERENCE["int8_mse_change"]["per_tensor"]
        row("int8 per-tensor, the reference's scheme: test MSE change", ref, q["mse_change"],
            metrics=q.get("evaluation"),
            note=_int8_note("one asymmetric scale over all convs (bec-jax quantize --scheme reference_per_tensor)",
                            ref, q["mse_change"], dense["mse_ref"]))
        row("int8 per-tensor, the reference's scheme: size on disk (MiB)", REFERENCE["int8_mib"],
            q["bytes_on_disk"] / MIB, note=_payload_note(q))
    if "pruned_int8_per_channel" in models:
        m = models["pruned_int8_per_channel"]
        row("pruned + int8 per-channel: size on disk (MiB)", None, m["bytes_on_disk"] / MIB,
            bec_jax_masked=m["mse"], metrics=m,
            note=f"{m['size_ratio_vs_dense']:.1f}× smaller at {m['mse_ratio_vs_dense']:.2f}× the dense test MSE; "
                 "no reference row")
    return dict(
        run=str(run), grid_n=report["dataset"]["grid_n"], n_states=report["dataset"]["n_samples"],
        params=count_params(UNetConfig.from_dict(report["config"]["model"])),
        backend=report.get("backend"), device=report.get("device"),
        test_mse_ref=ev["mse_ref"], test_masked_mse=ev["mse"], fidelity_mean=ev["fidelity_mean"],
        vortex_count_accuracy=ev["vortex_count_accuracy"],
        stage_seconds=report["stage_seconds"], total_seconds=sum(report["stage_seconds"].values()),
        stage_invocations=report.get("stage_invocations"), data_content_sha256=content,
        data_content_sha256_runs=recorded_by,
        reference=REFERENCE, rows=rows, pruning_curves=curves)


def _pruning_curves(kinds: dict, recipes: list, control: tuple | None) -> dict:
    """Every model of the pruning runs (each stage of a schedule; the table's rows are those at the reference's
    sparsities) as curves for ``plot_pruning``: {"curves": {label: [{"sparsity", "mse" (the reference's
    convention), "vortex_count_accuracy" (None where not evaluated)}]}, "baseline": the dense baseline's point or
    None}. Several recipes are labelled by their folders."""
    def point(st, mse, metrics):
        return dict(sparsity=st["sparsity"], mse=mse,
                    vortex_count_accuracy=(metrics or {}).get("vortex_count_accuracy"))

    curves = {}
    for method, label, key in (("iterative", "the paper's iterative schedule, run by bec_jax",
                                "test_mse_finetuned_ref"), ("prune", "one shot", "test_mse_pruned_ref"),
                               ("finetune", "one shot + fine-tuning", "test_mse_finetuned_ref")):
        if kinds[method]:
            curves[label] = [point(st, st[key], _final(summary, st)) for _, summary, st in kinds[method].values()]
    for folder, summary, st in kinds["iterative"].values():
        if (r := _recalibrated(folder, summary, st)) is not None:
            curves["the same, last stage's BatchNorm statistics recomputed"] = [point(st, r["mse_ref"], r)]
    for folder, summary in recipes:
        curves["bec_jax's recipe" + (f" ({Path(folder).name})" if len(recipes) > 1 else "")] = \
            [point(st, st["test_mse_finetuned_ref"], _final(summary, st)) for st in summary["stages"]]
    st = None if control is None else control[1]["stages"][-1]
    baseline = None if st is None else point(st, st["test_mse_finetuned_ref"], _final(control[1], st))
    return dict(curves=curves, baseline=baseline)


def _eval_mode_gap(stage: dict, recomputed: bool = False) -> str:
    """A note when a fine-tuned stage's eval-mode test MSE (masked) is over ``STALE_BN_RATIO`` times the training
    loss of the epoch it kept (``compress.workflow.eval_to_train_ratio``): the same weights fail only with BatchNorm's
    running statistics. recomputed: the table has a row of the same model with recomputed statistics."""
    from bec_jax.compress.workflow import STALE_BN_RATIO, eval_to_train_ratio

    ratio = eval_to_train_ratio(stage)  # the paper preset trains on the masked MSE
    if ratio is None or ratio <= STALE_BN_RATIO:
        return ""
    loss = stage["train_losses"][stage["kept_epoch"] - 1]
    return (f"; the eval-mode model's test MSE is {ratio:.0f}× its training loss in train mode "
            f"({loss:.2e}, masked), a gap that points at its BatchNorm running statistics, not its "
            "weights" + ("; the next row recomputes them" if recomputed else
                         " (docs/compression.md, precise BatchNorm statistics, which bec_jax's recipe recomputes)"))


def _recalibrated(folder: Path, summary: dict, stage: dict) -> dict | None:
    """The test metrics of a pruning run's saved model with recomputed BatchNorm statistics
    (``experiments/bn_recalibration.py``'s bn_recalibration.json in ``folder``), when ``stage`` is the last
    stage, the saved one; else None."""
    f = Path(folder) / "bn_recalibration.json"
    if stage is not summary["stages"][-1] or not f.is_file():
        return None
    return json.loads(f.read_text())["recomputed_statistics"]


def _payload_note(record: dict) -> str:
    """What an int8 file holds before orbax compresses it (the reference's 16.6 MiB is uncompressed)."""
    if "payload_bytes" not in record:
        return ""
    return f"orbax file, compressed; its tensors take {record['payload_bytes'] / MIB:.1f} MiB"


def _final(summary: dict, stage: dict) -> dict | None:
    """The full evaluation of ``stage``'s model in a ``bec-jax prune`` run: its own (``--keep-stages``), or
    the run's saved model's (prune.json "evaluation") when it is the last stage; else None."""
    if "evaluation" in stage:
        return stage["evaluation"]
    return summary.get("evaluation") if stage is summary["stages"][-1] else None


def _int8_note(note: str, ref_change: float, change: float, dense_mse_ref: float) -> str:
    """``note`` with the int8 model's test MSE and what int8 adds to it, beside the reference's (its relative
    change applied to its dense test MSE): a relative change of a smaller dense MSE can be larger although
    int8 adds less error."""
    ref_dense = REFERENCE["test_mse_adam"]
    absolute = (f"int8 model {dense_mse_ref * (1 + change):.3e} (the reference's "
                f"{ref_dense * (1 + ref_change):.3e}); int8 changes the MSE by {dense_mse_ref * change:+.1e} "
                f"(the reference's {ref_dense * ref_change:+.1e})")
    if change > ref_change:
        absolute = "worse in relative terms only: " + absolute if change * dense_mse_ref <= ref_change * ref_dense \
            else "worse: " + absolute
    return "; ".join(x for x in (note, absolute) if x)


def _fmt(v) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if abs(v) >= 1e-2 else f"{v:.2e}"


def _timing(invocations: dict | None) -> str:
    """How the pipeline's stage seconds were counted, from the report's ``stage_invocations``."""
    if not invocations or None in invocations.values():
        return " by their records (a stage resumed after a stop counts only the invocation that finished it)"
    resumed = {k: n for k, n in invocations.items() if n > 1}
    return (" over every invocation (" + ", ".join(f"{k} {n}" for k, n in resumed.items()) + " invocations)"
            if resumed else ", each in one invocation")


def markdown(result: dict) -> str:
    lines = [f"Paper preset: {result['n_states']} states on {result['grid_n']}², "
             f"{result['params']:,} parameters; {result['device']} ({result['backend']}); its stages took "
             f"{result['total_seconds']:.0f} s{_timing(result.get('stage_invocations'))}. MSEs in the "
             "reference's convention (all-pixel mean); bec_jax's masked MSE beside it; the mean fidelity of the "
             "reconstructed state and the vortex count accuracy where bec_jax evaluated that model (the reference "
             "reports neither).", "",
             "| quantity | reference | bec_jax | bec_jax masked MSE | fidelity | vortex count accuracy | verdict "
             "| note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        pct = "change" in r["quantity"]
        f = (lambda v: "–" if v is None else f"{v:+.1%}") if pct else _fmt
        metrics = " | ".join("–" if r.get(k) is None else f"{r[k]:.3f}" for k in METRICS)
        lines.append(f"| {r['quantity']} | {f(r['reference'])} | {f(r['bec_jax'])} | {_fmt(r['bec_jax_masked_mse'])} "
                     f"| {metrics} | {r['verdict'] or '–'} | {r['note']} |")
    return "\n".join(lines) + "\n"


def plot_optimizers(run: Path, optimizer_runs: dict[str, list[Path]], path: Path) -> Path | None:
    """Validation loss (the reference's convention) vs epoch of every optimizer's runs (``run``'s training is
    Adam's first), mean and range over seeds, the reference's epoch-50 values as stars; None without other
    optimizers' runs."""
    from bec_jax.train.plots import plot_optimizer_comparison

    if not optimizer_runs:
        return None
    runs = {"adam": [run]} | {o: ([run] if o == "adam" else []) + f for o, f in optimizer_runs.items()}
    curves = {}
    for opt, folders in runs.items():
        histories = [[h["val_mse_ref"] for h in _metrics(f)["history"]] for f in folders]
        n = min(len(h) for h in histories)  # a run still training has fewer epochs: the common ones
        curves[opt] = [h[:n] for h in histories]
    params = count_params(UNetConfig.from_dict(_metrics(run)["model_config"]))
    return plot_optimizer_comparison(curves, path, "validation loss (reference's convention)",
                                     title=f"paper preset: {params:,} parameters, 200² data",
                                     reference=REFERENCE["val_loss_epoch50"], reference_epoch=50)


def plot_pruning(result: dict, path: Path) -> Path | None:
    """Test MSE and vortex count accuracy vs sparsity of every pruning run in ``result`` (``compare``'s), the
    reference's iterative MSEs as stars, and as lines the dense model they were pruned from and both dense
    baselines; None without pruning runs."""
    from bec_jax.compress.plots import plot_pruning_comparison

    pruning = result["pruning_curves"]
    if not pruning["curves"]:
        return None
    baselines = {"the dense model pruned": dict(mse=result["test_mse_ref"],
                                                vortex_count_accuracy=result["vortex_count_accuracy"]),
                 "bec_jax's dense baseline": pruning["baseline"] or {},  # drawn where it ran; its line style kept
                 "the paper's dense baseline": dict(mse=REFERENCE["pruning_baseline_test_mse"])}
    return plot_pruning_comparison(pruning["curves"], path, reference=REFERENCE["pruning_test_mse"],
                                   baselines=baselines, reference_label="the paper's iterative schedule (its data)",
                                   title=f"paper preset: {result['params']:,} parameters, {result['grid_n']}² data; "
                                         "test MSE in the reference's convention")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="paper-preset pipeline run folder (report.json)")
    p.add_argument("--optimizer-run", action="append", default=[], metavar="NAME=DIR",
                   help="a `bec-jax train` run of optimizer NAME (adam, adamw, sgd) on the same data; repeat it for "
                        "more seeds (RUN's own training is Adam's first)")
    p.add_argument("--pruning-run", action="append", default=[], metavar="DIR",
                   help="a `bec-jax prune` output from RUN/train (prune.json): the iterative schedule, one shot "
                        "with or without fine-tuning, or sparsity 0 with fine-tuning (the dense baseline); repeatable")
    p.add_argument("--reference-int8", default=None,
                   help="a `bec-jax quantize --scheme reference_per_tensor` output of RUN/train (quantize.json)")
    p.add_argument("--out", default="experiments/results/reference_comparison")
    args = p.parse_args(argv)
    run = Path(args.run)
    if not (run / "report.json").is_file():
        p.error(f"{str(run)!r} has no report.json (a finished `bec-jax pipeline` run)")
    opt_runs = {}
    for item in args.optimizer_run:
        name, _, folder = item.partition("=")
        if name not in REFERENCE["val_loss_epoch50"] or not folder:
            p.error(f"--optimizer-run takes NAME=DIR with NAME in {sorted(REFERENCE['val_loss_epoch50'])}, "
                    f"got {item!r}")
        opt_runs.setdefault(name, []).append(Path(folder))
    pruning = [Path(f) for f in args.pruning_run]
    for folder in pruning:
        if not (folder / "prune.json").is_file():
            p.error(f"{str(folder)!r} has no prune.json (a finished `bec-jax prune` run)")
    ref_int8 = Path(args.reference_int8) if args.reference_int8 else None
    if ref_int8 is not None and not (ref_int8 / "quantize.json").is_file():
        p.error(f"{str(ref_int8)!r} has no quantize.json (a finished `bec-jax quantize` run)")
    try:
        result = compare(run, opt_runs, pruning, ref_int8)
    except ValueError as e:
        p.error(str(e))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reference_comparison.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    for name, plot, alt in (("optimizers.png", lambda path: plot_optimizers(run, opt_runs, path),
                             "validation loss vs epoch of each optimizer"),
                            ("pruning.png", lambda path: plot_pruning(result, path),
                             "test MSE and vortex count accuracy vs sparsity of each pruning run")):
        (out / name).unlink(missing_ok=True)  # an earlier table's figure is not this one's
        if plot(out / name) is not None:
            table += f"\n![{alt}]({name})\n"
    (out / "reference_comparison.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
