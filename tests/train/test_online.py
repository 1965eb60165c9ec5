"""Online training: solver + update in one jitted step on a tiny grid."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bec_jax.gpe import PCG, Grid, energy, residual
from bec_jax.gpe.hamiltonian import norm
from bec_jax.models import UNetConfig, init_model
from bec_jax.train import (
    OnlineConfig,
    init_online_state,
    init_state,
    make_online_step,
    masked_mse,
    sample_parameters,
    sample_states,
)

ROOT = Path(__file__).resolve().parents[2]

GRID = Grid(n=16, length=10.0)
# Small budget: the solver part of the step compiles and runs in seconds on 2 cores.
CFG = OnlineConfig(batch_size=4, g_range=(10.0, 30.0), omega_range=(0.2, 0.5), n_starts=1,
                   solver=PCG(warmup_steps=20, max_iter=60, tol_residual=1e-4, tol_energy=1e-7))


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_sample_states_are_normalised_relaxed_and_in_range():
    psi, info = jax.jit(lambda k: sample_states(GRID, k, CFG))(jax.random.key(0))
    assert psi.shape == (4, 16, 16) and jnp.iscomplexobj(psi)
    np.testing.assert_allclose(norm(GRID, psi), 1.0, rtol=1e-4)
    g, om = np.asarray(info["g"]), np.asarray(info["omega"])
    assert np.all((g >= 10) & (g <= 30)) and np.all((om >= 0.2) & (om <= 0.5))
    # the solver lowered the residual well below that of a random guess and reports it truthfully
    r = np.asarray(residual(GRID, psi, info["g"], info["omega"]))
    np.testing.assert_allclose(r, info["residual"], rtol=0.05, atol=1e-5)
    assert np.all(r < 0.05)
    np.testing.assert_allclose(energy(GRID, psi, info["g"], info["omega"]), info["energy"], rtol=1e-4)


def test_parameters_depend_on_the_key():
    a = sample_parameters(jax.random.key(0), CFG)
    b = sample_parameters(jax.random.key(1), CFG)
    assert not np.allclose(a[0], b[0])


@pytest.mark.slow  # integration test over ~15 s on 2 cores: `make test-slow`
def test_online_step_compiles_once_advances_the_key_and_reduces_loss():
    traces = []

    def loss(pred, batch):
        traces.append(1)  # Python side effect: runs only while tracing
        return masked_mse(pred, batch.y, batch.mask)

    model = init_model(UNetConfig(base_width=4, depth=2, input_size=16), 0)
    tx = optax.adam(1e-2)
    gd_train, _, state = init_state(model, tx)
    step = make_online_step(GRID, gd_train, tx, loss, CFG)
    state = init_online_state(state, jax.random.key(0))
    losses, keys = [], []
    for _ in range(25):
        state, m = step(state)
        keys.append(np.asarray(jax.random.key_data(state[1])))
        losses.append(float(m["loss"]))
        assert 0.0 <= float(m["converged_fraction"]) <= 1.0
    assert len(traces) == 1
    assert len({k.tobytes() for k in keys}) == len(keys)  # fresh solver key (fresh states) every step
    assert np.all(np.isfinite(losses))
    # fresh samples every step: compare averages, not single batches
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(n_starts=0), "n_starts must be an integer >= 1, got 0"),
    (dict(g_range=(10.0, 5.0)), r"g_range must be \(g_min, g_max\) with 0 <= g_min <= g_max < inf, got \(10.0, 5.0\)"),
    (dict(g_range=(-1.0, 5.0)), "g_range must be"),
    (dict(omega_range=(0.5, 1.0)), r"omega_range must be \(lo, hi\) with -1 < lo <= hi < 1, got \(0.5, 1.0\)"),
    (dict(solver="pcg"), "solver must be a PCG"),
    (dict(target="phase"), "target must be one of"),
    (dict(mask_threshold=1.0), "mask_threshold must be in"),
])
def test_online_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OnlineConfig(**kwargs)


def test_make_online_step_rejects_bad_arguments():
    model = init_model(UNetConfig(base_width=4, depth=2, input_size=16), 0)
    tx = optax.adam(1e-3)
    gd_train, _, _ = init_state(model, tx)
    with pytest.raises(ValueError, match="grid must be a bec_jax Grid, got int"):
        make_online_step(16, gd_train, tx, masked_mse, CFG)
    with pytest.raises(ValueError, match="config must be an OnlineConfig, got dict"):
        make_online_step(GRID, gd_train, tx, masked_mse, {})


@pytest.mark.slow  # ~40 s on 2 cores
def test_quick_online_study_writes_report(tmp_path):
    """experiments/online_training.py end to end (its report holds the in-step solver's settings)."""
    cmd = [sys.executable, str(ROOT / "experiments" / "online_training.py"), "--quick", "--n", "16", "--batch-size",
           "8", "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "online_training.json").read_text())
    assert report["online_config"]["solver"]["max_iter"] == 300 and report["online_config"]["batch_size"] == 8
    assert set(report["results"]) == {"online", "fixed N=16", "fixed N=32"}
    assert all(np.isfinite(r["final_test_mse"]) for r in report["results"].values())
    assert (tmp_path / "online_training.png").stat().st_size > 10_000
