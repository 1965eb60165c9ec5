import jax.numpy as jnp
import numpy as np
import pytest

import bec_jax as bj
import bec_jax.data as bd

GRID = bj.Grid(32, 10.0)


def vortex_field(x0=0.6, y0=-0.3, core=0.2):
    X, Y = (jnp.asarray(a) for a in GRID.mesh())
    z = (X - x0) + 1j * (Y - y0)
    return (z / jnp.sqrt(jnp.abs(z) ** 2 + core) * jnp.exp(-(X**2 + Y**2) / 3)).astype(jnp.complex64)


def test_phase_differences_plane_wave_and_wrapping():
    X, Y = GRID.mesh()
    k = 2 * np.pi / GRID.length * 5
    psi = jnp.asarray(np.exp(1j * k * X), jnp.complex64)
    d = bd.phase_differences(psi)
    assert d.shape == (32, 32, 2)
    np.testing.assert_allclose(d[..., 0], k * GRID.dx, atol=1e-5)  # radians per pixel, not divided by dx
    np.testing.assert_allclose(d[..., 1], 0, atol=1e-5)
    # Wrapped: a phase step of 3π/2 per pixel reads as -π/2.
    psi = jnp.asarray(np.exp(1j * 1.5 * np.pi * np.arange(32))[None, :].repeat(32, 0), jnp.complex64)
    np.testing.assert_allclose(bd.phase_differences(psi)[:, :-1, 0], -np.pi / 2, atol=1e-5)


def test_make_example_layout_and_mask():
    psi = vortex_field()
    x, y, m = bd.make_example(GRID, psi, bd.TargetConfig(target="velocity", mask_threshold=0.05))
    assert x.shape == (32, 32, 1) and y.shape == (32, 32, 2) and m.shape == (32, 32) and m.dtype == bool
    np.testing.assert_allclose(x[..., 0], np.log(np.abs(psi) ** 2 + 1e-9), rtol=1e-5)
    rho = np.abs(np.asarray(psi)) ** 2
    np.testing.assert_array_equal(m, rho >= 0.05 * rho.max())
    np.testing.assert_allclose(y, np.moveaxis(np.asarray(bj.phase_gradient(GRID, psi)), 0, -1), rtol=1e-6)


def test_rotate90_is_counter_clockwise_and_rotates_the_vector_field():
    X, Y = GRID.mesh()
    blob = jnp.asarray(np.exp(-((X - 3) ** 2 + Y**2)), jnp.complex64)  # at +x
    r = np.abs(np.asarray(bd.rotate90(blob, 1)))
    j, i = np.unravel_index(np.argmax(r), r.shape)
    assert GRID.x[j] > 2 and abs(GRID.x[i]) < 1  # now at +y
    psi = vortex_field(core=1.0)  # smooth: negligible Nyquist content
    v = np.asarray(bd.velocity(GRID, psi))
    v_rot = np.asarray(bd.velocity(GRID, bd.rotate90(psi, 1)))
    expected = np.stack([-np.rot90(v[..., 1], 1, axes=(1, 0)), np.rot90(v[..., 0], 1, axes=(1, 0))], -1)
    # Inside the cloud (outside, the ratio Im(ψ*∇ψ)/|ψ|² amplifies the Nyquist
    # mode, whose spectral derivative is not reflection-symmetric).
    m = np.asarray(bd.valid_mask(bd.rotate90(psi, 1)))
    np.testing.assert_allclose(v_rot[m], expected[m], atol=1e-3)
    # Rotations keep the vortex counter-clockwise (a mirror would not).
    assert int(bj.plaquette_winding(bd.rotate90(psi, 3)).sum()) == int(bj.plaquette_winding(psi).sum())


def test_target_config_validation():
    with pytest.raises(ValueError, match="target"):
        bd.TargetConfig(target="phase")
    with pytest.raises(ValueError, match="mask_threshold"):
        bd.TargetConfig(mask_threshold=1.5)


def test_split_by_group_is_disjoint_and_complete():
    groups = np.repeat(np.arange(20), 4)
    s = bd.split_by_group(groups, seed=3)
    sets = [set(groups[s[k]]) for k in ("train", "val", "test")]
    assert all(not (a & b) for a, b in [(sets[0], sets[1]), (sets[0], sets[2]), (sets[1], sets[2])])
    assert sorted(np.concatenate(list(s.values()))) == list(range(80))
    assert [len(x) for x in sets] == [12, 4, 4]
    with pytest.raises(ValueError, match="fractions"):
        bd.split_by_group(groups, (0.5, 0.2, 0.2))


def test_loader_batches_are_deterministic_per_epoch():
    psi = np.stack([np.asarray(bd.rotate90(vortex_field(0.1 * i), i % 4)) for i in range(10)])
    ld = bd.BatchLoader(GRID, psi, 4, shuffle=True, augment=True, seed=1)
    assert len(ld) == 3
    e0 = [b.x for b in ld.epoch(0)]
    assert [b.shape for b in e0] == [(4, 32, 32, 1)] * 2 + [(2, 32, 32, 1)]
    np.testing.assert_array_equal(np.concatenate(e0), np.concatenate([b.x for b in ld.epoch(0)]))
    assert not np.array_equal(np.concatenate(e0), np.concatenate([b.x for b in ld.epoch(1)]))
    assert len(bd.BatchLoader(GRID, psi, 4, drop_last=True)) == 2
    with pytest.raises(ValueError, match="shape"):
        bd.BatchLoader(GRID, psi[:, :16], 4)
