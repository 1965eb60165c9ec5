"""Sensitivity map ∂n/∂Ω (and ∂n/∂g) of a rotating ground state, from the implicit derivative.

The ground state at (g, Ω) (multi-start ``bj.ground_state``, float64) is differentiated in forward mode
(``implicit.state_tangent``: one CG solve gives ∂ψ/∂Ω on every pixel, where reverse mode would need one
backward pass per pixel); ∂n/∂Ω = 2 Re(ψ̄ ∂ψ/∂Ω). The lattice's orientation is a zero mode (any rotated
lattice is a ground state too) and gets no response: the map is the change of the lattice at fixed
orientation. Checked against central finite differences of states re-solved at Ω ± h from ψ, each turned
back to ψ's orientation first (a re-solve drifts along that zero mode; ``_align``), as the relative L2
difference of the maps and of their radial profiles (azimuthal averages, which no orientation changes).

    python experiments/sensitivity_map.py      # g = 100, Ω = 0.8 (7 vortices), n = 96; ~30 s on 2 cores
    python experiments/sensitivity_map.py --n 64 --out experiments/results/sensitivity_map/n64

On 64² this lattice's orientation is pinned by the grid in a way that moves with Ω (the re-solves turn by
∓1.8e-4 rad), a response the implicit derivative, taken at fixed orientation, leaves out; on 96² they do not
turn (1e-10 rad), which is why 96² is the default.

Writes experiments/results/sensitivity_map/{sensitivity_map.png,sensitivity_map.json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import bec_jax as bj  # noqa: E402
from bec_jax.gpe import implicit  # noqa: E402

TIGHT = dict(tol_residual=1e-10, tol_energy=1e-14, max_iter=6000)


def _align(grid, psi, state, tol: float = 1e-14, max_turns: int = 20):
    """``state`` turned back onto ``psi``'s orientation, and the angle it had turned (rad).

    A re-solve started from ψ drifts along the rotation zero mode (the grid pins the lattice only weakly),
    by ~1e-4 rad, which a finite difference over 2h = 2e-4 would turn into an O(1) error. The implicit
    derivative has no component along the rotation direction d/dθ rotate(ψ, θ) = −iL_zψ, so the angle is the
    coefficient of ``state`` − ψ along it (least squares together with ψ and iψ, which norm and global phase
    absorb), removed with the spectral rotation ``imaging.expansion.rotate`` until it is below ``tol``.
    """
    from bec_jax.imaging.expansion import rotate

    directions = [psi, 1j * psi, 1j * implicit.minus_lz(grid, psi)]
    basis = np.stack([np.concatenate([np.ravel(np.real(d)), np.ravel(np.imag(d))]) for d in directions], 1)
    total = 0.0
    for _ in range(max_turns):
        diff = np.asarray(rotate(grid, state, -total) - psi)
        coef = np.linalg.lstsq(basis, np.concatenate([diff.real.ravel(), diff.imag.ravel()]), rcond=None)[0]
        total += float(coef[2])
        if abs(coef[2]) < tol:
            break
    return rotate(grid, state, -total), total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--g", type=float, default=100.0)
    p.add_argument("--omega", type=float, default=0.8)
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--h", type=float, default=1e-4, help="finite-difference step in Ω")
    p.add_argument("--out", default="experiments/results/sensitivity_map")
    args = p.parse_args(argv)
    if not abs(args.omega) < 1 or not 0 <= args.g < float("inf") or args.n < 8 or not 0 < args.h < 0.1:
        p.error(f"need |omega| < 1, 0 <= g < inf, n >= 8 and 0 < h < 0.1, got omega={args.omega}, g={args.g}, "
                f"n={args.n}, h={args.h}")

    t0 = time.perf_counter()
    grid = bj.Grid(args.n, float(bj.box_length(args.g, args.omega)))
    res = bj.ground_state(grid, args.g, args.omega, key=jax.random.key(0), **TIGHT)
    psi = res.psi
    tight = implicit.AdjointSettings(iters=600, tol=1e-10)
    dpsi_om, info_om = implicit.state_tangent(grid, psi, args.g, args.omega, 0.0, 1.0, adjoint=tight)
    dpsi_g, info_g = implicit.state_tangent(grid, psi, args.g, args.omega, 1.0, 0.0, adjoint=tight)
    dn_om = np.asarray(2 * jnp.real(jnp.conj(psi) * dpsi_om))
    dn_g = np.asarray(2 * jnp.real(jnp.conj(psi) * dpsi_g))
    n = np.asarray(bj.density(psi))

    def resolved(om):
        """Density of the state re-solved at ``om`` from ψ, turned back to ψ's orientation, and the angle (rad)
        by which the re-solve had turned."""
        state = bj.ground_state(grid, args.g, om, key=jax.random.key(0), psi0=psi, warmup_steps=0, **TIGHT).psi
        state, angle = _align(grid, psi, state)
        return np.asarray(bj.density(state)), angle

    # How the cores move: d|z_v|/dΩ by pushing ∂ψ/∂Ω through the sub-pixel core finder (forward mode).
    cores0 = jnp.asarray(bj.vortex_positions(grid, psi)[:, :2])
    radius = lambda p: jnp.linalg.norm(bj.gpe.observables.vortex_cores(grid, p, cores0), axis=1)
    r_cores, dr_cores = jax.jvp(radius, (psi,), (dpsi_om,))
    (n_plus, turn_plus), (n_minus, turn_minus) = resolved(args.omega + args.h), resolved(args.omega - args.h)
    fd = (n_plus - n_minus) / (2 * args.h)
    rel_l2 = float(np.linalg.norm(dn_om - fd) / np.linalg.norm(fd))
    # azimuthal averages over rings one cell wide: blind to the lattice's orientation, whichever it is
    X, Y = (np.asarray(a) for a in grid.mesh())
    ring = np.minimum((np.hypot(X, Y) / grid.dx).astype(int), grid.n // 2).ravel()
    profile = lambda f: np.bincount(ring, f.ravel()) / np.maximum(np.bincount(ring), 1)
    rel_l2_radial = float(np.linalg.norm(profile(dn_om) - profile(fd)) / np.linalg.norm(profile(fd)))

    ext = [-grid.length / 2, grid.length / 2, -grid.length / 2, grid.length / 2]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
    panels = [(n, "density $n = |\\psi|^2$", "viridis", None, "$n$ ($a_\\perp^{-2}$)"),
              (dn_om, "$\\partial n/\\partial\\Omega$", "RdBu_r", "sym", "per $\\omega_\\perp$ ($a_\\perp^{-2}$)"),
              (dn_g, "$\\partial n/\\partial g$", "RdBu_r", "sym", "per unit $g$ ($a_\\perp^{-2}$)")]
    for ax, (img, title, cmap, sym, label) in zip(axes, panels):
        lim = np.max(np.abs(img)) if sym else None
        im = ax.imshow(img, origin="lower", extent=ext, cmap=cmap, vmin=-lim if sym else None, vmax=lim)
        ax.set_title(title)
        ax.set_xlabel("x ($a_\\perp$)")
        ax.set_ylabel("y ($a_\\perp$)")
        fig.colorbar(im, ax=ax, shrink=0.85, label=label)
    fig.suptitle(f"g = {args.g:g}, Ω = {args.omega:g}: {int(res.vortices)} vortices; implicit derivative of the "
                 f"ground state (finite differences agree to {rel_l2:.1e} in L2, radial profiles to "
                 f"{rel_l2_radial:.1e})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "sensitivity_map.png", dpi=110)
    r2 = (np.asarray(grid.mesh()[0]) ** 2 + np.asarray(grid.mesh()[1]) ** 2)
    summary = dict(
        g=args.g, omega=args.omega, n=args.n, length=grid.length, vortices=int(res.vortices),
        converged=bool(res.converged), residual=float(res.residual),
        cg_iterations=dict(omega=int(info_om["iterations"]), g=int(info_g["iterations"])),
        max_abs_dn_domega=float(np.max(np.abs(dn_om))), max_abs_dn_dg=float(np.max(np.abs(dn_g))),
        integral_dn_domega=float(dn_om.sum() * grid.cell_area),
        d_r2_domega=float((r2 * dn_om).sum() * grid.cell_area),
        d_r2_domega_fd=float((r2 * fd).sum() * grid.cell_area),
        core_radii=np.round(np.asarray(r_cores), 4).tolist(),
        d_core_radius_domega=np.round(np.asarray(dr_cores), 4).tolist(),
        fd_step=args.h, rel_l2_vs_fd=rel_l2, rel_l2_vs_fd_radial_profile=rel_l2_radial,
        fd_orientation_turn_rad=[turn_plus, turn_minus],
        wall_s=time.perf_counter() - t0,
    )
    (out / "sensitivity_map.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
