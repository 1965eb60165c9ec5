import pytest


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, small_dataset):
    """A 2-epoch width-4 depth-2 U-Net trained on the small 32² dataset: (run dir, data path)."""
    from bec_jax.models import UNetConfig
    from bec_jax.train import TrainConfig, fit

    root = tmp_path_factory.mktemp("compress_run")
    fit(small_dataset, root / "run", UNetConfig(base_width=4, depth=2, input_size=32),
        TrainConfig(epochs=2, batch_size=4), progress=False, log=None)
    return root / "run", small_dataset
