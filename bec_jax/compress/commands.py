"""`bec-jax prune`, `bec-jax shrink` and `bec-jax quantize`: compress a trained run and evaluate the result."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from bec_jax.artifacts import CorruptArtifact, atomic_write_text, check_replaceable, read_manifest
from bec_jax.flags import UsageError, add_dataclass_flags, check_apart, config_from_flags, flag_given, out_dir


#: CompressConfig fields `bec-jax prune` does not use (the pipeline's quantization settings)
_NOT_PRUNE = ("schemes", "combined_scheme")


#: the pruning settings a method does not use, and why
_UNUSED = dict(prune=("schedule", "ft_epochs", "last_ft_epochs", "ft_lr", "keep", "precise_bn"),
               finetune=("schedule",), iterative=())
_UNUSED_WHY = dict(prune="one shot, no fine-tuning", finetune="one shot, then fine-tuning")


def _prune_base():
    """`bec-jax prune`'s defaults: the reference's iterative schedule, 10 fine-tuning epochs per stage."""
    from bec_jax.compress.workflow import CompressConfig

    return CompressConfig(sparsity=0.9, method="iterative", ft_epochs=10)


def cmd_prune(args) -> int:
    from bec_jax.compress.pruning import sparsity_report
    from bec_jax.compress.quantization import load_quantized, save_quantized
    from bec_jax.compress.workflow import (clear_stages, eval_to_train_ratio, load_setup, prune_and_finetune,
                                           stale_statistics_warning, test_mse)

    c = config_from_flags(_prune_base(), args, exclude=_NOT_PRUNE)
    pcfg = c.prune_config()
    unused = [f"--{f.replace('_', '-')}" for f in _UNUSED[c.method] if flag_given(args, f)]
    if unused:
        print(f"bec-jax prune: warning: {', '.join(unused)} not used by --method {c.method} "
              f"({_UNUSED_WHY[c.method]})", file=sys.stderr, flush=True)
    check_apart(args.out, ("model", "stages"), run=args.run)
    out, replace = _output(args, "prune", "pruned", ("model",), c, _UNUSED[c.method])
    if args.overwrite:
        clear_stages(out / "stages")
    setup = load_setup(args.run, args.data)
    lr = c.ft_lr if c.ft_lr is not None else setup.train_config.learning_rate / 10
    dense = test_mse(setup.model, setup.test)
    model, _, log = prune_and_finetune(
        setup, c.sparsity, c.method, ft_epochs=c.ft_epochs, last_ft_epochs=c.last_ft_epochs, learning_rate=lr,
        prune=pcfg, schedule=c.schedule, keep=c.keep, precise_bn=c.precise_bn,
        on_stage=lambda row: print(json.dumps({k: v for k, v in row.items() if k != "train_losses"}), flush=True),
        resume_dir=out / "stages",  # a rerun after a kill continues after the last finished epoch
        progress=not args.no_progress, log=lambda m: print(f"bec-jax prune: {m}", file=sys.stderr, flush=True))
    report = sparsity_report(nnx_params(model), include_bn_scale=c.include_bn_scale)
    warning = stale_statistics_warning(log[-1], c.precise_bn, setup.train_config.loss)
    if warning:
        print(f"bec-jax prune: warning: {warning}", file=sys.stderr, flush=True)
    sizes = save_quantized(out / "model", model, None, sparse=True, overwrite=replace,
                           extra=dict(kind="pruned", sparsity=c.sparsity, method=c.method))
    reloaded = load_quantized(out / "model", setup.model_config)[0]
    final = test_mse(reloaded, setup.test)
    evaluation = _evaluation(args, reloaded)
    if args.keep_stages:  # every stage's model, reloaded from OUT/stages and evaluated like the final one
        for i, row in enumerate(log):
            stage = out / "stages" / f"stage_{i}"
            ev = evaluation if i == len(log) - 1 else _evaluation(args, load_quantized(stage, setup.model_config)[0])
            row.update(model=str(stage), evaluation=ev)
    summary = dict(run=str(args.run), method=c.method, sparsity=c.sparsity, stages=log,
                   ft_epochs=c.ft_epochs, last_ft_epochs=c.last_ft_epochs, keep=c.keep, ft_lr=lr,
                   precise_bn=c.precise_bn, schedule=c.schedule if c.method == "iterative" else None,
                   eval_to_train_ratio=eval_to_train_ratio(log[-1], setup.train_config.loss),
                   prune_config=dataclasses.asdict(pcfg),
                   test_mse_dense=dense["mse"], test_mse_dense_ref=dense["mse_ref"], test_mse=final["mse"],
                   test_mse_ref=final["mse_ref"], ratio_to_dense=final["mse"] / dense["mse"],
                   evaluation=evaluation, achieved_sparsity=report["total"]["sparsity"], sparsity_table=report,
                   files=dict(model=str(out / "model"), **sizes))
    atomic_write_text(out / "prune.json", json.dumps(summary, indent=2))
    if not args.keep_stages:
        clear_stages(out / "stages")
    _print_headline("prune", summary, ("method", "sparsity", "achieved_sparsity", "test_mse_dense", "test_mse",
                                       "ratio_to_dense"), out / "prune.json")
    return 0


def _output(args, command: str, kind: str, names, config, unused=()) -> tuple[Path, bool]:
    """(output folder, whether its ``names`` may be replaced) of a compress ``command`` run, checked before any
    work. A finished run (its COMMAND.json written) is refused without --overwrite, naming the settings of
    ``config`` (but ``unused``) and the run it ran with other values. A run stopped after saving its model (``kind``, as
    the save records it), during its evaluation, or halfway through the save, is taken up again: the model is
    replaced, as with --overwrite. A model of another command stays protected."""
    summary = Path(args.out) / f"{command}.json"
    if not args.overwrite and summary.is_file():
        differ = _differences(summary, config, unused, run=os.path.realpath(args.run))
        said = f" with other settings ({differ})" if differ else ": nothing to do"
        raise UsageError(f"{args.out!r} holds a finished `bec-jax {command}` ({summary.name}){said}; use "
                         "another --out, or --overwrite to run it again")
    out = out_dir(args.out)
    replace = args.overwrite or _saved_by(out / "model", kind)
    for name in names:
        check_replaceable(out / name, replace)
    return out, replace


def _differences(summary: Path, config, unused=(), **inputs) -> str:
    """The fields of the dataclass ``config`` (but ``unused``) and the ``inputs`` whose values differ from those
    ``summary`` (a JSON file) records, as "field X there, Y here; ..."; values unset (None) on either side, as
    a default decided at run time, are not compared."""
    try:
        done = json.loads(summary.read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(done, dict):
        return ""
    done = {**(done.get("prune_config") or {}), **done}  # prune.json keeps the pruning rule's own fields apart
    out = []
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in unused} | inputs
    for name, value in values.items():
        here, there = json.loads(json.dumps(value)), done.get(name)  # tuples as the JSON's lists
        if name == "run" and there is not None:  # as typed then: the same folder, spelled another way, is no change
            there = os.path.realpath(there)
        if here is not None and there is not None and here != there:
            out.append(f"{name} {there} there, {here} here")
    return "; ".join(out)


def _saved_by(model: Path, kind: str) -> bool:
    """Whether the folder ``model`` holds a save of ``kind`` (its quantized.json's extra.kind), or a save
    stopped halfway (it never loads)."""
    from bec_jax.compress.quantization import read_model_meta

    try:
        if read_manifest(model).get("complete") is False:
            return True
        meta = read_model_meta(model, verify=False)
    except (CorruptArtifact, OSError, ValueError):
        return False
    return (meta.get("extra") or {}).get("kind") == kind


def _print_headline(command: str, summary: dict, keys, path: Path) -> None:
    """Print the JSON line of a compress command: ``keys`` of its ``summary``, the evaluation's mean fidelity and
    vortex count accuracy, and its JSON file ``path``; warn on stderr for a model no better than a zero-phase
    guess, which its MSE alone would not show."""
    ev = summary["evaluation"]
    if ev["fidelity_mean"] <= ev["fidelity_zero_phase_mean"]:
        print(f"bec-jax {command}: warning: this model has not learnt the phase: mean fidelity "
              f"{ev['fidelity_mean']:.3f}, no better than a zero-phase guess's {ev['fidelity_zero_phase_mean']:.3f}",
              file=sys.stderr, flush=True)
    print(json.dumps({k: summary[k] for k in keys} | dict(fidelity_mean=ev["fidelity_mean"],
                     vortex_count_accuracy=ev["vortex_count_accuracy"], json=str(path))))


def _evaluation(args, model) -> dict:
    """The test-split metrics of a compressed ``model`` of ``args.run`` (``evaluate_run``'s summary: MSEs in
    both conventions, fidelity, vortex counts and positions), as the pipeline reports for its models."""
    from bec_jax.train.evaluate import evaluate_run

    return evaluate_run(args.run, data=args.data, model=model, progress=not args.no_progress)["summary"]


def nnx_params(model):
    from flax import nnx

    return nnx.state(model, nnx.Param)


def cmd_quantize(args) -> int:
    from tqdm.auto import tqdm

    from bec_jax.compress.quantization import QuantConfig, load_quantized, quantize_model, save_quantized
    from bec_jax.compress.workflow import FineTuner, QuantizeConfig, load_setup, test_mse

    c = config_from_flags(QuantizeConfig(), args)
    check_apart(args.out, ("model", "fp32"), run=args.run, from_pruned=args.from_pruned)
    out, replace = _output(args, "quantize", "quantized", ("model", "fp32"), c)
    setup = load_setup(args.run, args.data)
    model = setup.model
    if args.from_pruned:
        pruned = Path(args.from_pruned)  # a prune/shrink output, or a saved model folder itself (models/pruned)
        model, meta = load_quantized(pruned if (pruned / "quantized.json").is_file() else pruned / "model",
                                     setup.model_config)
        if meta.get("quant"):  # int8 twice compounds the rounding (quantize's, the pipeline's int8 variants)
            raise UsageError(f"--from-pruned {args.from_pruned!r} holds an int8 model already: give a `bec-jax "
                             "prune` or `shrink` output")
    qcfg = QuantConfig.preset(c.scheme)
    fp32 = test_mse(model, setup.test)
    if c.qat_epochs:
        import jax
        import numpy as np
        from flax import nnx

        fq = quantize_model(model, qcfg, "fake")
        params = nnx.state(fq, nnx.Param)
        # keep existing zeros (a pruned model stays pruned during QAT)
        masks = jax.tree.map(lambda p: np.asarray(p) != 0, params)
        lr = c.qat_lr if c.qat_lr is not None else setup.train_config.learning_rate / 10
        with tqdm(total=c.qat_epochs, desc="QAT", unit="epoch", dynamic_ncols=True, disable=args.no_progress) as bar:
            tuned = FineTuner(fq, setup.train, learning_rate=lr, config=setup.train_config).run(
                fq, masks, c.qat_epochs, on_epoch=lambda k, m: bar.update()).model
        model = _unwrap(tuned, model)
    sizes = save_quantized(out / "model", model, qcfg, sparse=c.sparse, overwrite=replace,
                           extra=dict(kind="quantized", scheme=c.scheme, qat_epochs=c.qat_epochs))
    fp_sizes = save_quantized(out / "fp32", model if not c.qat_epochs else setup.model, None,
                              sparse=c.sparse, overwrite=replace)
    reloaded, _ = load_quantized(out / "model", setup.model_config)
    q = test_mse(reloaded, setup.test)
    summary = dict(run=str(args.run), scheme=c.scheme, quant=qcfg.to_dict(), qat_epochs=c.qat_epochs,
                   sparse=c.sparse, test_mse_fp32=fp32["mse"], test_mse_reloaded=q["mse"],
                   mse_change=q["mse"] / fp32["mse"] - 1, evaluation=_evaluation(args, reloaded),
                   bytes_on_disk=sizes["bytes_on_disk"],
                   payload_bytes=sizes["payload_bytes"], fp32_bytes_on_disk=fp_sizes["bytes_on_disk"],
                   fp32_payload_bytes=fp_sizes["payload_bytes"], model=str(out / "model"))
    atomic_write_text(out / "quantize.json", json.dumps(summary, indent=2))
    _print_headline("quantize", summary, ("scheme", "qat_epochs", "test_mse_fp32", "test_mse_reloaded",
                                          "mse_change", "bytes_on_disk", "fp32_bytes_on_disk"), out / "quantize.json")
    return 0


def cmd_shrink(args) -> int:
    from tqdm.auto import tqdm

    from bec_jax.compress.quantization import load_quantized, save_quantized
    from bec_jax.compress.structured import gradual_shrink, inner_widths, outer_widths, shrink_model
    from bec_jax.compress.workflow import FineTuner, ShrinkConfig, latency_table, load_setup, test_mse
    from bec_jax.models import count_params

    c = config_from_flags(ShrinkConfig(), args)
    check_apart(args.out, ("model",), run=args.run)
    out, replace = _output(args, "shrink", "structured", ("model",), c)
    setup = load_setup(args.run, args.data)
    lr = c.ft_lr if c.ft_lr is not None else setup.train_config.learning_rate
    epoch, before = 0, test_mse(shrink_model(setup.model, c.keep, outer=c.outer), setup.test)["mse"]
    per_step = c.epochs_per_step
    bar = tqdm(total=c.ft_epochs, desc="fine-tune", unit="epoch", dynamic_ncols=True,
               disable=not c.ft_epochs or args.no_progress)

    def finetune(model, step):
        nonlocal epoch
        if not per_step[step - 1]:
            return model
        r = FineTuner(model, setup.train, learning_rate=lr, config=setup.train_config).run(
            model, None, per_step[step - 1], on_epoch=lambda k, m: bar.update(),
            select=setup.val if c.keep_epoch == "best" else None)
        epoch = r.epoch
        return r.model

    small = gradual_shrink(setup.model, c.keep, c.steps, finetune, outer=c.outer)
    bar.close()
    sizes = save_quantized(out / "model", small, None, overwrite=replace,
                           extra=dict(kind="structured", keep=c.keep, outer=c.outer))
    reloaded, _ = load_quantized(out / "model", setup.model_config)
    dense, mse = test_mse(setup.model, setup.test)["mse"], test_mse(reloaded, setup.test)["mse"]
    x = next(iter(setup.test.epoch(0))).x
    lat = latency_table({"dense": setup.model, "shrunk": reloaded}, x, repeats=c.repeats)
    summary = dict(run=str(args.run), keep=c.keep, outer=c.outer, steps=c.steps, ft_epochs=c.ft_epochs,
                   ft_epochs_per_step=list(per_step), ft_lr=lr,
                   keep_epoch=c.keep_epoch, kept_epoch=epoch, params_dense=count_params(setup.model),
                   params=count_params(reloaded), inner_widths=inner_widths(reloaded),
                   outer_widths=outer_widths(reloaded), test_mse_dense=dense, test_mse_before_finetune=before,
                   test_mse_reloaded=mse, ratio_to_dense=mse / dense, evaluation=_evaluation(args, reloaded),
                   latency_batch=int(x.shape[0]),
                   latency_ms_dense=lat["dense"]["median_ms"], latency_ms=lat["shrunk"]["median_ms"],
                   speedup=lat["dense"]["median_ms"] / lat["shrunk"]["median_ms"], model=str(out / "model"), **sizes)
    atomic_write_text(out / "shrink.json", json.dumps(summary, indent=2))
    _print_headline("shrink", summary, ("keep", "outer", "params", "test_mse_dense", "test_mse_reloaded",
                                        "ratio_to_dense", "speedup"), out / "shrink.json")
    return 0


def _unwrap(fake_model, like):
    """Plain float model holding the (QAT-trained) weights and statistics of ``fake_model``.

    ``FakeQuantConv`` keeps nnx.Conv's parameter names, so the states share paths.
    """
    from flax import nnx

    model = nnx.clone(like)
    for kind in (nnx.Param, nnx.BatchStat):
        nnx.update(model, nnx.state(fake_model, kind))
    model.eval()
    return model


def _io_flags(parser, out: str, replaces: str) -> None:
    """What every compression command reads and writes (its settings are its config's flags)."""
    parser.add_argument("--run", default="runs/train", help="training run folder (bec-jax train)")
    parser.add_argument("--data", default=None, help="dataset .h5 (default: the run's)")
    parser.add_argument("--out", default=out, help=f"output folder (default {out})")
    parser.add_argument("--overwrite", action="store_true", help=f"replace {replaces}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub) -> None:
    from bec_jax.compress.workflow import CompressConfig, QuantizeConfig, ShrinkConfig

    p = sub.add_parser("prune", help="magnitude pruning of a trained run (+ optional fine-tuning)",
                       description="Prune a trained run, fine-tune, save, reload and evaluate. Every CompressConfig "
                                   "pruning field is a flag.")
    _io_flags(p, "runs/prune", "an existing OUT/model")
    p.add_argument("--keep-stages", action="store_true",
                   help="keep every stage's model in OUT/stages/stage_<i>, reloaded and evaluated on the test split "
                        "(each stage's 'evaluation' in prune.json; default: deleted once the run has finished)")
    add_dataclass_flags(p, CompressConfig, _prune_base(), exclude=_NOT_PRUNE, title="pruning (CompressConfig)")
    p.set_defaults(func=cmd_prune)

    s = sub.add_parser("shrink", help="structured channel pruning (a smaller, faster dense U-Net) + fine-tuning, "
                                      "saved, reloaded and evaluated",
                       description="Shrink a trained run's U-Net channel-wise, fine-tune, save, reload, evaluate and "
                                   "time it against the dense model. Every ShrinkConfig field is a flag.")
    _io_flags(s, "runs/shrink", "an existing OUT/model")
    add_dataclass_flags(s, ShrinkConfig, title="structured pruning (ShrinkConfig)")
    s.set_defaults(func=cmd_shrink)

    q = sub.add_parser("quantize", help="int8 post-training quantization (+ optional QAT), save, reload, evaluate",
                       description="Quantize a trained (or pruned) run to int8, save, reload and evaluate. Every "
                                   "QuantizeConfig field is a flag.")
    _io_flags(q, "runs/quantize", "existing OUT/model and OUT/fp32")
    q.add_argument("--from-pruned", default=None,
                   help="start from a `bec-jax prune` or `shrink` output folder, or a saved model folder of one "
                        "(a pipeline run's models/pruned)")
    add_dataclass_flags(q, QuantizeConfig, title="int8 (QuantizeConfig)")
    q.set_defaults(func=cmd_quantize)
