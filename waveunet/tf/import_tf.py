"""``waveunet import-tf``: the original Wave-U-Net's TensorFlow checkpoints as waveunet checkpoints.

The original (f90/Wave-U-Net, TensorFlow 1.x) published trained M4, M6 and
M5-HighSR models as TensorFlow checkpoints. Our model computes the same
function as its graph, so its weights load into ours by position::

    waveunet import-tf checkpoints/full_44KHz/full_44KHz-236118 --model m5_highsr -o m5_highsr.pt

How the original's variables map onto :class:`~waveunet.model.network.WaveUNet`:

* Convolutions are ``separator/conv1d``, ``separator/conv1d_1``, ... numbered
  in creation order (compared as numbers: ``conv1d_10`` follows ``conv1d_9``):
  the ``levels`` down convolutions, the bottleneck, the ``levels`` up (merge)
  convolutions, then one output convolution per predicted source (all sources
  for ``direct``; all but the last for ``difference``, whose last source is
  mixture - sum(others), clipped at test time, as in our head).
* TensorFlow's ``conv1d`` kernels are ``[kernel, in, out]``, torch's
  ``[out, in, kernel]``; the input channels are in the same order on both sides,
  because both concatenate ``[cropped skip, upsampled]`` before a merge
  convolution and ``[cropped mixture, features]`` before the output ones.
* Learned upsampling adds ``separator/interp_<up level>``: one logit per
  channel, ``w = sigmoid(v)`` weighting the LEFT neighbour
  (``w * left + (1 - w) * right``), exactly our ``upsample_logits`` (shape
  ``(channels, 1)``) in :func:`~waveunet.model.network.interpolate_upsample`.
* Everything else in the file is the optimiser's (``*/Adam``, ``*/Adam_1``,
  ``separator_solver/beta{1,2}_power``) or ``global_step``: ignored, and the
  step is recorded.

Without ``--model`` the shapes decide what they can: mono/stereo, the number
of sources and direct/difference (the original separated 2 sources, or 4), the
sizes, and learned upsampling. What they cannot decide (context, the sample
rate, the output activation) must be named, and the error says which choices
there are. The result is a normal self-describing checkpoint whose ``config``
records where the weights came from (``config["import"]``: file, step).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..model.checkpoint import save_checkpoint
from ..model.network import WaveUNet, build_model
from ..settings.compose import compose, override_key
from .reader import TFCheckpoint, TFCheckpointError

_CONV = re.compile(r"^separator/conv1d(?:_(\d+))?/(kernel|bias)$")
_INTERP = re.compile(r"^separator/interp_(\d+)$")
_OPTIMISER = re.compile(r"(/Adam|/Adam_1)$|^separator_solver/|^global_step$")
_STEP_IN_NAME = re.compile(r"-(\d+)$")

# The paper's models, as our presets; the original had no other published configuration.
PAPER_MODELS = ("m1", "m2", "m3", "m4", "m5", "m5_highsr", "m6")
PAPER_NAMES = {"m1": "M1", "m2": "M2", "m3": "M3", "m4": "M4", "m5": "M5",
               "m5_highsr": "M5-HighSR", "m6": "M6"}
# The original's tasks: what a number of output convolutions means.
ORIGINAL_TASKS = {
    1: ("difference", ["accompaniment", "vocals"]),
    2: ("direct", ["accompaniment", "vocals"]),
    3: ("difference", ["bass", "drums", "other", "vocals"]),
    4: ("direct", ["bass", "drums", "other", "vocals"]),
}
ORIGINAL_ACTIVATIONS = ("tanh", "linear")

HELP_EPILOG = """\
Overrides (key=value) describe the architecture where --model or the shapes do not, e.g.
  waveunet import-tf ckpt/baseline_stereo/baseline_stereo-186093 --model m4 -o m4.pt
  waveunet import-tf small-1234 -o small.pt model.context=true model.sample_rate_hz=22050 \\
      output.activation=tanh
"""


# --------------------------------------------------------------------------------------------
# What the checkpoint holds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OriginalVariables:
    """The separator's variables in an original Wave-U-Net checkpoint, in creation order."""

    convs: list[str]  # "separator/conv1d", "separator/conv1d_1", ... by number
    interps: list[str]  # "separator/interp_0", ... by up level
    shapes: dict[str, tuple[int, ...]]
    step: int | None
    ignored: list[str]  # optimiser slots, beta powers, global_step


def _conv_prefix(number: int) -> str:
    return "separator/conv1d" if number == 0 else f"separator/conv1d_{number}"


def original_variables(ckpt: TFCheckpoint) -> OriginalVariables:
    """Sort the checkpoint's variables into convolutions, upsampling weights and the rest."""
    conv_numbers, interp_levels, ignored, unknown = set(), set(), [], []
    for name in ckpt.names():
        if _OPTIMISER.search(name):
            ignored.append(name)
        elif match := _CONV.match(name):
            conv_numbers.add(int(match.group(1) or 0))
        elif match := _INTERP.match(name):
            interp_levels.add(int(match.group(1)))
        else:
            unknown.append(name)
    if not conv_numbers:
        shown = ", ".join(ckpt.names()[:4]) or "no variables"
        raise TFCheckpointError(f"{ckpt.index_path}: no 'separator/conv1d*' variables ({shown}): "
                                "not a checkpoint of the original Wave-U-Net")
    if unknown:
        raise TFCheckpointError(f"{ckpt.index_path}: unexpected variable '{unknown[0]}' "
                                "(not part of the original Wave-U-Net's graph)")
    for number in range(max(conv_numbers) + 1):
        for part in ("kernel", "bias"):
            name = f"{_conv_prefix(number)}/{part}"
            if name not in ckpt.entries:
                raise TFCheckpointError(f"{ckpt.index_path}: missing variable '{name}' (the "
                                        f"convolutions go up to conv1d_{max(conv_numbers)})")
    for level in range(max(interp_levels, default=-1) + 1):
        if level not in interp_levels:
            raise TFCheckpointError(
                f"{ckpt.index_path}: missing variable 'separator/interp_{level}' "
                f"(learned upsampling goes up to interp_{max(interp_levels)})"
            )
    step = None
    if "global_step" in ckpt.entries:
        step = int(np.asarray(ckpt.read("global_step")).reshape(-1)[0])
    elif match := _STEP_IN_NAME.search(ckpt.name):
        step = int(match.group(1))
    return OriginalVariables(
        convs=[_conv_prefix(n) for n in sorted(conv_numbers)],
        interps=[f"separator/interp_{i}" for i in sorted(interp_levels)],
        shapes={name: entry.shape for name, entry in ckpt.entries.items()},
        step=step,
        ignored=ignored,
    )


@dataclass(frozen=True)
class Inferred:
    """What the shapes say about the architecture."""

    channels: int
    levels: int
    initial_filters: int
    down_kernel: int
    up_kernel: int
    output_kernel: int
    predicted: int  # output convolutions
    upsampling: str

    @property
    def task(self) -> tuple[str, list[str]] | None:
        return ORIGINAL_TASKS.get(self.predicted)

    def summary(self) -> str:
        task = self.task
        what = (f"{len(task[1])} sources, {task[0]} output" if task
                else f"{self.predicted} output convolutions")
        layout = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels} channels")
        return (f"{layout}, {what}, "
                f"{self.upsampling} upsampling, {self.levels} levels x {self.initial_filters} "
                f"filters, kernels {self.down_kernel}/{self.up_kernel}/{self.output_kernel}")

    def model_settings(self) -> dict[str, object]:
        settings = {
            "levels": self.levels, "initial_filters": self.initial_filters,
            "down_kernel": self.down_kernel, "up_kernel": self.up_kernel,
            "output_kernel": self.output_kernel, "channels": self.channels,
            "upsampling": self.upsampling,
        }
        if self.task:
            settings["sources"] = self.task[1]
        return settings


def infer_architecture(orig: OriginalVariables, where: str) -> Inferred:
    """Read the architecture off the kernel shapes (``[kernel, in, out]``)."""
    kernels = [orig.shapes[f"{c}/kernel"] for c in orig.convs]
    if any(len(k) != 3 for k in kernels):
        bad = next(f"{c}/kernel" for c, k in zip(orig.convs, kernels, strict=True) if len(k) != 3)
        raise TFCheckpointError(f"{where}: '{bad}' has shape {list(orig.shapes[bad])}, "
                                "not [kernel, in, out]")
    down_kernel, channels, filters = kernels[0]
    # Down levels and the bottleneck have F, 2F, ..., (L+1)F output channels; the first up
    # convolution has fewer again.
    run = 0
    while run < len(kernels) and kernels[run][2] == filters * (run + 1):
        run += 1
    levels = run - 1
    predicted = len(kernels) - (2 * levels + 1)
    if levels < 1 or predicted < 1:
        raise TFCheckpointError(f"{where}: {len(kernels)} convolutions whose shapes do not form "
                                "a Wave-U-Net (down levels, bottleneck, up levels, outputs)")
    inferred = Inferred(
        channels=channels, levels=levels, initial_filters=filters, down_kernel=down_kernel,
        up_kernel=kernels[levels + 1][0], output_kernel=kernels[2 * levels + 1][0],
        predicted=predicted, upsampling="learned" if orig.interps else "linear",
    )
    if orig.interps and len(orig.interps) != levels:
        raise TFCheckpointError(f"{where}: {len(orig.interps)} learned upsampling weights for "
                                f"{levels} up levels")
    return inferred


# --------------------------------------------------------------------------------------------
# Which waveunet settings describe it
# --------------------------------------------------------------------------------------------


def _preset_configs() -> dict[str, DictConfig]:
    return {name: compose("config", [f"model={name}"]) for name in PAPER_MODELS}


def _matches(cfg: DictConfig, inferred: Inferred) -> bool:
    model = cfg.model
    same = all(model[key] == value if key != "sources" else list(model[key]) == value
               for key, value in inferred.model_settings().items())
    return same and inferred.task is not None and cfg.output.type == inferred.task[0]


def _choices(candidates: list[str], presets: dict[str, DictConfig], key: str) -> str:
    parts = [f"{PAPER_NAMES[c]}: model.{key}={str(presets[c].model[key]).lower()}"
             for c in candidates]
    return ", ".join(parts) + "; or --model " + " / ".join(candidates)


# What the shapes cannot tell: (key, what it is, the choices when no paper model fits).
_UNDECIDABLE = (
    ("context", "the context",
     "model.context=true: valid convolutions, as M3-M6; false: 'same' padding, as M1/M2"),
    ("sample_rate_hz", "the sample rate",
     "model.sample_rate_hz=22050, as M1-M6, or 44100, as M5-HighSR"),
)


def _given_value(overrides: Sequence[str], key: str):
    text = next(o.split("=", 1)[1] for o in overrides if override_key(o) == key)
    return OmegaConf.create(f"v: {text}").v  # typed as Hydra reads it


def _undecided(inferred: Inferred, overrides: Sequence[str],
               presets: dict[str, DictConfig]) -> tuple[list[str], list[str]]:
    """The paper models that fit the shapes and the overrides, and what is still open."""
    given = {override_key(o) for o in overrides}
    candidates = [name for name, cfg in presets.items() if _matches(cfg, inferred)]
    for key, _, _ in _UNDECIDABLE:  # the user's choice narrows the paper models
        if f"model.{key}" in given:
            value = _given_value(overrides, f"model.{key}")
            candidates = [c for c in candidates if presets[c].model[key] == value]
    open_items = []
    for key, what, generic in _UNDECIDABLE:
        if f"model.{key}" not in given and len({presets[c].model[key] for c in candidates}) != 1:
            choices = _choices(candidates, presets, key) if candidates else generic
            open_items.append(f"{what} ({choices})")
    if not given & {"output", "output.activation"}:
        open_items.append("the output activation (output.activation=tanh, as the published "
                          "models were trained, or output.activation=linear)")
    return candidates, open_items


def settings_from_shapes(
    orig: OriginalVariables, where: str, overrides: Sequence[str]
) -> DictConfig:
    """Compose the config the shapes (and the user's overrides) describe, or say what is missing."""
    inferred = infer_architecture(orig, where)
    given = {override_key(o) for o in overrides}
    if inferred.task is None and "model.sources" not in given:
        raise ConfigError(
            f"{where}: {inferred.predicted} output convolutions: the original separated 2 "
            "sources (1 output convolution with output.type=difference, 2 with direct) or 4 "
            "(3 or 4); name them with model.sources=[...] and output.type=..."
        )
    candidates, open_items = _undecided(inferred, overrides, _preset_configs())
    if open_items:
        raise ConfigError(f"{where}: the shapes say {inferred.summary()}; they cannot tell "
                          f"{'; '.join(open_items)}")
    preset = candidates[0] if len(candidates) == 1 else "base"
    implied = [f"model.{key}={'[' + ','.join(value) + ']' if isinstance(value, list) else value}"
               for key, value in inferred.model_settings().items() if f"model.{key}" not in given]
    if inferred.task and not given & {"output", "output.type"}:
        implied.append(f"output.type={inferred.task[0]}")
    return compose("config", [f"model={preset}", *implied, *overrides])


def check_convertible(cfg: DictConfig) -> None:
    """Refuse settings under which our model would not compute the original's function."""
    output, model = cfg.output, cfg.model
    if output.activation not in ORIGINAL_ACTIVATIONS:
        raise ConfigError(f"output.activation={output.activation}: the original Wave-U-Net had "
                          f"only {' and '.join(ORIGINAL_ACTIVATIONS)} outputs")
    if (output.low, output.high) != (-1.0, 1.0):
        raise ConfigError(f"output.low={output.low}, output.high={output.high}: the original's "
                          "outputs are bounded to [-1, 1]")
    if model.upsampling == "learned" and not model.context:
        raise ConfigError("model.upsampling=learned with model.context=false: the original pads "
                          "the last right neighbour with zeros, waveunet repeats the last sample; "
                          "the original's learned models use context (M5, M5-HighSR)")
    if model.context and model.output_kernel != 1:
        raise ConfigError(f"model.output_kernel={model.output_kernel} with context: the original "
                          "crops wider output convolutions, waveunet pads them; it used 1")


# --------------------------------------------------------------------------------------------
# Variables -> parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    tf_name: str
    role: str
    parameter: torch.nn.Parameter

    @property
    def tf_shape(self) -> tuple[int, ...]:
        shape = tuple(self.parameter.shape)
        if self.tf_name.startswith("separator/interp_"):
            return shape[:1]  # (channels, 1) here, a vector there
        return shape[::-1]  # torch [out, in, kernel] <-> TF [kernel, in, out]; bias (out,)


def assignments(model: WaveUNet) -> list[Assignment]:
    """Every parameter of ``model`` with the original's variable that holds it."""
    convs = [(f"down level {i} convolution", conv) for i, conv in enumerate(model.down)]
    convs.append(("bottleneck convolution", model.bottleneck))
    convs += [(f"up level {i} convolution", conv) for i, conv in enumerate(model.up)]
    convs += [(f"output convolution for '{source}'", conv)
              for source, conv in zip(model.sources, model.head.convs, strict=False)]
    result = []
    for number, (role, conv) in enumerate(convs):
        result.append(Assignment(f"{_conv_prefix(number)}/kernel", role, conv.weight))
        result.append(Assignment(f"{_conv_prefix(number)}/bias", role, conv.bias))
    for level, logits in enumerate(model.upsample_logits):
        result.append(Assignment(f"separator/interp_{level}",
                                 f"learned upsampling of up level {level}", logits))
    return result


def load_original_weights(model: WaveUNet, ckpt: TFCheckpoint, orig: OriginalVariables,
                          hint: str) -> int:
    """Copy the checkpoint's weights into ``model``; one-line errors for anything that differs."""
    where = ckpt.index_path
    plan = assignments(model)
    expected = {a.tf_name for a in plan}
    present = {f"{c}/{part}" for c in orig.convs for part in ("kernel", "bias")} | set(orig.interps)
    for a in plan:
        if a.tf_name not in present:
            raise TFCheckpointError(f"{where}: missing variable '{a.tf_name}' ({a.role}) that "
                                    f"the model needs{hint}")
        shape = orig.shapes[a.tf_name]
        if shape != a.tf_shape:
            raise TFCheckpointError(f"{where}: '{a.tf_name}' ({a.role}) has shape {list(shape)}, "
                                    f"the model expects {list(a.tf_shape)}{hint}")
    extra = sorted(present - expected, key=lambda n: (len(n), n))
    if extra:
        raise TFCheckpointError(f"{where}: the model has no place for '{extra[0]}' "
                                f"({len(extra)} variable(s) left over){hint}")
    with torch.no_grad():
        for a in plan:
            value = torch.from_numpy(ckpt.read(a.tf_name).astype(np.float32))
            if value.dim() == 3:
                value = value.permute(2, 1, 0)
            a.parameter.copy_(value.reshape(a.parameter.shape))
    return len(plan)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    model: WaveUNet
    config: DictConfig
    provenance: dict


def convert(path: str | Path, model: str | None = None, overrides: Sequence[str] = ()) -> Imported:
    """Read an original Wave-U-Net TensorFlow checkpoint into a :class:`WaveUNet` (eval mode)."""
    overrides = list(overrides)
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override '{o}': expected key=value, e.g. model.context=true")
    chosen = [o for o in overrides if override_key(o) == "model"]
    if chosen:  # model=PRESET among the overrides means --model PRESET
        if model is not None or len(chosen) > 1:
            raise ConfigError("give the model preset once (--model PRESET or model=PRESET)")
        model = chosen[0].split("=", 1)[1]
        overrides.remove(chosen[0])
    ckpt = TFCheckpoint(path)
    orig = original_variables(ckpt)
    where = str(ckpt.prefix)
    if model is None:
        cfg = settings_from_shapes(orig, where, overrides)
        hint = ""
    else:
        cfg = compose("config", [f"model={model}", *overrides])
        try:
            hint = f" (the checkpoint: {infer_architecture(orig, where).summary()})"
        except TFCheckpointError:
            hint = ""
    check_convertible(cfg)
    net = build_model(cfg.model, cfg.output)
    count = load_original_weights(net, ckpt, orig, hint)
    provenance = {
        "source": "tensorflow checkpoint of the original Wave-U-Net",
        "file": ckpt.name,
        "step": orig.step,
        "model": model,
        "overrides": list(overrides),
        "variables": count,
        "ignored_variables": len(orig.ignored),
    }
    return Imported(net.eval(), cfg, provenance)


def import_tf(path: str | Path, out: str | Path, model: str | None = None,
              overrides: Sequence[str] = (), force: bool = False) -> Imported:
    """Convert, and write ``out`` (an existing file only with ``force``; missing parent
    folders are made, as the other commands make their output folders)."""
    out = Path(out)
    if out.is_dir():  # --force or not: a folder is never replaced
        raise ConfigError(f"-o {out} is a directory; give a file name ending in .pt")
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists (--force replaces it)")
    imported = convert(path, model, overrides)
    config = OmegaConf.to_container(imported.config, resolve=True)
    config["import"] = imported.provenance
    save_checkpoint(out, imported.model, config=config)
    return imported


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="waveunet import-tf",
        description="Convert a TensorFlow checkpoint of the original Wave-U-Net (f90/Wave-U-Net)\n"
        "into a waveunet checkpoint for 'waveunet separate' and 'waveunet evaluate'.\n"
        "No TensorFlow needed.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prefix", metavar="PREFIX",
                   help="checkpoint prefix (e.g. checkpoints/full_44KHz/full_44KHz-236118), its "
                   ".index file, or its folder")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="model/output settings, e.g. model.levels=4 output=tanh_difference")
    p.add_argument("--model", metavar="PRESET", default=None,
                   help="the architecture as a model preset (m4 = baseline_stereo, "
                   "m6 = full_multi_instrument, m5_highsr = full_44KHz); default: from the shapes")
    p.add_argument("-o", "--out", required=True, metavar="FILE.pt",
                   help="checkpoint file to write (missing folders above it are made)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing FILE.pt")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    imported = import_tf(args.prefix, args.out, args.model, args.overrides, args.force)
    net, info = imported.model, imported.provenance
    step = "no step" if info["step"] is None else f"step {info['step']}"
    print(f"{info['file']} ({step}) -> {args.out}: {net.config.name}, "
          f"{', '.join(net.sources)}, {net.output_mode.name}, {net.sample_rate_hz} Hz, "
          f"{net.num_parameters()} parameters from {info['variables']} variables "
          f"({info['ignored_variables']} optimiser variables ignored)")
    return 0
