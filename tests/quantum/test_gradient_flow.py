"""Smoke-sized versions of the gradient-flow experiments that still check behaviour."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bec_jax.quantum import Grid1D, cn_step, fidelity_loss
from bec_jax.quantum.gradient_flow import (
    METHODS,
    ControlConfig,
    PredictionConfig,
    ToyConfig,
    control_final_states,
    features_to_states,
    init_mlp,
    make_control_data,
    make_control_train_step,
    make_optimizer,
    make_prediction_data,
    method_loss,
    mlp_apply,
    mlp_param_count,
    run_control,
    run_prediction,
    run_toy,
    states_to_features,
    toy_gradient,
)


# Small configs shared across tests so jitted pieces compile once per session.
PRED = PredictionConfig(n_trajectories=10, steps=20, test_trajectories=4, batch_size=50, epochs=6)
CTRL = ControlConfig(sim_steps=10, n_initial=20, batch_size=5, epochs=10)


def test_toy_gradients_match_closed_forms():
    thetas = jnp.array([0.3, 1.2, math.pi / 2 - 0.01])
    closed = {
        "S": np.sin(2 * thetas),
        "L2": np.sin(thetas),
        "M": 2 * np.sin(thetas) * np.sign(np.cos(thetas)),
    }
    for method in METHODS:
        got = jax.jit(jax.vmap(lambda t, m=method: toy_gradient(m, t)))(thetas)
        np.testing.assert_allclose(got, closed[method], rtol=2e-5, atol=1e-7)


def test_toy_modified_gradient_escapes_orthogonal_start_faster():
    res = run_toy(ToyConfig(theta0=math.pi / 2 - 0.01, lr=0.1, steps=60))
    loss = res.loss
    for m in METHODS:
        assert loss[m].shape == (61,)
        assert loss[m][0] == pytest.approx(np.sin(math.pi / 2 - 0.01) ** 2, rel=1e-6)
        np.testing.assert_allclose(np.linalg.norm(res.xy[m], axis=1), 1.0, rtol=1e-6)
    # S is stuck on the plateau (gradient ~ 2 * 0.01), M and L2 are not.
    assert loss["S"][5] > 0.99
    assert loss["M"][5] < 0.5
    assert loss["L2"][5] < 0.9
    # M = 2 x L2 gradient here, so it is ahead of L2; both ahead of S for a long time.
    assert np.all(loss["M"][1:15] < loss["L2"][1:15])
    assert np.all(loss["L2"][1:15] < loss["S"][1:15])
    first = {m: int(np.flatnonzero(loss[m] < 1e-2)[0]) for m in METHODS}  # all converge
    assert first["M"] < first["L2"] and first["M"] < first["S"], first
    assert loss["S"][-1] < 1e-3 and loss["M"][-1] < 1e-6  # S escapes eventually


def test_network_helpers():
    assert mlp_param_count(PredictionConfig().sizes) == 9384
    assert mlp_param_count(ControlConfig().sizes) == 10034
    params = init_mlp(jax.random.PRNGKey(0), (4, 8, 3))
    assert sum(p.size for layer in params for p in layer.values()) == mlp_param_count((4, 8, 3))
    assert mlp_apply(params, jnp.ones((5, 4))).shape == (5, 3)
    psi = jnp.array([[1 + 2j, 3 - 1j]], jnp.complex64)
    f = states_to_features(psi)
    assert f.shape == (1, 4) and f.dtype == jnp.float32
    np.testing.assert_array_equal(features_to_states(f), psi)


def test_prediction_pairs_are_simulator_steps():
    x, y = map(np.asarray, make_prediction_data(PRED))
    assert x.shape == y.shape == (200, PRED.grid.n)
    np.testing.assert_allclose(cn_step(PRED.grid, x, 0.0, PRED.dt), y, atol=1e-6)
    # consecutive pairs chain: the target of one step is the input of the next
    np.testing.assert_array_equal(x.reshape(20, 10, -1)[1:], y.reshape(20, 10, -1)[:-1])


def test_prediction_training_reduces_quantum_loss_and_vmaps_seeds():
    res = run_prediction(PRED, "M", seeds=(0, 1))
    assert res.eval_loss.shape == (2, 7) and res.train_loss.shape == (2, 6)
    assert res.test_loss.shape == (2, 7)
    # 24 Adam steps on 200 pairs: every seed improves clearly, the best one ~10x
    assert np.all(res.eval_loss[:, -1] < 0.6 * res.eval_loss[:, 0]), res.eval_loss
    assert np.all(res.test_loss[:, -1] < 0.6 * res.test_loss[:, 0]), res.test_loss
    assert np.min(res.eval_loss[:, -1]) < 0.15, res.eval_loss
    assert not np.allclose(res.eval_loss[0], res.eval_loss[1])  # seeds differ


@pytest.mark.slow
def test_vmapped_seeds_train_independently():
    cfg = PredictionConfig(n_trajectories=10, steps=20, test_trajectories=0, batch_size=50, epochs=3)
    both = run_prediction(cfg, "S", seeds=(0, 1))
    alone = run_prediction(cfg, "S", seeds=(1,))
    np.testing.assert_allclose(alone.eval_loss[0], both.eval_loss[1], rtol=1e-4)


def test_modified_gradient_through_simulator_reweights_samples(exact_matmul):
    """End to end through network + 10 CN steps: grad_M = mean_i grad L_i / sqrt(1 - L_i)."""
    cfg = CTRL
    psi0, target = make_control_data(cfg)
    params = init_mlp(jax.random.PRNGKey(0), cfg.sizes)

    def per_sample(p, modified):
        psi_t = control_final_states(cfg, p, psi0)
        return fidelity_loss(psi_t, target, modified=modified, reduction="none")

    losses = per_sample(params, False)
    g_m = jax.jit(jax.grad(lambda p: jnp.mean(per_sample(p, True))))(params)
    rows = jax.jit(jax.jacrev(lambda p: per_sample(p, False)))(params)  # (20, ...) per leaf
    losses = np.asarray(losses, np.float64)
    w = 1.0 / np.sqrt(1.0 - losses) / losses.shape[0]
    expected = jax.tree.map(lambda r: np.tensordot(w, np.asarray(r, np.float64), axes=1), rows)
    for a, b in zip(jax.tree.leaves(g_m), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    assert float(np.max(losses) - np.min(losses)) > 0.1  # the reweighting is not trivial


def test_control_train_step_is_one_graph():
    psi0, target = make_control_data(CTRL)
    init, step = make_control_train_step(CTRL, "M", target)
    params, opt = init(jax.random.PRNGKey(0))
    psi0 = psi0[: CTRL.batch_size]
    # network, simulator (tridiagonal solves in a scan), loss and Adam trace into one jaxpr
    jaxpr = jax.make_jaxpr(step)(params, opt, psi0)
    text = str(jaxpr)
    assert "tridiagonal_solve" in text and "scan" in text and "dot_general" in text
    new_params, _, loss = jax.eval_shape(step, params, opt, psi0)
    assert loss.shape == () and jax.tree.structure(new_params) == jax.tree.structure(params)


def test_run_control_smoke_trains_l2_and_scores_with_quantum_loss():
    r = run_control(CTRL, "L2", seeds=(0,), chunk=10)
    assert r.eval_loss.shape == (1, 11) and r.train_loss.shape == (1, 10) and r.test_loss is None
    assert np.all((r.eval_loss >= 0) & (r.eval_loss <= 1))
    assert r.eval_loss[0, -1] < r.eval_loss[0, 0], r.eval_loss
    # the L2 training loss (1 - Re overlap) is not the quantum loss it is scored by
    assert not np.allclose(r.train_loss[0], r.eval_loss[0, 1:], rtol=0.05)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ToyConfig(lr=0.0), "lr must be"),
        (lambda: ToyConfig(steps=0), "steps must be an integer >= 1"),
        (lambda: PredictionConfig(dt=-0.2), "dt must be"),
        (lambda: PredictionConfig(n_modes=21), r"n_modes must be in \[1, 20\]"),
        (lambda: ControlConfig(batch_size=0), "batch_size must be an integer >= 1"),
        (lambda: ControlConfig(grid=Grid1D(n=2)), "n must be an integer >= 3"),
        (lambda: run_control(ControlConfig(n_initial=5, batch_size=10, epochs=1), "S", (0,)),
         "batch_size=10 exceeds"),
        (lambda: toy_gradient("X", 0.1), "method must be one of"),
        (lambda: init_mlp(jax.random.PRNGKey(0), (3,)), "sizes must be"),
    ],
)
def test_bad_config_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
def test_paper_sized_control_all_methods_learn():
    """Paper sizes, 60 epochs: every method roughly halves the quantum loss."""
    cfg = ControlConfig(epochs=60)
    for m in METHODS:
        r = run_control(cfg, m, seeds=(0, 1), chunk=20)
        assert np.all(r.eval_loss[:, -1] < 0.6 * r.eval_loss[:, 0]), (m, r.eval_loss[:, -1])


@pytest.mark.slow
def test_paper_sized_prediction_all_methods_learn():
    cfg = PredictionConfig(epochs=5)
    for m in METHODS:
        r = run_prediction(cfg, m, seeds=(0,), chunk=5)
        assert r.eval_loss[0, -1] < 0.02, (m, r.eval_loss)


REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "gradient_flow.py"


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--seeds", "0"], "--seeds: expected an integer >= 1, got 0"),
        (["--tasks", "toy,foo"], "--tasks: tasks must be a comma list"),
        (["--n-modes", "21"], "--n-modes must be in [1, 20]"),
        (["--control-epochs", "x"], "--control-epochs: expected an integer >= 1, got 'x'"),
    ],
)
def test_experiment_cli_rejects_bad_arguments(argv, match, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv, "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gradient_flow.py: error:") and match in last, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_experiment_cli_quick_run_writes_outputs(tmp_path):
    out = tmp_path / "gf"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--seeds", "2", "--prediction-epochs", "2",
         "--control-epochs", "3", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("toy.png", "prediction.png", "control.png", "results.json", "results.md"):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == [0, 1]
    assert len(res["control"]["curves"]["M"][0]) == 4
    assert res["toy"]["steps_to_1e-2"]["M"] < res["toy"]["steps_to_1e-2"]["S"]
    md = (out / "results.md").read_text()
    assert "| M |" in md and "±" in md
    assert not (out / "units").exists()  # the saved units go once the results are written
    replot = subprocess.run([sys.executable, str(SCRIPT), "--replot", "--smooth", "2", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert replot.returncode == 0 and (out / "results.md").read_text() == md, replot.stderr


# ------------------------------------------------------------------ ablation options


def test_batch_reduction_rescales_the_standard_gradient_globally(exact_matmul):
    """M-batch: value = mean L, gradient = grad(mean L) / sqrt(1 - mean L) (one factor)."""
    x, y = make_prediction_data(PRED)
    x, y = x[:30], y[:30]
    params = init_mlp(jax.random.PRNGKey(3), PRED.sizes)

    def grads(method, reduction):
        loss = method_loss(method, reduction)
        return jax.value_and_grad(
            lambda p: loss(features_to_states(mlp_apply(p, states_to_features(x))), y))(params)

    value_s, g_s = grads("S", "sample")
    value_b, g_b = grads("M", "batch")
    _, g_m = grads("M", "sample")
    assert float(value_b) == pytest.approx(float(value_s), rel=1e-6)
    scale = 1.0 / math.sqrt(1.0 - float(value_s))
    assert scale > 1.05  # the factor is not trivially 1 at initialisation
    for a, b in zip(jax.tree.leaves(g_b), jax.tree.leaves(g_s)):
        np.testing.assert_allclose(a, scale * np.asarray(b), rtol=1e-4, atol=1e-7)
    # the per-sample M gradient is not a multiple of S's: the samples are reweighted
    flat = lambda g: np.concatenate([np.ravel(v) for v in jax.tree.leaves(g)])  # noqa: E731
    cos = flat(g_m) @ flat(g_s) / (np.linalg.norm(flat(g_m)) * np.linalg.norm(flat(g_s)))
    assert cos < 0.999, cos


def test_make_optimizer_matches_optax_and_carries_its_rate_in_the_state():
    import optax

    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = {"w": jnp.array([0.3, -0.1, 0.2])}
    pairs = (("adam", optax.adam(0.01)), ("sgd", optax.sgd(0.01)),
             ("momentum", optax.sgd(0.01, momentum=0.9)))
    for name, ref in pairs:
        tx = make_optimizer(name, 0.01)
        st, rst = tx.init(params), ref.init(params)
        for _ in range(3):
            u, st = tx.update(grads, st, params)
            ru, rst = ref.update(grads, rst, params)
            np.testing.assert_allclose(u["w"], ru["w"], rtol=1e-5)  # float32 hyperparameters
        # a state initialised with another rate steps with that rate
        u2, _ = make_optimizer(name, 0.01).update(grads, make_optimizer(name, 0.03).init(params))
        u1, _ = tx.update(grads, tx.init(params))
        np.testing.assert_allclose(u2["w"], 3 * np.asarray(u1["w"]), rtol=1e-5)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("rmsprop", 0.1)


def test_per_run_learning_rates_match_separate_runs():
    cfg = PredictionConfig(n_trajectories=10, steps=20, test_trajectories=0, batch_size=50,
                           epochs=2, optimizer="sgd")
    both = run_prediction(cfg, "S", seeds=(0, 0), lrs=(0.1, 1.0))
    alone = run_prediction(PredictionConfig(**{**cfg.__dict__, "lr": 1.0}), "S", seeds=(0,))
    np.testing.assert_allclose(both.eval_loss[1], alone.eval_loss[0], rtol=2e-4)
    assert not np.allclose(both.eval_loss[0], both.eval_loss[1])
    np.testing.assert_array_equal(both.lrs, [0.1, 1.0])
    assert jax.tree.leaves(both.params)[0].shape[0] == 2
    with pytest.raises(ValueError, match="one rate per seed"):
        run_prediction(cfg, "S", seeds=(0, 1), lrs=(0.1,))


def test_float64_control_runs_in_double_precision():
    cfg = ControlConfig(sim_steps=4, n_initial=10, batch_size=5, epochs=2, dtype="float64")
    r = run_control(cfg, "M", seeds=(0,), chunk=2)
    assert all(leaf.dtype == np.float64 for leaf in jax.tree.leaves(r.params))
    assert r.eval_loss[0, -1] < r.eval_loss[0, 0]
    with jax.enable_x64(True):
        psi0, target = make_control_data(cfg)
        assert psi0.dtype == jnp.complex128 and target.dtype == jnp.complex128


def test_time_summed_loss_is_the_averaged_loss_times_steps_and_box_target():
    from bec_jax.quantum.gradient_flow import _control_loss
    from bec_jax.quantum.schrodinger1d import box_eigenstate

    base = dict(sim_steps=6, n_initial=10, batch_size=5, target_mode=3)
    cfgs = {t: ControlConfig(**base, time_loss=t) for t in ("sum", "mean", "final")}
    psi0, target = make_control_data(cfgs["sum"])
    np.testing.assert_allclose(target, box_eigenstate(cfgs["sum"].grid, 3), atol=1e-6)
    params = init_mlp(jax.random.PRNGKey(0), cfgs["sum"].sizes)
    vals = {t: float(_control_loss(c, "S", target)(params, psi0)) for t, c in cfgs.items()}
    assert vals["sum"] == pytest.approx(6 * vals["mean"], rel=1e-5)
    # the mean runs over the 6 simulator states after psi0, each a CN step of the last
    cfg = cfgs["mean"]
    u = mlp_apply(params, states_to_features(psi0))
    psi, per_step = psi0, []
    for k in range(6):
        psi = cn_step(cfg.grid, psi, u[:, k : k + 1] * cfg.grid.x(), cfg.dt)
        per_step.append(float(fidelity_loss(psi, target)))
    assert vals["mean"] == pytest.approx(np.mean(per_step), rel=1e-5)
    assert np.ptp(per_step) > 1e-3  # the states differ, so the check is not trivial
    final = fidelity_loss(control_final_states(cfgs["final"], params, psi0), target)
    assert vals["final"] == pytest.approx(float(final), rel=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: PredictionConfig(optimizer="rmsprop"), "optimizer must be one of"),
        (lambda: PredictionConfig(reduction="sum"), "reduction must be one of"),
        (lambda: ControlConfig(dtype="float16"), "dtype must be one of"),
        (lambda: ControlConfig(time_loss="max"), "time_loss must be one of"),
        (lambda: ControlConfig(target_mode=21), r"target_mode must be an integer in \[0, 20\]"),
        (lambda: method_loss("M", "total"), "reduction must be one of"),
    ],
)
def test_bad_ablation_options_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


ABLATION = REPO / "experiments" / "gradient_flow_ablation.py"


@pytest.mark.slow
def test_ablation_quick_run_writes_results_and_resumes(tmp_path):
    out = tmp_path / "gfa"
    argv = [sys.executable, str(ABLATION), "--quick", "--groups", "dtype", "--out", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    files = sorted((out / "runs").glob("*.json"))
    assert len(files) == 4, files  # S and M, prediction and control
    rec = json.loads(files[0].read_text())
    assert set(rec["weights"]) >= {"w_max_over_min", "w_cv", "L_p90"}
    assert np.all(np.asarray(rec["weights"]["w_max_over_min"]) >= 1.0)
    assert len(rec["curves"][0]) == 3  # initial + 2 epochs
    summary = json.loads((out / "results.json").read_text())
    assert "S_over_M_best" in summary["table"]["dtype"]["control"]["float64"]
    assert "| float64 |" in (out / "results.md").read_text()
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done before, skipped") == 4
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
