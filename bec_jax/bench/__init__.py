"""Solver throughput measured fairly: split steps, their FFT floor, NumPy baselines and ground states, each
contender in its own process, interleaved (``measure``). Used by ``bec-jax bench`` and ``benchmarks/``."""

from bec_jax.bench.measure import (GroundStateWorkload, StepWorkload, WorkerPool, fft_passes, ground_state_row,
                                   interleaved_times, numpy_imaginary_time, round_orders, step_row)

__all__ = ["StepWorkload", "GroundStateWorkload", "WorkerPool", "step_row", "ground_state_row", "fft_passes",
           "interleaved_times", "round_orders", "numpy_imaginary_time"]
