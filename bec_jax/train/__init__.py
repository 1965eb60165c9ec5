"""Training and evaluation of the U-Net: losses, optax optimizers, orbax checkpoints,
resumable fit loop, physics-aware evaluation and figures."""

from bec_jax.train.checkpoint import CheckpointMismatch, Checkpoints, read_run_metadata
from bec_jax.train.losses import LOSSES, loss_fn, masked_mse, masked_sq_error_sums, reference_masked_mse
from bec_jax.train.trainer import (
    OPTIMIZERS,
    FitResult,
    TrainConfig,
    evaluate_loader,
    fit,
    init_state,
    load_dataset,
    load_trained,
    make_optimizer,
    make_predict,
    make_train_step,
    make_update,
    make_loss,
    TRAIN_LOSSES,
)
from bec_jax.train.physics_informed import (
    PhysicsConfig,
    integrate_phase,
    physics_informed_loss,
    physics_terms,
    state_from_differences,
)
from bec_jax.train.online import OnlineConfig, init_online_state, make_online_step, sample_parameters, sample_states

__all__ = [
    "CheckpointMismatch", "Checkpoints", "read_run_metadata",
    "LOSSES", "loss_fn", "masked_mse", "masked_sq_error_sums", "reference_masked_mse",
    "OPTIMIZERS", "FitResult", "TrainConfig", "evaluate_loader", "fit", "init_state", "load_dataset",
    "load_trained", "make_optimizer", "make_predict", "make_train_step", "make_update", "make_loss", "TRAIN_LOSSES",
    "PhysicsConfig", "integrate_phase", "physics_informed_loss", "physics_terms", "state_from_differences",
    "OnlineConfig", "init_online_state", "make_online_step", "sample_parameters", "sample_states",
]
