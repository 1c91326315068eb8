"""Typed settings: every command's configuration as dataclasses (Hydra structured configs).

Types, ranges and choices are declared once, on the fields (:func:`setting`), and checked in one
place (:func:`check`); every error is one line that names the setting, e.g.
``trainer.max_epochs must be null or an integer >= 1, got 0``. Cross-field rules (exactly one of
``checkpoint`` / ``estimates``, ``output.low`` below ``output.high``) are each dataclass's
``rules`` method, called by the same :func:`check`.

How they are used:

* :func:`waveunet.settings.compose.compose` registers them in Hydra's ConfigStore (group
  ``schema``) and the primary configs place them under their keys (``- schema@trainer:
  trainer``), so Hydra rejects an unknown key or a wrongly typed value while composing;
* :func:`typed` turns a composed node, or a plain dict (a checkpoint's description, a config
  a comparison built), into the checked dataclass. The YAML presets keep the values and their
  comments; the dataclass defaults are the fallbacks of a key a preset leaves out.

``ModelConfig`` is the model's own configuration object (``WaveUNet.config``); ``OutputConfig``
is the base of :class:`waveunet.model.heads.OutputMode`, which adds the rules that need the
activation classes.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from ..errors import ConfigError

# trainer.precision's names, and evaluate's separation precision (those and auto): declared in
# waveunet.precision, which stays free of torch at import.
from ..precision import PRECISIONS as SEPARATION_PRECISIONS
from ..precision import TRAINING_PRECISIONS as PRECISIONS

T = TypeVar("T")

OUTPUT_TYPES = ("direct", "difference")
UPSAMPLING = ("linear", "learned")
LOSSES = ("mse", "l1", "cross_entropy")
OPTIMISERS = ("adam", "sgd")
METRICS = ("sdr", "bss")
NONFINITE = ("error", "zero")  # what evaluate does with NaN / inf estimate samples
SPLITS = ("train", "valid", "test")
SAMPLINGS = ("per_second", "per_track")  # how training examples are drawn from the tracks
ON_DEVICE = (False, True, "auto")
ON_DEVICE_DTYPES = ("float32", "int16", "bfloat16")  # torch dtypes of the data kept on the device
# The shortest generated track, checked before anything is generated: it stops a slip such as
# data.seconds=0.001 from writing a dataset first. Whether the tracks are as long as the model's
# input (the tiny preset's: 0.23 s; M1: 0.74 s; M4: 6.7 s) is checked once the model is known
# (:func:`waveunet.data.check_track_lengths`).
MIN_SYNTHETIC_SECONDS = 1.0
# The largest seed: numpy's generators take seeds below 2**32.
MAX_SEED = 2**32 - 1


# --------------------------------------------------------------------------------------------
# Declaring and checking
# --------------------------------------------------------------------------------------------


def device_problem(value: str) -> str | None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; whether a GPU is there is checked on use."""
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return None
    return f"unknown {value!r} (use auto, cpu, cuda or cuda:N)"


def split_problem(value: str) -> str | None:
    """One of the dataset splits (:data:`SPLITS`)."""
    if value in SPLITS:
        return None
    return f"unknown {value!r} (choose from {', '.join(SPLITS)})"


def on_device_problem(value: Any) -> str | None:
    """``data.on_device``: false, true or auto (not 0 or 1)."""
    if value in ON_DEVICE and (isinstance(value, bool) or value == "auto"):
        return None
    return f"unknown {value!r} (choose from false, true, auto)"


def valid_tracks_problem(value: Any) -> str | None:
    """``valid_tracks``: null, a count of tracks drawn at random, or names (a list, or one)."""
    if value is None or isinstance(value, list | tuple | str):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    return f"must be >= 0 (a count) or a list of track names, got {value!r}"


def distinct_names(value: Any) -> str | None:
    names = list(value)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        return f"must be distinct names, got {names}"
    return None


def setting(default: Any = MISSING, *, default_factory: Any = dataclasses.MISSING,
            ge: float | None = None, gt: float | None = None, lt: float | None = None,
            le: float | None = None, choices: tuple[str, ...] = (), odd: bool = False,
            rule: Callable[[Any], str | None] | None = None, why: str = "",
            finite: bool = True) -> Any:
    """A dataclass field with its allowed values: ``>= ge`` or ``> gt``, ``< lt`` or ``<= le``,
    one of ``choices``, odd, or a ``rule`` returning what is wrong (None when nothing is);
    ``why`` says what a bound is for, in the message. A number must be finite unless
    ``finite`` is false (``inf``: no limit). None passes when allowed by the field's type
    (``int | None``).

    Without a default the value is mandatory (``???``): the YAML presets hold the values and
    their comments, so a value is written in one place; only the model and output, which are
    also built from plain dicts (checkpoints, tests), have defaults here.
    """
    meta = {"ge": ge, "gt": gt, "lt": lt, "le": le, "choices": choices, "odd": odd,
            "rule": rule, "why": why, "finite": finite}
    return field(default=default, default_factory=default_factory, metadata=meta)


def _kind(annotation: str) -> str | None:
    base = annotation.replace(" | None", "").replace("None | ", "")
    return {"int": "int", "float": "float", "bool": "bool", "str": "str"}.get(base)


_WORDS = {"int": "an integer", "float": "a finite number", "bool": "true or false",
          "str": "a string"}


def _type_problem(f: dataclasses.Field, value: Any) -> str | None:
    kind, optional = _kind(str(f.type)), "None" in str(f.type)
    if value is None:
        return None if optional or kind is None else "must not be null"
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, int | float) and not isinstance(value, bool)
          and (math.isfinite(value) or not (f.metadata or {}).get("finite", True)),
          "bool": isinstance(value, bool), "str": isinstance(value, str)}.get(kind, True)
    return None if ok else _should_be(f, value)


def _should_be(f: dataclasses.Field, value: Any) -> str:
    """"must be [null or] <a kind> <its bounds> [(why)], got <value>"."""
    kind, meta = _kind(str(f.type)), f.metadata or {}
    low = (f">= {_num(meta['ge'])}" if meta.get("ge") is not None
           else f"> {_num(meta['gt'])}" if meta.get("gt") is not None else None)
    high = (f"< {_num(meta['lt'])}" if meta.get("lt") is not None
            else f"<= {_num(meta['le'])}" if meta.get("le") is not None else None)
    if low and high and low.startswith(">=") and high.startswith("<"):
        bound = (f" in [{_num(meta['ge'])}, {_num(meta['lt'])})" if meta.get("lt") is not None
                 else f" in [{_num(meta['ge'])}, {_num(meta['le'])}]")
    else:
        bound = "".join(f" {b}" for b in (low, high) if b)
    why = f" ({meta['why']})" if meta.get("why") else ""
    null = "null or " if "None" in str(f.type) else ""
    word = "a number" if kind == "float" and not meta.get("finite", True) else _WORDS.get(kind)
    return f"must be {null}{word or 'valid'}{bound}{why}, got {value!r}"


def _num(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


_BOUNDS = (("ge", operator.ge), ("gt", operator.gt), ("lt", operator.lt), ("le", operator.le))


def _range_problem(f: dataclasses.Field, value: Any) -> str | None:
    meta = f.metadata
    if value is None or not meta:
        return None
    # written so that NaN fails too (every comparison with it is false)
    if not all(meta[name] is None or test(value, meta[name]) for name, test in _BOUNDS):
        return _should_be(f, value)
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
        problem = _type_problem(f, value) or _range_problem(f, value)
        if problem is not None:
            raise ConfigError(_message(key, problem))
    rules = getattr(obj, "rules", None)
    if rules is not None:
        for key, problem in rules():
            raise ConfigError(f"{prefix}{key} {problem}")


def _message(key: str, problem: str) -> str:
    return f"{key}{':' if problem.startswith('unknown') else ''} {problem}"


def picked(cls: type[T], node: Any, prefix: str = "",
           keys: Mapping[str, str] | None = None) -> T:
    """The fields of ``cls`` taken from ``node``, a config that holds other keys too (a data
    config), as a checked ``cls``: a key that is missing or null takes the field's default
    (unless the field may be null), and a whole number given as a float (3.0) counts as an
    integer. Errors name ``prefix + key``, or ``keys[key]`` where a preset maps the key from
    elsewhere (``data.ccmixter_root``)."""
    values = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in fields.items():
        value = node.get(name) if hasattr(node, "get") else None
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if value is None and "None" not in str(f.type):
            continue  # the default
        if (_kind(str(f.type)) == "int" and isinstance(value, float) and math.isfinite(value)
                and value == int(value)):
            value = int(value)
        values[name] = value
    obj = cls(**values)
    named = dict(keys or {})
    for name, f in fields.items():
        value = getattr(obj, name)
        problem = _type_problem(f, value) or _range_problem(f, value)
        if problem is not None:
            raise ConfigError(_message(named.get(name, f"{prefix}{name}"), problem))
    for key, problem in getattr(obj, "rules", lambda: ())():
        raise ConfigError(f"{named.get(key, prefix + key)} {problem}")
    return obj


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
    bounded below only). :class:`waveunet.model.heads.OutputMode` adds the activation's rules."""

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
    max_pre_activation: float = setting(gt=0, finite=False)  # inf: no limit
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


@dataclass
class RunConfig:
    """A training config's own top-level keys that are checked here."""

    seed: int = setting(ge=0, le=MAX_SEED)


# --------------------------------------------------------------------------------------------
# Data (the rest of a data config, its formats, roots and stems, is read by waveunet.data.spec)
# --------------------------------------------------------------------------------------------


@dataclass
class DataLoadingConfig:
    """How a data config's training examples are drawn and loaded (its top-level keys)."""

    sampling: str = setting("per_second", choices=SAMPLINGS)
    workers: int = setting(0, ge=0)  # DataLoader worker processes
    on_device: Any = setting(False, rule=on_device_problem)
    on_device_dtype: str = setting("float32", choices=ON_DEVICE_DTYPES)

    def rules(self) -> Iterator[tuple[str, str]]:
        if self.on_device_dtype != "float32" and self.on_device is not True:
            yield f"on_device_dtype={self.on_device_dtype}", (
                "stores the data on the device: it needs data.on_device=true "
                f"(got {self.on_device})")


@dataclass
class DatasetConfig:
    """The numbers of one dataset of a data config."""

    weight: float = setting(1.0, ge=0)
    valid_tracks: Any = setting(None, rule=valid_tracks_problem)
    valid_fraction: float = setting(0.0, ge=0, lt=1)
    valid_seed: int = setting(0, ge=0, le=MAX_SEED)


@dataclass
class SyntheticConfig:
    """A generated dataset's settings (``waveunet synth``'s defaults)."""

    tracks: int = setting(8, ge=1)
    test_tracks: int | None = setting(None, ge=0)
    seconds: float = setting(12.0, ge=MIN_SYNTHETIC_SECONDS,
                             why="a generated track must be at least 1 s long, and as long as "
                                 "the model's input")
    seed: int = setting(0, ge=0, le=MAX_SEED)


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
    figures: bool = MISSING
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
    # dataset the checkpoint was trained on (waveunet.evaluation.evaluate.checkpoint_data).
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
