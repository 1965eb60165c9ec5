"""Training and evaluation of the U-Net: one training core (state, batch, losses, optimizers,
update step, epoch driver), the resumable ``fit``, orbax checkpoints, physics-informed and
online training, physics-aware evaluation and figures."""

from bec_jax.data.loader import Batch
from bec_jax.train.checkpoint import CheckpointMismatch, Checkpoints, read_run_metadata
from bec_jax.train.core import (
    LOSSES,
    OPTIMIZERS,
    EpochsResult,
    TrainConfig,
    TrainingDiverged,
    TrainState,
    evaluate_loader,
    init_state,
    make_gradient_step,
    make_loss,
    make_optimizer,
    make_predict,
    make_train_step,
    make_update,
    register_loss,
    run_epochs,
)
from bec_jax.train.losses import masked_mse, masked_sq_error_sums, reference_masked_mse
from bec_jax.train.online import OnlineConfig, init_online_state, make_online_step, sample_parameters, sample_states
from bec_jax.train.physics_informed import PhysicsConfig, physics_informed_loss, physics_terms, state_from_differences
from bec_jax.train.trainer import FitResult, fit, load_dataset, load_trained

__all__ = [
    "Batch", "TrainState", "TrainConfig", "TrainingDiverged", "OPTIMIZERS", "LOSSES", "register_loss", "make_loss",
    "make_optimizer", "init_state", "make_gradient_step", "make_update", "make_train_step", "make_predict",
    "evaluate_loader",
    "EpochsResult", "run_epochs",
    "CheckpointMismatch", "Checkpoints", "read_run_metadata",
    "masked_mse", "masked_sq_error_sums", "reference_masked_mse",
    "FitResult", "fit", "load_dataset", "load_trained",
    "PhysicsConfig", "physics_informed_loss", "physics_terms", "state_from_differences",
    "OnlineConfig", "init_online_state", "make_online_step", "sample_parameters", "sample_states",
]
