import pytest

from tests.train.conftest import SMALL_DATA


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A 2-epoch width-4 depth-2 U-Net trained on the small 32² dataset: (run dir, data path)."""
    from bec_jax.data import generate
    from bec_jax.models import UNetConfig
    from bec_jax.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("compress_run")
    data = root / "small.h5"
    generate(SMALL_DATA, data, progress=False)
    fit(data, root / "run", UNetConfig(base_width=4, depth=2, input_size=32), TrainConfig(epochs=2, batch_size=4),
        progress=False, log=None)
    return root / "run", data
