"""``waveunet saturation``: the experiment of the background note, targets exactly at the bound.

Every target sample is 1.0 (``output.high``), so a ``tanh`` head can only approach it by
driving its pre-activation ``a`` to infinity, while ``tanh'(a)`` -- a factor of every
gradient -- vanishes. A ``clip`` head reaches 1.0 and then has exactly zero gradient; a
``linear`` head reaches 1.0 with a gradient that stays proportional to the error; the
cross-entropy loss on tanh's logits (``2a``) keeps a gradient ``2 (sigmoid(2a) - 1)`` that decays
only like ``exp(-2a)``.

Per step and per mode this records the output convolution's mean and max ``|a|``, the
largest ``|hidden activation|`` (forward hooks on every hidden convolution), the gradient norm
at the first convolution's weights, the loss, the MSE to the target (comparable across
losses) and the mean output. An optional *recovery* phase then moves every target to
``recovery_target`` (0.0: the centre): a network whose gradient has vanished cannot follow.

An experiment of :mod:`waveunet.experiments.base`. Each (optimiser, mode) is one training run: its
config is the ``train`` config composed from the command line's overrides plus only the mode's
output head and loss, the optimiser, ``saturation.batch_size`` / ``seed`` / ``device`` /
``precision``; :func:`waveunet.training.builder.build_parts` makes its model and optimiser (no
dataset) and :meth:`waveunet.training.solver.Solver.train_step` trains it on random inputs. Modes
share everything but the head: the same seed (the same initial hidden layers), the same random
inputs in the same order, the same optimiser and learning rate.

``waveunet saturation [overrides]`` (or ``python scripts/saturation.py``; settings in
``configs/saturation.yaml``) writes ``saturation.json``, ``saturation.md`` and one
``saturation_<optimiser>.png`` per optimiser to ``saturation.out_dir``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..errors import ConfigError
from ..files import atomic_write_text
from ..reporting.figures import saturation_panels
from ..reporting.format import number
from ..reporting.saturation import saturation_markdown
from ..settings.compose import compose
from ..settings.schema import OptimiserConfig, SaturationConfig, typed
from ..training.builder import build_parts
from ..training.solver import Solver
from .base import Experiment, Mode, parse_modes, shared_overrides

GENERATOR = "waveunet saturation"  # marks saturation.json as ours: a later run may replace it
JSON_NAME, MD_NAME = "saturation.json", "saturation.md"
RECORD_KEYS = ("loss", "mse_to_target", "pre_activation_mean_abs", "pre_activation_max_abs",
               "hidden_max_abs", "first_layer_grad_norm", "grad_norm", "output_mean", "output_min")
# Set per run from the saturation block; a command-line override of them would be overwritten.
PER_RUN_KEYS = ("output", "loss.name", "seed", "optim.name", "optim.lr", "optim.batch_size",
                "trainer.device", "trainer.precision")

HELP = """usage: waveunet saturation [key=value overrides] [--help | --cfg job]

Train each output head of saturation.modes with each optimiser of saturation.optimisers on
targets exactly at the bound 1.0 (then at the recovery target), recording per step the output
pre-activations, hidden activations, gradients and losses; write saturation.json,
saturation.md and one saturation_<optimiser>.png per optimiser to saturation.out_dir.

  waveunet saturation
  waveunet saturation saturation.steps=1000 'saturation.optimisers=[{name:adam,lr:1e-4}]'
  waveunet saturation saturation.device=cuda saturation.precision=bf16

Settings and their meaning: configs/saturation.yaml, on top of configs/train.yaml."""


class ActivationProbe:
    """Forward hooks on the hidden convolutions: the largest |output| of the last forward pass."""

    def __init__(self, model: nn.Module, exclude: Sequence[nn.Module]):
        skip = {id(m) for m in exclude}
        self.peak = torch.zeros(())
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if isinstance(m, nn.Conv1d) and id(m) not in skip]

    def _hook(self, module, inputs, output) -> None:
        self.peak = torch.maximum(self.peak, output.detach().abs().amax().cpu())

    def reset(self) -> None:
        self.peak = torch.zeros(())

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def run_config(overrides: Sequence[str], mode: Mode, optimiser: OptimiserConfig,
               s: SaturationConfig) -> DictConfig:
    """The training config of one run: the shared overrides + this mode's head and loss, the
    optimiser, and the saturation block's batch, seed, device and precision. No divergence
    limit on the pre-activations: their growth is what the experiment measures."""
    cfg = compose("saturation", [
        *overrides, *mode.run_overrides(), f"optim.name={optimiser.name}",
        f"optim.lr={optimiser.lr}", f"optim.batch_size={s.batch_size}", f"seed={s.seed}",
        f"trainer.device={s.device}", f"trainer.precision={s.precision}",
        "trainer.divergence.max_pre_activation=inf"])
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("saturation", None)
    return OmegaConf.create(container)


def run_mode(cfg: DictConfig, mode: Mode, optimiser: OptimiserConfig,
             s: SaturationConfig) -> dict[str, Any]:
    """Train one head on all-at-the-bound targets (then the recovery targets); per-step records."""
    parts = build_parts(cfg, None, data=False)
    model, device = parts.model, parts.device
    solver = Solver(cfg, None, parts)
    model.train()
    first = model.down[0]
    probe = ActivationProbe(model, exclude=list(model.head.convs))
    inputs = torch.Generator().manual_seed(s.seed + 1)  # the same inputs for every mode
    n_in, n_out = model.input_samples, model.output_samples
    channels = model.config.channels
    shape = (s.batch_size, len(model.sources), channels, n_out)
    high = float(model.output_mode.high)
    records: dict[str, list[float]] = {k: [] for k in RECORD_KEYS}
    t0 = time.perf_counter()
    for step in range(s.steps + s.recovery_steps):
        target_value = high if step < s.steps else float(s.recovery_target)
        x = s.input_std * torch.randn(s.batch_size, channels, n_in, generator=inputs)
        targets = torch.full(shape, target_value, device=device)
        probe.reset()
        loss_value, out = solver.train_step(x.to(device), targets)
        grads = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
        pre, est = out.pre_activation.detach(), out.estimates.detach()
        values = {
            "mse_to_target": (est - targets).square().mean(),
            "pre_activation_mean_abs": pre.abs().mean(),
            "pre_activation_max_abs": pre.abs().amax(),
            "hidden_max_abs": probe.peak,
            "first_layer_grad_norm": first.weight.grad.norm() if first.weight.grad is not None
            else torch.zeros(()),
            "grad_norm": torch.stack(grads).norm() if grads else torch.zeros(()),
            "output_mean": est.mean(),
            "output_min": est.amin(),
        }
        records["loss"].append(loss_value)
        measured = torch.stack([v.float().cpu() for v in values.values()]).tolist()
        for k, v in zip(values, measured, strict=True):
            records[k].append(v)
    probe.close()
    return {"mode": {"name": mode.name, "output": mode.output, "loss": mode.loss},
            "optimiser": {"name": optimiser.name, "lr": optimiser.lr}, "steps": s.steps,
            "recovery_steps": s.recovery_steps, "recovery_target": s.recovery_target,
            "wall_s": time.perf_counter() - t0, "records": records}


def _at(records: dict[str, list[float]], step: int) -> dict[str, float]:
    return {k: v[step] for k, v in records.items()}


def _finite(v: float) -> bool:
    return v is not None and math.isfinite(v)


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    """The numbers a reader wants: start, end of the bound phase, end of recovery."""
    rec, steps, total = run["records"], run["steps"], run["steps"] + run["recovery_steps"]
    out = {"first_step": _at(rec, 0), "end_of_bound_phase": _at(rec, steps - 1)}
    # Where the bound phase peaked: did |a| or hidden activations keep growing to the end?
    pre = np.array(rec["pre_activation_max_abs"][:steps])
    half = steps // 2
    out["pre_activation_growth_second_half"] = (
        float(pre[-1] / pre[half]) if pre[half] > 0 and _finite(pre[-1]) else None)
    grad = np.array(rec["first_layer_grad_norm"][:steps])
    out["first_layer_grad_ratio_end_to_start"] = float(grad[-1] / grad[0]) if grad[0] > 0 else None
    if run["recovery_steps"]:
        out["start_of_recovery"] = _at(rec, steps)
        out["end_of_recovery"] = _at(rec, total - 1)
        mse = rec["mse_to_target"]
        out["recovery_mse_ratio"] = mse[total - 1] / mse[steps] if mse[steps] > 0 else None
    return out


class Saturation(Experiment):
    """Every (optimiser, mode) trained on targets at the bound, then at the recovery target."""

    command_name = "saturation"
    json_name = JSON_NAME
    generator = GENERATOR
    report_name = MD_NAME
    help_text = HELP

    def __init__(self, cfg: DictConfig, overrides: Sequence[str] = (),
                 command: str | None = None):
        if cfg.get("saturation") is None:
            raise ConfigError("saturation: missing (compose configs/saturation.yaml)")
        self.settings = typed(SaturationConfig, cfg.saturation, "saturation.")
        self.modes = parse_modes(self.settings.modes, "saturation.modes", "mse", extra=False)
        self.overrides = shared_overrides(
            overrides, PER_RUN_KEYS, "set heads and losses with saturation.modes=[...], "
            "optimisers with saturation.optimisers=[...], and saturation.batch_size / seed / "
            "device / precision")
        s = self.settings
        # Every run's config, checked before the output folder and the first run.
        self.jobs = [(o, m, run_config(self.overrides, m, o, s))
                     for o in s.optimisers for m in self.modes]
        for _, mode, cfg in self.jobs:
            if cfg.output.high is None:
                raise ConfigError(f"saturation.modes: output preset {mode.output!r} (mode "
                                  f"{mode.name!r}) has no upper bound to aim at")
        super().__init__(s.out_dir, s.threads,
                         command or "waveunet saturation " + " ".join(self.overrides))

    def files(self) -> list[str]:
        return [JSON_NAME, MD_NAME, *(figure_name(o) for o in self.settings.optimisers)]

    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        s, jobs = self.settings, self.jobs
        runs = []
        for opt, mode, cfg in tqdm(jobs, desc="saturation", unit="run", disable=not s.progress):
            run = run_mode(cfg, mode, opt, s)
            run["summary"] = summarise(run)
            runs.append(run)
        model = build_parts(jobs[0][2], None, data=False).model
        return {
            "device": s.device, "precision": s.precision,
            "model": OmegaConf.to_container(jobs[0][2].model, resolve=True),
            "parameters": model.num_parameters(),
            "modes": [{"name": m.name, "output": m.output, "loss": m.loss} for m in self.modes],
            "optimisers": [{"name": o.name, "lr": o.lr} for o in s.optimisers],
            "steps": s.steps, "recovery_steps": s.recovery_steps,
            "recovery_target": s.recovery_target, "batch_size": s.batch_size,
            "input_std": s.input_std, "seed": s.seed,
            "figures": {o.name: figure_name(o) for o in s.optimisers}, "runs": runs,
        }

    def render(self, result: dict[str, Any]) -> None:
        s = self.settings
        for opt in result["optimisers"]:
            recovery = (f", then {number(s.recovery_target, 6, kind='g')} for "
                        f"{s.recovery_steps}" if s.recovery_steps else "")
            saturation_panels(
                self.out_dir / result["figures"][opt["name"]],
                [r for r in result["runs"] if r["optimiser"]["name"] == opt["name"]],
                f"All targets at the bound 1.0 for {s.steps} steps{recovery}: {opt['name']}, "
                f"lr {number(opt['lr'], 6, kind='g')}, batch {s.batch_size}, seed {s.seed}")
        atomic_write_text(self.out_dir / MD_NAME, saturation_markdown(result))


def figure_name(optimiser: OptimiserConfig) -> str:
    return f"saturation_{optimiser.name}.png"


main = Saturation.main


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
