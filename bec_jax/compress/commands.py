"""`bec-jax prune`, `bec-jax shrink` and `bec-jax quantize`: compress a trained run and evaluate the result."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from bec_jax.artifacts import check_replaceable
from bec_jax.flags import UsageError, add_dataclass_flags, config_from_flags, floats, out_dir


#: CompressConfig fields `bec-jax prune` does not use (the pipeline's quantization settings)
_NOT_PRUNE = ("schemes", "combined_scheme")


def _prune_base():
    """`bec-jax prune`'s defaults: the reference's iterative schedule, 10 fine-tuning epochs per stage."""
    from bec_jax.compress.workflow import CompressConfig

    return CompressConfig(sparsity=0.9, method="iterative", ft_epochs=10)


def cmd_prune(args) -> int:
    from bec_jax.compress.pruning import sparsity_report
    from bec_jax.compress.quantization import save_quantized
    from bec_jax.compress.workflow import load_setup, prune_and_finetune, test_mse

    c = config_from_flags(_prune_base(), args, exclude=_NOT_PRUNE)
    pcfg = c.prune_config()
    out = out_dir(args.out)
    check_replaceable(out / "model", args.overwrite)  # before the work, not after it
    setup = load_setup(args.run, args.data)
    lr = c.ft_lr if c.ft_lr is not None else setup.train_config.learning_rate / 10
    dense = test_mse(setup.model, setup.test)
    model, _, log = prune_and_finetune(
        setup, c.sparsity, c.method, ft_epochs=c.ft_epochs, learning_rate=lr,
        prune=pcfg, schedule=tuple(args.schedule), keep=c.keep, precise_bn=args.precise_bn,
        on_stage=lambda row: print(json.dumps({k: v for k, v in row.items() if k != "train_losses"}), flush=True))
    final = test_mse(model, setup.test)
    report = sparsity_report(nnx_params(model), include_bn_scale=c.include_bn_scale)
    sizes = save_quantized(out / "model", model, None, sparse=True, overwrite=args.overwrite,
                           extra=dict(kind="pruned", sparsity=c.sparsity, method=c.method))
    summary = dict(run=str(args.run), method=c.method, sparsity=c.sparsity, stages=log,
                   ft_epochs=c.ft_epochs, keep=c.keep, ft_lr=lr, precise_bn=args.precise_bn,
                   prune_config=dataclasses.asdict(pcfg),
                   test_mse_dense=dense["mse"], test_mse=final["mse"], ratio_to_dense=final["mse"] / dense["mse"],
                   sparsity_table=report, files=dict(model=str(out / "model"), **sizes))
    (out / "prune.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("method", "sparsity", "test_mse_dense", "test_mse", "ratio_to_dense")}
                     | dict(achieved_sparsity=report["total"]["sparsity"], json=str(out / "prune.json"))))
    return 0


def nnx_params(model):
    from flax import nnx

    return nnx.state(model, nnx.Param)


def cmd_quantize(args) -> int:
    from bec_jax.compress.quantization import SCHEMES, QuantConfig, load_quantized, quantize_model, save_quantized
    from bec_jax.compress.workflow import FineTuner, load_setup, test_mse

    if args.scheme not in SCHEMES:
        raise UsageError(f"unknown scheme {args.scheme!r}; allowed: {SCHEMES}")
    if args.qat_epochs < 0:
        raise UsageError(f"--qat-epochs must be >= 0, got {args.qat_epochs}")
    out = out_dir(args.out)
    for name in ("model", "fp32"):
        check_replaceable(out / name, args.overwrite)
    setup = load_setup(args.run, args.data)
    model = setup.model
    if args.from_pruned:
        model, _ = load_quantized(Path(args.from_pruned) / "model", setup.model_config)
    qcfg = QuantConfig.preset(args.scheme)
    fp32 = test_mse(model, setup.test)
    if args.qat_epochs:
        import jax
        import numpy as np
        from flax import nnx

        fq = quantize_model(model, qcfg, "fake")
        params = nnx.state(fq, nnx.Param)
        # keep existing zeros (a pruned model stays pruned during QAT)
        masks = jax.tree.map(lambda p: np.asarray(p) != 0, params)
        lr = args.qat_lr if args.qat_lr is not None else setup.train_config.learning_rate / 10
        tuned = FineTuner(fq, setup.train, learning_rate=lr, config=setup.train_config).run(
            fq, masks, args.qat_epochs).model
        model = _unwrap(tuned, model)
    sizes = save_quantized(out / "model", model, qcfg, sparse=args.sparse, overwrite=args.overwrite,
                           extra=dict(kind="quantized", scheme=args.scheme, qat_epochs=args.qat_epochs))
    fp_sizes = save_quantized(out / "fp32", model if not args.qat_epochs else setup.model, None,
                              sparse=args.sparse, overwrite=args.overwrite)
    reloaded, _ = load_quantized(out / "model", setup.model_config)
    q = test_mse(reloaded, setup.test)
    summary = dict(run=str(args.run), scheme=args.scheme, quant=qcfg.to_dict(), qat_epochs=args.qat_epochs,
                   sparse=args.sparse, test_mse_fp32=fp32["mse"], test_mse_reloaded=q["mse"],
                   mse_change=q["mse"] / fp32["mse"] - 1, bytes_on_disk=sizes["bytes_on_disk"],
                   payload_bytes=sizes["payload_bytes"], fp32_bytes_on_disk=fp_sizes["bytes_on_disk"],
                   fp32_payload_bytes=fp_sizes["payload_bytes"], model=str(out / "model"))
    (out / "quantize.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


def _keep_fraction(text: str) -> float:
    import argparse

    try:
        k = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"keep fraction must be a number in (0, 1], got {text!r}") from None
    if not (0 < k <= 1):
        raise argparse.ArgumentTypeError(f"keep fraction must be in (0, 1], got {k}")
    return k


def cmd_shrink(args) -> int:
    from bec_jax.compress.quantization import load_quantized, save_quantized
    from bec_jax.compress.structured import gradual_shrink, inner_widths, outer_widths, shrink_model
    from bec_jax.compress.workflow import FineTuner, latency_table, load_setup, test_mse
    from bec_jax.models import count_params

    if args.ft_epochs < 0 or args.repeats < 1 or args.steps < 1:
        raise UsageError(f"--ft-epochs must be >= 0, --repeats and --steps >= 1, got {args.ft_epochs}, "
                         f"{args.repeats}, {args.steps}")
    out = out_dir(args.out)
    check_replaceable(out / "model", args.overwrite)
    setup = load_setup(args.run, args.data)
    lr = args.ft_lr if args.ft_lr is not None else setup.train_config.learning_rate
    epoch, before = 0, test_mse(shrink_model(setup.model, args.keep, outer=args.outer), setup.test)["mse"]
    if args.steps > 1 and args.ft_epochs < args.steps:
        raise UsageError(f"--steps {args.steps} needs --ft-epochs >= {args.steps} (split over the steps)")
    per_step = [args.ft_epochs // args.steps + (i < args.ft_epochs % args.steps) for i in range(args.steps)]
    from tqdm.auto import tqdm

    bar = tqdm(total=args.ft_epochs, desc="fine-tune", unit="epoch", dynamic_ncols=True, disable=not args.ft_epochs)

    def finetune(model, step):
        nonlocal epoch
        if not per_step[step - 1]:
            return model
        r = FineTuner(model, setup.train, learning_rate=lr, config=setup.train_config).run(
            model, None, per_step[step - 1], on_epoch=lambda k, m: bar.update(),
            select=setup.val if args.keep_epoch == "best" else None)
        epoch = r.epoch
        return r.model

    small = gradual_shrink(setup.model, args.keep, args.steps, finetune, outer=args.outer)
    bar.close()
    sizes = save_quantized(out / "model", small, None, overwrite=args.overwrite,
                           extra=dict(kind="structured", keep=args.keep, outer=args.outer))
    reloaded, _ = load_quantized(out / "model", setup.model_config)
    dense, mse = test_mse(setup.model, setup.test)["mse"], test_mse(reloaded, setup.test)["mse"]
    x = next(iter(setup.test.epoch(0))).x
    lat = latency_table({"dense": setup.model, "shrunk": reloaded}, x, repeats=args.repeats)
    summary = dict(run=str(args.run), keep=args.keep, outer=args.outer, steps=args.steps, ft_epochs=args.ft_epochs,
                   ft_epochs_per_step=per_step, ft_lr=lr,
                   keep_epoch=args.keep_epoch, kept_epoch=epoch, params_dense=count_params(setup.model),
                   params=count_params(reloaded), inner_widths=inner_widths(reloaded),
                   outer_widths=outer_widths(reloaded), test_mse_dense=dense, test_mse_before_finetune=before,
                   test_mse_reloaded=mse, ratio_to_dense=mse / dense, latency_batch=int(x.shape[0]),
                   latency_ms_dense=lat["dense"]["median_ms"], latency_ms=lat["shrunk"]["median_ms"],
                   speedup=lat["dense"]["median_ms"] / lat["shrunk"]["median_ms"], model=str(out / "model"), **sizes)
    (out / "shrink.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("keep", "outer", "params", "test_mse_dense", "test_mse_reloaded",
                                              "ratio_to_dense", "speedup")} | dict(json=str(out / "shrink.json"))))
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


def register(sub) -> None:
    from bec_jax.compress.workflow import CompressConfig

    p = sub.add_parser("prune", help="magnitude pruning of a trained run (+ optional fine-tuning)",
                       description="Prune a trained run, fine-tune, save, reload and evaluate. Every CompressConfig "
                                   "pruning field is a flag.")
    p.add_argument("--run", default="runs/train", help="training run folder (bec-jax train)")
    p.add_argument("--data", default=None, help="dataset .h5 (default: the run's)")
    p.add_argument("--schedule", type=floats, default=[0.8, 0.9, 0.97, 0.99, 0.995, 0.999],
                   help="iterative schedule (steps below --sparsity are used, then --sparsity)")
    p.add_argument("--precise-bn", action="store_true",
                   help="recompute BatchNorm statistics over the training set after every fine-tuning epoch "
                        "(steadier eval-mode outputs at extreme sparsity)")
    p.add_argument("--out", default="runs/prune")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/model")
    add_dataclass_flags(p, CompressConfig, _prune_base(), exclude=_NOT_PRUNE, title="pruning (CompressConfig)")
    p.set_defaults(func=cmd_prune)

    s = sub.add_parser("shrink", help="structured channel pruning (a smaller, faster dense U-Net) + fine-tuning, "
                                      "saved, reloaded and evaluated")
    s.add_argument("--run", default="runs/train", help="training run folder (bec-jax train)")
    s.add_argument("--data", default=None, help="dataset .h5 (default: the run's)")
    s.add_argument("--keep", type=_keep_fraction, default=0.5, help="fraction of channels kept, in (0, 1]")
    s.add_argument("--outer", action="store_true",
                   help="prune the blocks' output channels too (faster; skips and consumers shrink with them); "
                        "default: only the channels inside each DoubleConv")
    s.add_argument("--ft-epochs", type=int, default=30, help="fine-tuning epochs in all (0: none)")
    s.add_argument("--steps", type=int, default=1,
                   help="gradual pruning: cut in this many steps of equal ratio, fine-tuning after each "
                        "(--ft-epochs split over them; channels re-ranked after every step)")
    s.add_argument("--ft-lr", type=float, default=None, help="fine-tuning lr (default: the training lr)")
    s.add_argument("--keep-epoch", choices=["best", "last"], default="best",
                   help="fine-tuning epoch kept: lowest validation MSE (as training does) or the last")
    s.add_argument("--repeats", type=int, default=10, help="interleaved latency calls (dense vs shrunk)")
    s.add_argument("--out", default="runs/shrink")
    s.add_argument("--overwrite", action="store_true", help="replace an existing OUT/model")
    s.set_defaults(func=cmd_shrink)

    q = sub.add_parser("quantize", help="int8 post-training quantization (+ optional QAT), save, reload, evaluate")
    q.add_argument("--run", default="runs/train", help="training run folder (bec-jax train)")
    q.add_argument("--data", default=None, help="dataset .h5 (default: the run's)")
    q.add_argument("--scheme", default="mixed", help="per_tensor, per_channel or mixed")
    q.add_argument("--qat-epochs", type=int, default=0, help="quantization-aware fine-tuning epochs (0: PTQ)")
    q.add_argument("--qat-lr", type=float, default=None, help="QAT lr (default: training lr / 10)")
    q.add_argument("--from-pruned", default=None, help="start from a `bec-jax prune` output folder")
    q.add_argument("--sparse", action="store_true", help="store kernels sparse (non-zero values + 1-byte index gaps)")
    q.add_argument("--out", default="runs/quantize")
    q.add_argument("--overwrite", action="store_true", help="replace existing OUT/model and OUT/fp32")
    q.set_defaults(func=cmd_quantize)
