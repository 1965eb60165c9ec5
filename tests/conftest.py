import jax
import pytest


@pytest.fixture(params=["float32", "float64"])
def precision(request):
    """Run the test in float32/complex64 and in float64/complex128 (jax x64)."""
    with jax.enable_x64(request.param == "float64"):
        yield request.param


def tol(precision, f32, f64):
    """dtype-aware tolerance."""
    return f32 if precision == "float32" else f64
