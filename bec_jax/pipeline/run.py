"""``bec-jax pipeline``: generate → train → evaluate → prune → quantize →
evaluate the reloaded compressed models → deploy (export, reload, time) → report, in one resumable run folder.

Every stage is a call into the library (``generate``, ``fit``,
``evaluate_model``, ``prune_and_finetune``, ``save_quantized`` /
``load_quantized``) and ends by writing ``stages/<stage>.json`` atomically; a
rerun skips finished stages. Generation and training also resume inside their
stage (finished batches, the latest checkpoint), so an interrupted run loses at
most one dataset batch or the epochs since the last checkpoint; pruning keeps
each finished stage of its schedule and checkpoints every fine-tuning epoch of
the stage in progress, so it loses at most one epoch; the other stages take
seconds to minutes and are redone when interrupted.

Run folder::

    config.json        the full PipelineConfig (a rerun must match it)
    data.h5            the dataset (HDF5)
    train/             orbax checkpoints, metrics.csv/json
    models/<variant>/  every evaluated model, saved with orbax (save_quantized)
    pruning_stages/    an interrupted pruning schedule's finished stages and the epochs of the one in progress
                       (gone once it is done)
    deploy/            the exported dense and int8 files (ONNX, or jax.export without ONNX Runtime)
    stages/*.json      per-stage results
    stages/*.elapsed   seconds spent so far on a stage that has not finished (``StageClock``)
    report.md, report.json, *.png
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bec_jax.artifacts import MANIFEST, CorruptArtifact, atomic_write_text, read_manifest, sha256_file, write_manifest
from bec_jax.pipeline.clock import StageClock
from bec_jax.pipeline.config import PipelineConfig

__all__ = ["STAGES", "RunConflict", "run_pipeline", "prepare_run"]

STAGES = ("generate", "train", "evaluate", "prune", "quantize", "evaluate_compressed", "deploy", "report")


class RunConflict(ValueError):
    """The run folder holds a run with another config."""


def _write_json(path: Path, obj) -> None:
    """Write JSON via a temporary file and a rename (a kill leaves old or new, never half)."""
    atomic_write_text(path, json.dumps(obj, indent=2))


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def prepare_run(config: PipelineConfig, out) -> Path:
    """Create ``out`` and write config.json, or check that an existing run has
    the same config (RunConflict naming the differing fields otherwise)."""
    out = Path(out)
    (out / "stages").mkdir(parents=True, exist_ok=True)
    cfg_file = out / "config.json"
    new = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as stored
    if cfg_file.exists():
        old = json.loads(cfg_file.read_text())
        try:  # fields added since (with their defaults) do not make an older run another config
            old = json.loads(json.dumps(PipelineConfig.from_dict(old).to_dict()))
        except (ValueError, TypeError):
            pass  # compared as stored: the difference is named below
        # the data's batch size only sets how many states are solved at once: a run resumes with another
        diff = [d for d in _diff(old, new) if not d.startswith("data.batch_size:")]
        if diff:  # config.json keeps the run's first config: its data may already be generated with it
            raise RunConflict(f"{str(out)!r} holds a run with another config ({'; '.join(diff[:3])}"
                              f"{'; …' if len(diff) > 3 else ''}); use another --out or delete it")
    else:
        _write_json(cfg_file, new)
    return out


# ------------------------------------------------------------------ stages

class _Context:
    """Run folder, config and lazily loaded shared objects of one invocation."""

    def __init__(self, config: PipelineConfig, out: Path, progress: bool, log: Callable[[str], None]):
        self.config, self.out, self.progress, self.log = config, out, progress, log
        self.results: dict[str, dict] = {}
        self._setup = self._test = None

    @property
    def data(self) -> Path:
        return self.out / "data.h5"

    @property
    def train_dir(self) -> Path:
        return self.out / "train"

    def setup(self):
        """Best checkpoint with its dataset loaders (``compress.workflow.Setup``)."""
        if self._setup is None:
            from bec_jax.compress.workflow import load_setup

            self._setup = load_setup(self.train_dir, self.data, which="best",
                                     eval_batch_size=self.config.report.eval_batch_size)
        return self._setup

    def test_split(self):
        """(grid, arrays of the test split, TargetConfig, the split's indices in the file), read once."""
        if self._test is None:
            from bec_jax.train.trainer import load_dataset

            tc = self.setup().train_config
            grid, arrays, _, splits = load_dataset(self.data, tc)
            test = splits["test"]
            self._test = grid, {k: v[test] for k, v in arrays.items()}, tc.target_config, test
        return self._test


def _stage_generate(ctx: _Context) -> dict:
    from bec_jax.data.generate import generate
    from bec_jax.data.plots import plot_samples

    summary = generate(ctx.config.data, ctx.data, progress=ctx.progress)
    if summary["status"] != "complete":
        raise RuntimeError(f"dataset generation stopped early: {summary}")
    if summary["n_samples"] < 5:
        raise ValueError(f"only {summary['n_samples']} converged states in {ctx.data}; widen the config")
    png = plot_samples(ctx.data, ctx.out / "data_samples.png", n_samples=3)
    return dict(summary, figure=Path(png).name, size_bytes=ctx.data.stat().st_size)


def _stage_train(ctx: _Context) -> dict:
    from bec_jax.train.plots import plot_history
    from bec_jax.train.trainer import fit

    c = ctx.config
    res = fit(ctx.data, ctx.train_dir, c.model, c.train, imaging=c.imaging,
              checkpoint_every=max(1, c.train.epochs // 10), progress=ctx.progress, log=None)
    png = plot_history(res.history, ctx.out / "training_loss.png",
                       title=f"U-Net width {c.model.base_width}, depth {c.model.depth}, {c.train.optimizer} "
                             f"lr {c.train.learning_rate:g}")
    best = next(r for r in res.history if r["epoch"] == res.best_epoch)
    return dict(epochs=len(res.history), best_epoch=res.best_epoch, best_val_mse=best["val_mse"],
                final_train_loss=res.history[-1]["train_loss"],
                seconds=float(sum(r["seconds"] for r in res.history)), figure=Path(png).name)


def _evaluate(ctx: _Context, model, desc: str, keep: int = 0):
    """(summary, samples) of ``model`` on the run's test split."""
    from bec_jax.train.evaluate import evaluate_model

    grid, arrays, tcfg, ids = ctx.test_split()
    return evaluate_model(model, grid, arrays, np.arange(len(ids)), tcfg,
                          batch_size=ctx.config.report.eval_batch_size, progress=ctx.progress, keep=keep, desc=desc,
                          imaging=ctx.config.imaging, seed=ctx.config.train.seed, ids=ids)


def _latency_inputs(ctx: _Context):
    """float32 (latency_batch, n, n, 1): the test inputs every latency is measured on."""
    import jax.numpy as jnp

    from bec_jax.data.targets import make_example

    grid, arrays, tcfg, _ = ctx.test_split()
    sel = np.resize(np.arange(len(arrays["psi"])), ctx.config.report.latency_batch)
    return make_example(grid, jnp.asarray(arrays["psi"][sel]), tcfg)[0].astype(jnp.float32)


def _latency(ctx: _Context, model) -> dict:
    """Median forward latency (ms) of ``model`` on a batch of test inputs."""
    from bec_jax.compress.workflow import forward_latency

    r = ctx.config.report
    lat = forward_latency(model, _latency_inputs(ctx), repeats=r.latency_repeats)
    lat.pop("output")
    return dict(lat, batch=r.latency_batch)


def _stage_evaluate(ctx: _Context) -> dict:
    from bec_jax.train.plots import plot_predictions

    s = ctx.setup()
    summary, samples = _evaluate(ctx, s.model, "evaluate", keep=ctx.config.report.samples)
    out = dict(summary=summary, epoch=int(s.info["epoch"]))
    if samples:
        png = plot_predictions(samples, ctx.out / "predictions.png",
                               title=f"test split, best checkpoint (epoch {s.info['epoch']}): masked MSE "
                                     f"{summary['mse']:.2e}, mean fidelity {summary['fidelity_mean']:.4f}")
        out["figure"] = Path(png).name
    return out


def _stage_prune(ctx: _Context) -> dict:
    from flax import nnx

    from bec_jax.compress.pruning import sparsity_report
    from bec_jax.compress.quantization import save_quantized
    from bec_jax.compress.workflow import (clear_stages, eval_to_train_ratio, prune_and_finetune,
                                           stale_statistics_warning)

    c = ctx.config.compress
    # every finished stage of an iterative schedule is kept until the stage is done: a kill loses one stage
    progress_dir = ctx.out / "pruning_stages"
    model, _, rows = prune_and_finetune(ctx.setup(), c.sparsity, c.method, ft_epochs=c.ft_epochs,
                                        last_ft_epochs=c.last_ft_epochs,
                                        learning_rate=ctx.config.ft_lr, prune=c.prune_config(), keep=c.keep,
                                        schedule=c.schedule, precise_bn=c.precise_bn, progress=ctx.progress,
                                        resume_dir=progress_dir)
    sizes = save_quantized(ctx.out / "models" / "pruned", model, None, sparse=True, overwrite=True,
                           extra=dict(kind="pruned", source="pruned", scheme=None, sparsity=c.sparsity,
                                      method=c.method))
    clear_stages(progress_dir)
    loss = ctx.setup().train_config.loss
    warning = stale_statistics_warning(rows[-1], c.precise_bn, loss, "--compress-precise-bn")
    if warning:
        ctx.log(f"warning: {warning}")
    achieved = sparsity_report(nnx.state(model, nnx.Param), c.include_bn_scale)["total"]["sparsity"]
    return dict(method=c.method, target_sparsity=c.sparsity, achieved_sparsity=achieved, sizes=sizes,
                ft_epochs=c.ft_epochs, last_ft_epochs=c.last_ft_epochs, ft_lr=ctx.config.ft_lr, keep=c.keep,
                eval_to_train_ratio=eval_to_train_ratio(rows[-1], loss), warning=warning,
                stages=[{k: v for k, v in r.items() if k != "train_losses"} for r in rows])


def _variants(config: PipelineConfig) -> dict[str, tuple[str, str | None, bool]]:
    """name -> (source model "dense" | "pruned", quantization scheme or None, stored sparse)."""
    v = {"dense": ("dense", None, False), "pruned": ("pruned", None, True)}
    for s in config.compress.schemes:
        v[f"int8_{s}"] = ("dense", s, False)
    v[f"pruned_int8_{config.compress.combined_scheme}"] = ("pruned", config.compress.combined_scheme, True)
    return v


def _stage_quantize(ctx: _Context) -> dict:
    from tqdm.auto import tqdm

    from bec_jax.compress.quantization import QuantConfig, load_quantized, save_quantized

    models = ctx.out / "models"
    pruned, _ = load_quantized(models / "pruned", ctx.config.model)
    sources = {"dense": ctx.setup().model, "pruned": pruned}
    sizes = {}
    for name, (src, scheme, sparse) in tqdm(_variants(ctx.config).items(), desc="quantize", unit="model",
                                            disable=not ctx.progress):
        if name == "pruned" and "sizes" in ctx.results["prune"]:  # saved by the prune stage, whose record covers it
            sizes[name] = ctx.results["prune"]["sizes"]
            continue
        qc = QuantConfig.preset(scheme) if scheme else None
        sizes[name] = save_quantized(models / name, sources[src], qc, sparse=sparse, overwrite=True,
                                     extra=dict(kind=name, source=src, scheme=scheme))
    return dict(sizes=sizes)


def _stage_evaluate_compressed(ctx: _Context) -> dict:
    from bec_jax.compress.quantization import QuantConfig, load_quantized

    rows = {}
    for name, (src, scheme, sparse) in _variants(ctx.config).items():
        model, _ = load_quantized(ctx.out / "models" / name, ctx.config.model)
        summary, _ = _evaluate(ctx, model, f"evaluate {name}")
        row = dict(source=src, scheme=scheme, stored_sparse=sparse, summary=summary,
                   latency_ms=_latency(ctx, model))
        if scheme and QuantConfig.preset(scheme).integer_path:  # integer inference: int8 x int8 -> int32 convs
            int8_model, _ = load_quantized(ctx.out / "models" / name, ctx.config.model, mode="int8")
            row["latency_int8_ms"] = _latency(ctx, int8_model)
        rows[name] = row
    return dict(variants=rows)


def _deployed(config: PipelineConfig) -> list[str]:
    """Model variants the deploy stage exports: the dense model and each of its int8 schemes that have an
    integer path (the reference's asymmetric scheme has none). All of them: which int8 file keeps the
    accuracy depends on the model (static activation ranges cost a 64² model 0.4 % but the paper preset's
    per-channel file 2.6× its MSE, docs/deploy.md), and each costs seconds."""
    from bec_jax.compress.quantization import QuantConfig

    return ["dense"] + [f"int8_{s}" for s in config.compress.schemes if QuantConfig.preset(s).integer_path]


def _stage_deploy(ctx: _Context) -> dict:
    """Export the deployed variants with the runtime installed here (``bec-jax export``), reload each file and
    measure its size, latency and masked test MSE (and its ratio to the JAX dense model's on the same test
    loader); without a runtime, one line saying so."""
    from bec_jax.deploy.export import (SUFFIX, artifact_latency, available_format, evaluate_artifact,
                                       export_artifact, load_artifact)

    fmt, why = available_format()
    if fmt is None:
        return dict(format=None, note=why, files={})
    from bec_jax.compress.workflow import test_mse

    r = ctx.config.report
    x, test = np.asarray(_latency_inputs(ctx)), ctx.setup().test
    # the JAX dense model on the very inputs the files see (a lab run's camera images are drawn per loader)
    dense = test_mse(ctx.setup().model, test)["mse"]
    (ctx.out / "deploy").mkdir(exist_ok=True)
    files = {}
    for name in _deployed(ctx.config):
        rel = f"deploy/{name}{SUFFIX[fmt]}"
        info = export_artifact(ctx.out / "models" / name, fmt, ctx.out / rel, data=ctx.data)
        run = load_artifact(ctx.out / rel)
        mse = evaluate_artifact(run, test)["mse"]
        files[name] = dict(file=rel, format=fmt, precision=info["precision"], bytes=info["bytes"],
                           latency_ms=artifact_latency(run, x, repeats=r.latency_repeats)["median_ms"],
                           mse=mse, mse_ratio_vs_dense=mse / dense)
    return dict(format=fmt, note=why, files=files, latency_batch=r.latency_batch)


def _stage_report(ctx: _Context) -> dict:
    from bec_jax.pipeline.report import write_report

    return write_report(ctx.out, ctx.config, ctx.results)


def _stage_artifacts(ctx: _Context, name: str, result: dict) -> list[str]:
    """Files (relative to the run folder) a finished stage (its ``result``) leaves for the later ones. A folder
    stands in through its manifest, whose own check covers its content when it is loaded."""
    if name == "generate":
        return ["data.h5"]
    if name == "train":
        ck = ctx.train_dir / "checkpoints"
        return sorted(str(p.relative_to(ctx.out)) for p in ck.glob(f"*/{MANIFEST}"))
    if name == "prune":
        return [f"models/pruned/{MANIFEST}"]
    if name == "quantize":
        return [f"models/{v}/{MANIFEST}" for v in _variants(ctx.config) if v != "pruned"]
    if name == "deploy":  # the files this run wrote: not those of an earlier run with another runtime
        return sorted(f["file"] for f in result["files"].values())
    return []


def _forget_from(ctx: _Context, name: str) -> None:
    """Drop the records of ``name`` and every later stage before ``name`` runs: they describe what came
    from the earlier results, and a kill during the rerun must not leave them looking finished."""
    stages = ctx.out / "stages"
    later = [s for s in STAGES[STAGES.index(name):] if (stages / f"{s}.json").exists()]
    for s in later:
        (stages / f"{s}.json").unlink()
    for s in STAGES[STAGES.index(name) + 1:]:  # the time spent on them went into results now dropped
        (stages / f"{s}.elapsed").unlink(missing_ok=True)
    if later and (stages / MANIFEST).exists():
        _write_stage_manifest(stages)


def _write_stage_manifest(stages: Path) -> None:
    """The checksums of the stage records (not of the clocks of unfinished stages, which change)."""
    records = sorted(p.name for p in stages.glob("*.json") if p.name != MANIFEST)
    write_manifest(stages, "pipeline-stages", files=records)


def _finished(ctx: _Context, name: str) -> str | None:
    """None if stage ``name`` finished and what it left is intact; else why it must run again
    (its record changed, or a file it wrote is gone). A file it wrote that now has other
    content raises CorruptArtifact: nothing is overwritten that may no longer be bec_jax's."""
    stages = ctx.out / "stages"
    done = stages / f"{name}.json"
    if not done.exists():
        return "not run"
    if not (stages / MANIFEST).exists():
        return None  # a run folder written before stage checksums: its records are trusted as they were
    try:
        recorded = read_manifest(stages)["files"].get(done.name)
    except CorruptArtifact:
        recorded = None
    if recorded is None or sha256_file(done) != recorded:
        return f"stages/{done.name} was changed"
    for rel, digest in json.loads(done.read_text()).get("artifacts", {}).items():
        path = ctx.out / rel
        if not path.is_file():
            return f"{rel} is missing"
        if sha256_file(path) != digest:  # never overwritten silently: it may be the user's file now
            raise CorruptArtifact(f"{str(path)!r} was changed after the {name} stage wrote it; move it away and "
                                  "rerun to compute it again")
    return None


STAGE_FUNCTIONS = {"generate": _stage_generate, "train": _stage_train, "evaluate": _stage_evaluate,
                   "prune": _stage_prune, "quantize": _stage_quantize,
                   "evaluate_compressed": _stage_evaluate_compressed, "deploy": _stage_deploy,
                   "report": _stage_report}


def run_pipeline(config: PipelineConfig, out, *, progress: bool = True,
                 log: Callable[[str], None] | None = print) -> dict:
    """Run (or resume) every stage into the folder ``out``; returns the report dict.

    Raises RunConflict if ``out`` holds a run with another config.
    """
    log = log or (lambda s: None)
    out = prepare_run(config, out)
    ctx = _Context(config, out, progress, log)
    t_start = time.perf_counter()
    rerun = False  # once a stage runs again, every later one does (it reads what that stage wrote)
    for i, name in enumerate(STAGES, 1):
        done = out / "stages" / f"{name}.json"
        # the report is always rewritten; after a stage ran, every later one runs too
        reason = None if rerun or name == "report" else _finished(ctx, name)
        if not rerun and name != "report" and reason is None:
            (out / "stages" / f"{name}.elapsed").unlink(missing_ok=True)  # left by a kill just after the record
            ctx.results[name] = json.loads(done.read_text())
            log(f"[{i}/{len(STAGES)}] {name}: done earlier (stages/{name}.json)")
            continue
        log(f"[{i}/{len(STAGES)}] {name}" + (f": running again ({reason})" if done.exists() and reason else ""))
        rerun = True
        _forget_from(ctx, name)
        with StageClock(out / "stages" / f"{name}.elapsed") as clock:
            if clock.note:
                log(clock.note)
            result = STAGE_FUNCTIONS[name](ctx)
        result.update(stage_seconds=clock.seconds, stage_seconds_this_run=clock.this_run,
                      invocations=clock.invocations)
        result["artifacts"] = {rel: sha256_file(out / rel) for rel in _stage_artifacts(ctx, name, result)}
        ctx.results[name] = result
        _write_json(done, result)
        _write_stage_manifest(out / "stages")
        clock.finish()
    log(f"pipeline finished in {time.perf_counter() - t_start:.0f} s: {out / 'report.md'}")
    return ctx.results["report"]
