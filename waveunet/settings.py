"""Typed settings: every command's configuration as dataclasses (Hydra structured configs).

Types, ranges and choices are declared once, on the fields (:func:`setting`), and checked in one
place (:func:`check`); every error is one line that names the setting, e.g.
``trainer.max_epochs must be null or an integer >= 1, got 0``. Cross-field rules (exactly one of
``checkpoint`` / ``estimates``, ``output.low`` below ``output.high``) are each dataclass's
``rules`` method, called by the same :func:`check`.

How they are used:

* :func:`waveunet.config.compose` registers them in Hydra's ConfigStore (group ``schema``) and
  the primary configs place them under their keys (``- schema@trainer: trainer``), so Hydra
  rejects an unknown key or a wrongly typed value while composing;
* :func:`typed` turns a composed node, or a plain dict (a checkpoint's description, a config
  a comparison built), into the checked dataclass. The YAML presets keep the values and their
  comments; the dataclass defaults are the fallbacks of a key a preset leaves out.

``ModelConfig`` is the model's own configuration object (``WaveUNet.config``); ``OutputConfig``
is the base of :class:`waveunet.heads.OutputMode`, which adds the rules that need the
activation classes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from .errors import ConfigError

# trainer.precision's names, and evaluate's separation precision (those and auto): declared in
# waveunet.precision, which stays free of torch at import.
from .precision import PRECISIONS as SEPARATION_PRECISIONS
from .precision import TRAINING_PRECISIONS as PRECISIONS

T = TypeVar("T")

OUTPUT_TYPES = ("direct", "difference")
UPSAMPLING = ("linear", "learned")
LOSSES = ("mse", "l1", "cross_entropy")
OPTIMISERS = ("adam", "sgd")
METRICS = ("sdr", "bss")
NONFINITE = ("error", "zero")  # what evaluate does with NaN / inf estimate samples


# --------------------------------------------------------------------------------------------
# Declaring and checking
# --------------------------------------------------------------------------------------------


def device_problem(value: str) -> str | None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; whether a GPU is there is checked on use."""
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return None
    return f"unknown {value!r} (use auto, cpu, cuda or cuda:N)"


def split_problem(value: str) -> str | None:
    """One of the dataset splits (:data:`waveunet.data.SPLITS`)."""
    from . import data as data_lib  # lazily: the data module pulls in the audio stack

    if value in data_lib.SPLITS:
        return None
    return f"unknown {value!r} (choose from {', '.join(data_lib.SPLITS)})"


def distinct_names(value: Any) -> str | None:
    names = list(value)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        return f"must be distinct names, got {names}"
    return None


def setting(default: Any = MISSING, *, default_factory: Any = dataclasses.MISSING,
            ge: float | None = None, gt: float | None = None, choices: tuple[str, ...] = (),
            odd: bool = False, rule: Callable[[Any], str | None] | None = None) -> Any:
    """A dataclass field with its allowed values: ``>= ge``, ``> gt``, one of ``choices``, odd,
    or a ``rule`` returning what is wrong (None when nothing is). None passes when allowed by
    the field's type (``int | None``).

    Without a default the value is mandatory (``???``): the YAML presets hold the values and
    their comments, so a value is written in one place; only the model and output, which are
    also built from plain dicts (checkpoints, tests), have defaults here.
    """
    meta = {"ge": ge, "gt": gt, "choices": choices, "odd": odd, "rule": rule}
    return field(default=default, default_factory=default_factory, metadata=meta)


def _kind(annotation: str) -> str | None:
    base = annotation.replace(" | None", "").replace("None | ", "")
    return {"int": "int", "float": "float", "bool": "bool", "str": "str"}.get(base)


def _type_problem(kind: str | None, value: Any, optional: bool) -> str | None:
    if value is None:
        return None if optional or kind is None else "must not be null"
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, int | float) and not isinstance(value, bool),
          "bool": isinstance(value, bool), "str": isinstance(value, str)}.get(kind, True)
    words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
    return None if ok else f"must be {'null or ' if optional else ''}{words[kind]}, got {value!r}"


def _range_problem(f: dataclasses.Field, value: Any) -> str | None:
    meta = f.metadata
    if value is None or not meta:
        return None
    ge, gt = meta["ge"], meta["gt"]
    if ge is not None or gt is not None:
        # written so that NaN fails too
        if not (value >= ge if ge is not None else value > gt):
            word = "an integer" if _kind(str(f.type)) == "int" else "a number"
            bound = f">= {ge:g}" if ge is not None else f"> {gt:g}"
            null = "null or " if "None" in str(f.type) else ""
            return f"must be {null}{word} {bound}, got {value!r}"
    if meta["choices"] and value not in meta["choices"]:
        return f"unknown {value!r} (choose from {', '.join(meta['choices'])})"
    if meta["odd"] and value % 2 == 0:
        return f"must be odd (centred convolutions), got {value!r}"
    return meta["rule"](value) if meta["rule"] is not None else None


def check(obj: Any, prefix: str = "") -> None:
    """Check every declared type, range and choice of a settings dataclass (nested ones too),
    then its ``rules``; raise ConfigError for the first problem, naming ``prefix + key``."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check(value, key + ".")
            continue
        if isinstance(value, list | tuple) and any(dataclasses.is_dataclass(v) for v in value):
            for i, item in enumerate(value):
                check(item, f"{key}[{i}].")
            continue
        problem = _type_problem(_kind(str(f.type)), value, "None" in str(f.type))
        problem = problem or _range_problem(f, value)
        if problem is not None:
            raise ConfigError(f"{key}{':' if problem.startswith('unknown') else ''} {problem}")
    rules = getattr(obj, "rules", None)
    if rules is not None:
        for key, problem in rules():
            raise ConfigError(f"{prefix}{key} {problem}")


def typed(cls: type[T], node: Any, prefix: str = "") -> T:
    """``node`` (a DictConfig or a plain mapping) as a checked ``cls``; ``prefix`` names where
    it sits (``"trainer."``). Unknown keys and wrong types are errors naming the setting."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), _container(node))
        obj = OmegaConf.to_object(merged)
    except ConfigKeyError as exc:
        raise ConfigError(f"unknown setting '{prefix}{exc.full_key}'") from None
    except MissingMandatoryValue as exc:
        raise ConfigError(f"{prefix}{exc.full_key} is missing (it has no default)") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{prefix}{exc.full_key}: {str(exc.msg).splitlines()[0]}") from None
    check(obj, prefix)
    return obj


def _container(node: Any) -> Any:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node) if isinstance(node, Mapping) else node


# --------------------------------------------------------------------------------------------
# The model and its output head
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Architecture hyper-parameters; defaults are the original's (M4 without the head)."""

    name: str = "custom"
    description: str = ""  # the preset's one-line description; not part of the architecture
    levels: int = setting(12, ge=1)
    initial_filters: int = setting(24, ge=1)
    down_kernel: int = setting(15, ge=1, odd=True)
    up_kernel: int = setting(5, ge=1, odd=True)
    output_kernel: int = setting(1, ge=1, odd=True)
    channels: int = setting(2, ge=1)
    sources: tuple[str, ...] = setting(("accompaniment", "vocals"), rule=distinct_names)
    context: bool = True
    upsampling: str = setting("linear", choices=UPSAMPLING)
    sample_rate_hz: int = setting(22050, ge=1)
    # Desired output length of one training example / inference chunk; the
    # model rounds it up to the next length its arithmetic allows.
    output_samples: int = setting(16384, ge=1)

    def __post_init__(self) -> None:
        self.sources = tuple(self.sources)
        check(self, "model.")

    def to_dict(self) -> dict[str, Any]:
        """The architecture, as saved in checkpoints (without the description)."""
        d = dataclasses.asdict(self)
        d.pop("description")
        d["sources"] = list(self.sources)
        return d


@dataclass
class OutputConfig:
    """What the output head is: ``type`` x ``activation`` on [low, high] (``high`` null:
    bounded below only). :class:`waveunet.heads.OutputMode` adds the activation's rules."""

    type: str = setting("difference", choices=OUTPUT_TYPES)
    activation: str = "tanh"
    low: float = -1.0
    high: float | None = 1.0

    def rules(self) -> Iterator[tuple[str, str]]:
        if not math.isfinite(self.low):
            yield "low", f"must be a finite number, got {self.low}"
        elif self.high is not None and not (math.isfinite(self.high) and self.low < self.high):
            yield "low", f"({self.low}) must be below output.high ({self.high})"


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class OptimConfig:
    name: str = setting(choices=OPTIMISERS)
    lr: float = setting(gt=0)
    betas: list[float] = MISSING
    weight_decay: float = setting(ge=0)
    batch_size: int = setting(ge=1)  # the global batch, over all processes
    grad_clip_norm: float | None = setting(gt=0)


@dataclass
class LossConfig:
    name: str = setting(choices=LOSSES)


@dataclass
class SecondRoundConfig:
    enabled: bool = MISSING
    batch_multiplier: int = setting(ge=1)
    lr: float = setting(gt=0)


@dataclass
class ValidationConfig:
    max_tracks: int | None = setting(ge=1)
    batch_size: int = setting(ge=1)
    audio_examples: int = setting(ge=0)
    audio_seconds: float = setting(gt=0)
    figures: bool = MISSING
    figure_seconds: float = setting(gt=0)


@dataclass
class DivergenceConfig:
    policy: str = setting(choices=("stop", "rollback"))
    max_pre_activation: float = setting(gt=0)
    rollback_lr_factor: float = setting(gt=0)
    max_rollbacks: int = setting(ge=0)


@dataclass
class TrainerConfig:
    device: str = setting(rule=device_problem)
    precision: str = setting(choices=PRECISIONS)
    compile: bool = MISSING
    steps_per_epoch: int = setting(ge=1)
    max_epochs: int | None = setting(ge=1)
    patience: int = setting(ge=1)
    second_round: SecondRoundConfig = field(default_factory=SecondRoundConfig)
    log_every_steps: int = setting(ge=1)
    checkpoint_every_steps: int = setting(ge=1)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)
    resume: Any = MISSING  # false | true (the newest run of this name) | a run folder
    progress: bool = MISSING
    threads: int | None = setting(ge=1)  # torch CPU threads while training; None: torch's


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    """How a model is scored (configs/eval/default.yaml): shared by ``waveunet evaluate`` and
    ``compare.eval``."""

    split: str = setting(rule=split_problem)
    sources: list[str] | None = setting(rule=distinct_names)
    metrics: str = setting(choices=METRICS)
    sample_rate_hz: int | None = setting(ge=1)
    channels: int | None = setting(ge=1)
    workers: int | None = setting(ge=0)
    device: str = setting(rule=device_problem)
    batch_size: int | None = setting(ge=1)
    memory_gib: float | None = setting(gt=0)
    max_tracks: int | None = setting(ge=1)
    waveform_track: str | None = MISSING
    waveform_seconds: float = setting(gt=0)
    precision: str = setting(choices=SEPARATION_PRECISIONS)
    nonfinite: str = setting(choices=NONFINITE)


@dataclass
class EvaluateConfig(EvalConfig):
    """``waveunet evaluate`` (configs/evaluate.yaml): what to score, where the report goes."""

    checkpoint: str | None = MISSING
    estimates: str | None = MISSING
    out_dir: str | None = MISSING
    overwrite: bool = MISSING
    progress: bool = MISSING
    threads: int | None = setting(ge=1)
    # None: no dataset chosen (``data=<preset>``); a checkpoint's evaluation then uses the
    # dataset the checkpoint was trained on (waveunet.evaluate.checkpoint_data).
    data: Any = None

    def rules(self) -> Iterator[tuple[str, str]]:
        if (self.checkpoint is None) == (self.estimates is None):
            yield "checkpoint", (
                "/ estimates: give exactly one of checkpoint=PATH (separate and score a dataset "
                "split) or estimates=DIR (score DIR/<track>/<source>.wav)"
                + (" -- both were set" if self.checkpoint is not None else ""))


# --------------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------------


@dataclass
class FigureConfig:
    source: str | None = MISSING
    passage_seconds: float = setting(gt=0)
    track: str | None = MISSING


@dataclass
class CompareConfig:
    """``waveunet compare`` (configs/compare.yaml, on top of the ``train`` config)."""

    modes: list[Any] = MISSING  # {name, output, loss, overrides} or an output preset's name
    seeds: list[int] = MISSING
    out_dir: str = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    figure: FigureConfig = field(default_factory=FigureConfig)
    threads: int | None = setting(ge=1)
    progress: bool = MISSING

    def rules(self) -> Iterator[tuple[str, str]]:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            yield "seeds", f"must be a list of distinct integers, got {self.seeds}"
        if not self.out_dir:
            yield "out_dir", "must name a folder for the results"


@dataclass
class OptimiserConfig:
    name: str = setting(choices=OPTIMISERS)
    lr: float = setting(gt=0)


@dataclass
class SaturationConfig:
    """``waveunet saturation`` (configs/saturation.yaml)."""

    modes: list[Any] = MISSING  # {name, output, loss}
    optimisers: list[OptimiserConfig] = MISSING
    steps: int = setting(ge=2)
    recovery_steps: int = setting(ge=0)
    recovery_target: float = MISSING
    batch_size: int = setting(ge=1)
    input_std: float = setting(gt=0)
    seed: int = MISSING
    device: str = setting(rule=device_problem)
    precision: str = setting(choices=PRECISIONS)
    out_dir: str = MISSING
    threads: int | None = setting(ge=1)
    progress: bool = MISSING

    def rules(self) -> Iterator[tuple[str, str]]:
        if not self.optimisers:
            yield "optimisers", "need at least one, e.g. [{name: adam, lr: 1.0e-3}]"
        names = [o.name for o in self.optimisers]
        if len(set(names)) != len(names):
            yield "optimisers", f"names must be distinct, got {names}"


SCHEMAS: dict[str, type] = {
    "model": ModelConfig, "output": OutputConfig, "optim": OptimConfig, "loss": LossConfig,
    "trainer": TrainerConfig, "evaluate": EvaluateConfig, "compare": CompareConfig,
    "saturation": SaturationConfig,
}
