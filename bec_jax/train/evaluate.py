"""Physics-aware evaluation of a trained model's phase-gradient predictions.

Per sample: the masked MSE, the vortices of the prediction matched to the true
ones (counts, precision/recall, position errors in healing lengths), and the
fidelity of the state √n·e^{iθ_pred} whose phase θ_pred is reconstructed from
the prediction, beside two references: the same reconstruction applied to the
*true* target (the ceiling of the method) and the zero-phase guess √n; and the
fidelity of the prediction less the uniform flow that carries its momentum
(``phase_field.zero_momentum``: a ground state has none), with that flow's speed. The
phase and vortex physics itself is ``bec_jax.gpe.phase_field``.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bec_jax.data.targets import TargetConfig, make_example
from bec_jax.gpe.grid import Grid
from bec_jax.gpe.observables import RegionConfig
from bec_jax.gpe.phase_field import (fidelity, match_vortices, plaquette_winding, positions_from_winding,
                                     reconstruct_phase, to_differences, uniform_flow, vortex_mask,
                                     zero_momentum)
from bec_jax.train.losses import masked_sq_error_sums

__all__ = ["EvalConfig", "evaluate_predictions", "summarize", "evaluate_model", "evaluate_run"]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    match_radius: a predicted vortex matches a true one of the same sign within
      this distance, in healing lengths ξ = 1/√(2μ) (> 0).
    vortex_threshold: where vortices count: the blurred density above this fraction of its maximum
      (``vortex_mask``).
    vortex_sigma: σ (a⊥) of the Gaussian blur of vortex_threshold's density.
    max_vortices: most vortices per image used by the phase reconstruction
      (a static size for jit); more raise an error.
    """

    match_radius: float = 3.0
    vortex_threshold: float = RegionConfig.threshold
    vortex_sigma: float = RegionConfig.sigma
    max_vortices: int = 256

    def __post_init__(self):
        if not (self.match_radius > 0):
            raise ValueError(f"match_radius must be > 0 healing lengths, got {self.match_radius}")
        RegionConfig(self.vortex_threshold, self.vortex_sigma)  # validates them
        if self.max_vortices < 1:
            raise ValueError(f"max_vortices must be >= 1, got {self.max_vortices}")


@partial(jax.jit, static_argnames=("grid", "tcfg", "ecfg"))
def _batch_fields(grid: Grid, psi, pred, tcfg: TargetConfig, ecfg: EvalConfig):
    """Targets, masks, reconstructions and fidelities of one batch (jitted)."""
    _, y, valid = make_example(grid, psi, tcfg)
    amp = jnp.abs(psi)
    region = vortex_mask(grid, amp, ecfg.vortex_threshold, ecfg.vortex_sigma)
    d_pred = to_differences(pred, tcfg.target, grid.dx)
    d_true = to_differences(y, tcfg.target, grid.dx)
    recon = jax.vmap(partial(reconstruct_phase, max_vortices=ecfg.max_vortices))
    th_pred, w_pred = recon(d_pred, valid, region)
    th_true, _ = recon(d_true, valid, region)
    # weighted by the true density (predict weights by the image's): the same vortices, a uniform flow has no curl
    n = amp**2
    th_still, _ = recon(to_differences(zero_momentum(pred, n, tcfg.target), tcfg.target, grid.dx), valid, region)
    w_true = plaquette_winding(psi) * region
    psi_pred = amp * jnp.exp(1j * th_pred)
    psi_ceiling = amp * jnp.exp(1j * th_true)
    flow = jnp.linalg.norm(uniform_flow(pred, n, tcfg.target, grid.dx), axis=-1)
    sq = jax.vmap(masked_sq_error_sums)(pred, y, valid)
    return dict(
        target=y, valid=valid, region=region, d_true=d_true, d_pred=d_pred, theta_pred=th_pred, winding_pred=w_pred,
        winding_true=w_true,
        fidelity=fidelity(psi_pred, psi), fidelity_ceiling=fidelity(psi_ceiling, psi),
        fidelity_zero_phase=fidelity(amp.astype(psi.dtype), psi),
        fidelity_zero_momentum=fidelity(amp * jnp.exp(1j * th_still), psi), flow_speed=flow,
        sq=sq[0], n_valid=sq[1], n_pixels=sq[2],
        n_over=jnp.maximum(jnp.count_nonzero(w_pred, axis=(-2, -1)), jnp.count_nonzero(w_true, axis=(-2, -1))),
    )


def evaluate_predictions(grid: Grid, psi, pred, mu, tcfg: TargetConfig = TargetConfig(),
                         ecfg: EvalConfig = EvalConfig()) -> dict:
    """Per-sample physics metrics of one batch of predictions.

    psi: complex (B, n, n) true states; pred: float (B, n, n, 2) predicted
    targets of kind ``tcfg.target``; mu: (B,) chemical potentials (trap units;
    healing length ξ = 1/√(2μ)). Returns numpy arrays keyed by metric, one entry
    per sample, plus the fields used (for plots): target, valid, theta_pred,
    winding_pred, winding_true. Vortex counts are numbers of plaquettes with
    nonzero winding inside the cloud region. Vortices are matched at their
    sub-plaquette positions (``refine_vortices``; of the exact difference field
    for the true ones): lists vortices_true, vortices_pred of (k, 3) arrays
    (x, y, w) in trap units, and pos_err_xi of the matched distances in ξ.
    fidelity_zero_momentum: the fidelity of the prediction less its uniform flow
    (``zero_momentum``, weighted by the true |ψ|²), whose speed is flow_speed (a⊥ω⊥).
    """
    psi = jnp.asarray(psi)
    pred = jnp.asarray(pred)
    f = jax.device_get(_batch_fields(grid, psi, pred, tcfg, ecfg))
    if np.any(f["n_over"] > ecfg.max_vortices):
        raise ValueError(f"more than max_vortices={ecfg.max_vortices} vortices in an image; raise max_vortices")
    C = pred.shape[-1]
    xi = 1.0 / np.sqrt(2.0 * np.asarray(mu, float))
    rows = dict(mse=f["sq"] / (C * np.maximum(f["n_valid"], 1)), mse_ref=f["sq"] / (C * f["n_pixels"]),
                fidelity=f["fidelity"], fidelity_ceiling=f["fidelity_ceiling"],
                fidelity_zero_phase=f["fidelity_zero_phase"], fidelity_zero_momentum=f["fidelity_zero_momentum"],
                flow_speed=f["flow_speed"], sq=f["sq"], n_valid=f["n_valid"],
                n_pixels=f["n_pixels"], n_true=[], n_pred=[], matched=[], false_pos=[], false_neg=[], pos_err_xi=[],
                vortices_true=[], vortices_pred=[])
    for b in range(psi.shape[0]):
        vt = positions_from_winding(grid, f["winding_true"][b], f["d_true"][b])
        vp = positions_from_winding(grid, f["winding_pred"][b], f["d_pred"][b])
        rows["vortices_true"].append(vt)
        rows["vortices_pred"].append(vp)
        pairs, dist = match_vortices(vt, vp, ecfg.match_radius * xi[b])
        k = len(pairs)
        rows["n_true"].append(len(vt))
        rows["n_pred"].append(len(vp))
        rows["matched"].append(k)
        rows["false_pos"].append(len(vp) - k)
        rows["false_neg"].append(len(vt) - k)
        rows["pos_err_xi"].append(list(dist / xi[b]))
    ragged = ("pos_err_xi", "vortices_true", "vortices_pred")
    out = {k: (v if k in ragged else np.asarray(v)) for k, v in rows.items()}
    out.update(target=f["target"], valid=f["valid"], theta_pred=f["theta_pred"],
               winding_pred=f["winding_pred"], winding_true=f["winding_true"])
    return out


def summarize(per_sample: dict) -> dict:
    """Dataset-level numbers from concatenated per-sample metrics (JSON-able floats)."""
    n_true, n_pred = np.asarray(per_sample["n_true"]), np.asarray(per_sample["n_pred"])
    tp, fp, fn = (int(np.sum(per_sample[k])) for k in ("matched", "false_pos", "false_neg"))
    errs = np.asarray([e for row in per_sample["pos_err_xi"] for e in row], float)
    sq, valid, pix = (float(np.sum(per_sample[k])) for k in ("sq", "n_valid", "n_pixels"))
    C = 2
    return dict(
        n_samples=int(len(n_true)),
        mse=sq / (C * max(valid, 1.0)), mse_ref=sq / (C * max(pix, 1.0)),
        mse_per_sample_median=float(np.median(per_sample["mse"])),
        fidelity_mean=float(np.mean(per_sample["fidelity"])),
        fidelity_median=float(np.median(per_sample["fidelity"])),
        fidelity_min=float(np.min(per_sample["fidelity"])),
        fidelity_ceiling_mean=float(np.mean(per_sample["fidelity_ceiling"])),
        fidelity_zero_phase_mean=float(np.mean(per_sample["fidelity_zero_phase"])),
        fidelity_zero_momentum_mean=float(np.mean(per_sample["fidelity_zero_momentum"])),
        fidelity_zero_momentum_median=float(np.median(per_sample["fidelity_zero_momentum"])),
        flow_speed_median=float(np.median(per_sample["flow_speed"])),
        vortex_count_accuracy=float(np.mean(n_true == n_pred)),
        vortex_count_mae=float(np.mean(np.abs(n_true - n_pred))),
        vortices_true=int(n_true.sum()), vortices_pred=int(n_pred.sum()),
        true_positives=tp, false_positives=fp, false_negatives=fn,
        precision=tp / (tp + fp) if tp + fp else None, recall=tp / (tp + fn) if tp + fn else None,  # 0/0: none
        position_error_xi_mean=float(errs.mean()) if errs.size else None,
        position_error_xi_median=float(np.median(errs)) if errs.size else None,
        position_error_xi_max=float(errs.max()) if errs.size else None,
    )


def evaluate_model(model, grid: Grid, arrays: dict, idx, tcfg: TargetConfig, *, batch_size: int = 16,
                   ecfg: EvalConfig = EvalConfig(), progress: bool = True, keep: int = 0,
                   desc: str = "evaluate", imaging=None, seed: int = 0, ids=None) -> tuple[dict, dict]:
    """(summary, samples) of ``model`` (any U-Net-like nnx module, put in eval
    mode) on the samples ``idx`` of a dataset's ``arrays`` (from ``read_h5``).

    The shared core of ``evaluate_run`` and the pipeline's evaluation of
    compressed models. summary: ``summarize`` of the per-sample metrics;
    samples: the fields of ``keep`` samples spread evenly over ``idx``.
    ids: int (len(idx),), the samples' indices in the dataset file, where
      ``arrays`` holds only some of its rows (default idx); samples["index"].
    imaging: an enabled ``ImagingTrainConfig`` (the run trained under the imaging
    model): inputs are camera images of the states, each rendered with the key
    fold_in(key(seed), its index in the file), so that every model is scored on the same
    images (the pipeline and ``evaluate_run`` pass the run's training seed), and each is
    compared with its state as the image shows it (rotated by the image's cloud angle;
    ``imaging.training.imaged_states``). None: clean log-density inputs.
    """
    from flax import nnx
    from tqdm.auto import tqdm

    from bec_jax.train.core import make_predict

    imaged = imaging is not None and imaging.enabled
    if imaged:
        from bec_jax.imaging.training import imaged_states

        base_key = jax.random.key(seed)
    model.eval()
    # everything that is not a Param (BatchNorm statistics, int8 kernels and scales) rides along
    gd, params, batch_stats = nnx.split(model, nnx.Param, ...)
    run_predict = make_predict(gd)
    idx = np.asarray(idx)
    ids = idx if ids is None else np.asarray(ids)
    if ids.shape != idx.shape:
        raise ValueError(f"ids must match idx, got shapes {ids.shape} and {idx.shape}")
    parts, samples = [], {}
    # samples to return for plots: spread evenly over the split (groups are contiguous)
    show = set(np.unique(np.linspace(0, len(idx) - 1, keep).round().astype(int)).tolist()) if keep else set()
    for lo in tqdm(range(0, len(idx), batch_size), desc=desc, unit="batch", disable=not progress):
        sel, sel_ids = idx[lo : lo + batch_size], ids[lo : lo + batch_size]
        psi = jnp.asarray(arrays["psi"][sel])
        if imaged:
            keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(jnp.asarray(sel_ids))
            x, psi = imaged_states(grid, psi, keys, imaging, tcfg.eps)
        else:
            x, _, _ = make_example(grid, psi, tcfg)
        pred = run_predict(params, batch_stats, x.astype(jnp.float32))
        r = evaluate_predictions(grid, psi, pred, arrays["mu"][sel], tcfg, ecfg)
        parts.append({k: r[k] for k in ("mse", "mse_ref", "fidelity", "fidelity_ceiling", "fidelity_zero_phase",
                                         "fidelity_zero_momentum", "flow_speed", "sq", "n_valid", "n_pixels",
                                         "n_true", "n_pred", "matched", "false_pos", "false_neg")}
                     | dict(pos_err_xi=r["pos_err_xi"]))
        rows = [b for b in range(len(sel)) if lo + b in show]
        if rows:
            new = dict(psi=np.asarray(psi), x=np.asarray(x), pred=np.asarray(pred), target=r["target"],
                       valid=r["valid"], theta_pred=r["theta_pred"], winding_pred=r["winding_pred"],
                       winding_true=r["winding_true"], fidelity=r["fidelity"], index=sel_ids,
                       g=arrays["g"][sel], omega=arrays["omega"][sel])
            new = {k: np.asarray(v)[rows] for k, v in new.items()}
            samples = {k: (np.concatenate([samples[k], v]) if k in samples else v) for k, v in new.items()}
    per = {k: (sum((p[k] for p in parts), []) if k == "pos_err_xi" else np.concatenate([p[k] for p in parts]))
           for k in parts[0]}
    return summarize(per), samples


def _note_foreign_data(run_dir, run: dict, data, attrs: dict) -> None:
    """Warn when ``data`` is not like the run's training data: another box (the model sees its densities at
    another scale) or (g, Ω) beyond the training range (the model extrapolates)."""
    from bec_jax.train.trainer import data_ranges

    trained, length = run.get("data") or {}, float(attrs["grid_length"])
    if "grid_length" in trained and not np.isclose(trained["grid_length"], length, rtol=1e-6):
        warnings.warn(f"{str(data)!r} has a box of length {length:g} a⊥; the model was trained on "
                      f"{trained['grid_length']:g} a⊥: its densities come at another scale", stacklevel=3)
    try:
        seen = json.loads((Path(run_dir) / "metrics.json").read_text()).get("data_ranges")
    except (OSError, ValueError):
        return
    here = data_ranges(attrs)
    if not seen or not here:
        return
    for key, name in (("g_range", "g"), ("omega_range", "Ω")):
        (lo, hi), (tlo, thi) = here[key], seen[key]
        if lo < tlo - 1e-9 * abs(tlo) or hi > thi + 1e-9 * abs(thi):
            warnings.warn(f"{str(data)!r} spans {name} in [{lo:g}, {hi:g}], beyond the training data's "
                          f"[{tlo:g}, {thi:g}]: the model extrapolates there", stacklevel=3)


def evaluate_run(run_dir, *, data=None, which: str = "best", split: str = "test", batch_size: int = 16,
                 ecfg: EvalConfig = EvalConfig(), progress: bool = True, keep: int = 0, model=None) -> dict:
    """Evaluate a trained run on a dataset split.

    run_dir: folder written by ``fit`` / ``bec-jax train``. data: dataset .h5
    (default: the one the run was trained on, from its metrics.json).
    which: "best" or "latest" checkpoint. split: "test", "val", "train" (the
    run's group-wise split) or "all" (every sample; for other datasets).
    keep: number of samples, spread evenly over the split, whose fields are
      returned for plotting.
    model: a model scored in place of the run's checkpoint (a pruned, quantized
      or shrunk copy of it: ``bec-jax prune``/``quantize``/``shrink``), on the
      run's split, targets and inputs; the config then names it ``"given"``.

    Returns {"summary": dict (JSON-able), "config": dict, "samples": dict of
    numpy arrays for the first ``keep`` samples}.
    """
    from bec_jax.data.splits import split_by_group
    from bec_jax.data.storage import load_grid, read_h5
    from bec_jax.train.trainer import check_dataset_grid, load_trained, run_data_path, run_imaging, run_settings

    if split not in ("test", "val", "train", "all"):
        raise ValueError(f"split must be one of test, val, train, all; got {split!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    run_dir = Path(run_dir)
    given = model is not None
    if given:  # only the run's settings: no checkpoint to restore
        model_config, tc, run = run_settings(run_dir)
        epoch = None
    else:
        model, info = load_trained(run_dir, which)
        model_config, tc, run, epoch = info["model_config"], info["train_config"], info["run"], int(info["epoch"])
    if data is None:
        data = run_data_path(run_dir)
    if not Path(data).exists():
        raise ValueError(f"no dataset at {str(data)!r}")
    groups, attrs = read_h5(data, fields=["group"], psi=False)
    grid = load_grid(attrs)
    check_dataset_grid(data, model_config.input_size, grid.n)
    _note_foreign_data(run_dir, run, data, attrs)
    idx = (np.arange(len(groups["group"])) if split == "all"
           else split_by_group(groups["group"], tc.split, tc.split_seed)[split])
    if len(idx) == 0:
        raise ValueError(f"the {split!r} split of {str(data)!r} is empty")
    # only the split's samples are read into memory (split_by_group's indices are sorted): the states are most of
    # the file (a sharded dataset's manifest check still reads every shard)
    arrays, _ = read_h5(data, rows=None if split == "all" else idx)
    tcfg = tc.target_config
    imaging = run_imaging(run)  # a model trained on camera images is scored on camera images
    summary, samples = evaluate_model(model, grid, arrays, np.arange(len(idx)), tcfg, batch_size=batch_size,
                                      ecfg=ecfg, progress=progress, keep=keep, imaging=imaging, seed=tc.seed,
                                      ids=idx)
    config = dict(run=str(run_dir), data=str(data), split=split, checkpoint="given" if given else which,
                  epoch=epoch,
                  target=tcfg.target, mask_threshold=tcfg.mask_threshold, eval=dataclasses.asdict(ecfg),
                  grid=dict(n=grid.n, length=grid.length),
                  inputs="camera images (imaging model)" if imaging is not None and imaging.enabled else "clean")
    return dict(summary=summary, config=config, samples=samples, grid=grid)
