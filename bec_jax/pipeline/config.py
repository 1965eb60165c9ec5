"""Typed configuration of ``bec-jax pipeline`` and its presets.

A ``PipelineConfig`` is six frozen sections, each the configuration object of
the stage that uses it (no copies of their fields):

- ``data``: ``bec_jax.data.GenerateConfig`` (dataset generation),
- ``model``: ``bec_jax.models.UNetConfig`` (``input_size`` follows ``data.n``),
- ``train``: ``bec_jax.train.TrainConfig``,
- ``compress``: ``bec_jax.compress.CompressConfig`` (pruning, fine-tuning, quantization schemes),
- ``report``: ``ReportConfig`` (evaluation figure and latency measurement),
- ``imaging``: ``bec_jax.imaging.training.ImagingTrainConfig`` (training on camera images
  rendered on the fly; disabled by default: clean inputs).

The CLI exposes every field as ``--<section>-<field>`` (``--train-epochs 5``,
``--data-g-range 50,250``), generated from the dataclasses by
``add_config_flags`` so that flags and config cannot drift apart. The full
config is written to ``<out>/config.json``; ``PipelineConfig.from_dict`` reads
it back.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from bec_jax.compress.workflow import CompressConfig
from bec_jax.data.generate import PRESETS as DATA_PRESETS
from bec_jax.data.generate import GenerateConfig
from bec_jax.flags import add_dataclass_flags, config_from_flags
from bec_jax.imaging.training import ImagingTrainConfig
from bec_jax.models.unet import UNetConfig, default_depth
from bec_jax.train.core import TrainConfig

__all__ = ["CompressConfig", "ReportConfig", "PipelineConfig", "PRESETS", "add_config_flags", "config_from_args"]


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """Evaluation and report settings.

    samples: test samples shown in predictions.png. eval_batch_size: batch of
    the evaluation. latency_batch: batch size of the inference-latency
    measurement; latency_repeats: timed calls (the median is reported).
    """

    samples: int = 4
    eval_batch_size: int = 16
    latency_batch: int = 8
    latency_repeats: int = 20

    def __post_init__(self):
        if self.samples < 0:
            raise ValueError(f"report.samples must be >= 0, got {self.samples}")
        for name in ("eval_batch_size", "latency_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"report.{name} must be >= 1, got {getattr(self, name)}")
        if self.latency_repeats < 3:
            raise ValueError(f"report.latency_repeats must be >= 3, got {self.latency_repeats}")


SECTIONS = {"data": GenerateConfig, "model": UNetConfig, "train": TrainConfig, "compress": CompressConfig,
            "report": ReportConfig, "imaging": ImagingTrainConfig}
# Sections a config.json may lack (written before they existed): their defaults.
OPTIONAL = {"imaging"}
# Fields that follow from others and are not flags.
DERIVED = {("model", "input_size"), ("model", "in_channels"), ("model", "out_channels")}


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that determines a pipeline run (see the module doc)."""

    data: GenerateConfig
    model: UNetConfig
    train: TrainConfig
    compress: CompressConfig = CompressConfig()
    report: ReportConfig = ReportConfig()
    imaging: ImagingTrainConfig = ImagingTrainConfig()

    def __post_init__(self):
        if self.model.input_size != self.data.n:
            raise ValueError(f"model.input_size ({self.model.input_size}) must equal data.n ({self.data.n})")

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        """The config of a ``to_dict`` (config.json). Types are strict, as JSON gives them: no
        strings for booleans or numbers, no floats for integers; ValueError names every bad field."""
        if not isinstance(d, dict):
            raise ValueError(f"a pipeline config is a JSON object, got {type(d).__name__}")
        errors = [f"unknown section {k!r}" for k in d if k not in SECTIONS]
        d = {**{k: {} for k in OPTIONAL}, **d}
        for section in SECTIONS:
            if not isinstance(d.get(section), dict):
                errors.append(f"section {section!r} missing or not an object")
                continue
            hints = typing.get_type_hints(SECTIONS[section])
            for k, v in d[section].items():
                if k not in hints:
                    errors.append(f"{section}.{k}: unknown field")
                elif (why := _type_error(hints[k], v)) is not None:
                    errors.append(f"{section}.{k}: {why}")
        if errors:
            raise ValueError("invalid config: " + "; ".join(errors))
        return cls(**{name: SECTIONS[name](**d[name]) for name in SECTIONS})

    @property
    def ft_lr(self) -> float:
        return self.compress.ft_lr or self.train.learning_rate / 10


PRESETS = {
    # 2-core CPU, a few minutes (the README has the measured time): 240 states on 64², a 4.3M-parameter U-Net,
    # 20 epochs.
    "quick": PipelineConfig(
        data=DATA_PRESETS["quick"],
        model=UNetConfig(base_width=8, depth=6, input_size=64),
        train=TrainConfig(epochs=20),
        # iterative 80 → 90 → 97 %, 4 epochs each: pruned + int8 stored sparse ≈ 63× smaller at 1.06× the MSE
        # of a dense model trained as long (experiments/results/compression_study)
        compress=CompressConfig(sparsity=0.97, method="iterative", ft_epochs=4)),
    # The reference sizes on a GPU: 1,680 states on 200², the 17.3M-parameter U-Net, 50 epochs.
    "paper": PipelineConfig(
        data=DATA_PRESETS["paper"],
        model=UNetConfig(base_width=8, depth=7, input_size=200),
        train=TrainConfig(epochs=50),
        compress=CompressConfig(sparsity=0.97, method="iterative", ft_epochs=10),
        report=ReportConfig(latency_batch=1)),
    # The quick preset trained on camera images rendered on the fly (a model for `bec-jax predict`):
    # flight 0-1/ω⊥, 0.2-0.3 a⊥ pixels, Gaussian PSF up to 0.5 a⊥, 10⁴-10⁶ atoms, shot and read noise,
    # background, fringes; a 112² camera covers the quick clouds after the flight.
    "lab": PipelineConfig(
        data=DATA_PRESETS["quick"],
        model=UNetConfig(base_width=8, depth=6, input_size=64),
        train=TrainConfig(epochs=20),
        compress=CompressConfig(sparsity=0.97, method="iterative", ft_epochs=4),
        imaging=ImagingTrainConfig(enabled=True, rows=112, cols=112)),
}


def _type_error(hint, v) -> str | None:
    """Why the JSON value ``v`` does not fit the field annotation ``hint`` (None if it does)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        return _type_error(next(a for a in args if a is not type(None)), v)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            return f"expected a list, got {v!r}"
        if args[-1] is not Ellipsis and len(v) != len(args):
            return f"expected {len(args)} values, got {len(v)}"
        return next((why for item in v if (why := _type_error(args[0], item)) is not None), None)
    ok = {bool: lambda x: isinstance(x, bool),
          int: lambda x: isinstance(x, int) and not isinstance(x, bool),
          float: lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
          str: lambda x: isinstance(x, str)}[hint](v)
    name = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]
    return None if ok else f"expected {name}, got {v!r}"


# ----------------------------------------------------------------- CLI flags

def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--<section>-<field>`` for every PipelineConfig field (``flags.add_dataclass_flags``);
    the help shows the quick preset's values, and a run's defaults are its preset's."""
    for section, cls in SECTIONS.items():
        add_dataclass_flags(parser, cls, getattr(PRESETS["quick"], section), prefix=f"{section}-",
                            exclude={f for s, f in DERIVED if s == section},
                            title=f"{section} ({cls.__name__}; defaults shown: the quick preset's)")


def config_from_args(preset: PipelineConfig, args: argparse.Namespace) -> PipelineConfig:
    """``preset`` with the flags given on the command line applied.

    Changing ``--data-n`` moves ``model.input_size`` along (and the default
    depth, min(7, log2 n), unless ``--model-depth`` is given). Invalid values
    raise ValueError from the section's own validation.
    """
    sections = {}
    for section in SECTIONS:
        exclude = {f for s, f in DERIVED if s == section}
        base = getattr(preset, section)
        if section == "model":
            n = sections["data"].n
            forced = dict(input_size=n)
            if n != base.input_size and getattr(args, "model__depth", None) is None:
                forced["depth"] = default_depth(n)
            sections[section] = config_from_flags(base, args, prefix="model-", exclude=exclude, **forced)
        else:
            sections[section] = config_from_flags(base, args, prefix=f"{section}-", exclude=exclude)
    return PipelineConfig(**sections)
