"""The saturation experiment of the background note: targets exactly at the bound.

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

Modes share everything but the head: the same seed (the same initial hidden layers), the
same random inputs in the same order, the same optimiser and learning rate.

``waveunet compare experiment=saturation`` or ``python scripts/saturation.py [overrides]``;
writes ``saturation.json``, ``saturation.md`` and one ``saturation_<optimiser>.png`` per
optimiser to ``saturation.out_dir``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .compare import _threads
from .config import config_dir
from .errors import ConfigError
from .files import atomic_write_text
from .losses import check_loss, compute_loss
from .metrics import dumps_json
from .model import build_model
from .reporting.figures import saturation_panels
from .reporting.saturation import saturation_markdown

GENERATOR = "waveunet saturation"  # marks saturation.json as ours: a later run may replace it
JSON_NAME, MD_NAME = "saturation.json", "saturation.md"
RECORD_KEYS = ("loss", "mse_to_target", "pre_activation_mean_abs", "pre_activation_max_abs",
               "hidden_max_abs", "first_layer_grad_norm", "grad_norm", "output_mean", "output_min")


@dataclass(frozen=True)
class SaturationMode:
    name: str
    output: str  # a configs/output/ preset
    loss: str = "mse"


@dataclass(frozen=True)
class OptimiserSpec:
    name: str  # adam | sgd
    lr: float

    def build(self, params) -> torch.optim.Optimizer:
        if self.name == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr)
        raise ConfigError(f"saturation.optimisers: unknown optimiser {self.name!r} (adam, sgd)")


def output_preset(name: str) -> DictConfig:
    path = config_dir() / "output" / f"{name}.yaml"
    if not path.is_file():
        options = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"saturation.modes: unknown output preset {name!r} (available: {options})")
    return OmegaConf.load(path)


class ActivationProbe:
    """Forward hooks on the hidden convolutions: the largest |output| of the last forward pass."""

    def __init__(self, model: nn.Module, exclude: Sequence[nn.Module]):
        skip = {id(m) for m in exclude}
        self.peak = torch.zeros(())
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if isinstance(m, nn.Conv1d) and id(m) not in skip]

    def _hook(self, module, inputs, output) -> None:
        self.peak = torch.maximum(self.peak, output.detach().abs().amax())

    def reset(self) -> None:
        self.peak = torch.zeros(())

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def run_mode(model_cfg: Any, mode: SaturationMode, optimiser: OptimiserSpec, *, steps: int,
             recovery_steps: int, recovery_target: float, batch_size: int, input_std: float,
             seed: int, device: str = "cpu") -> dict[str, Any]:
    """Train one head on all-at-the-bound targets (then the recovery targets); per-step records."""
    torch.manual_seed(seed)
    model = build_model(model_cfg, output_preset(mode.output)).to(device)
    if model.output_mode.high is None:
        raise ConfigError(f"saturation: output preset {mode.output!r} has no upper bound to aim at")
    check_loss(mode.loss, model.head)
    model.train()
    opt = optimiser.build(model.parameters())
    first = model.down[0]
    probe = ActivationProbe(model, exclude=list(model.head.convs))
    inputs = torch.Generator().manual_seed(seed + 1)  # the same inputs for every mode
    n_in, n_out = model.input_samples, model.output_samples
    shape = (batch_size, len(model.sources), model.config.channels, n_out)
    high = float(model.output_mode.high)
    records: dict[str, list[float]] = {k: [] for k in RECORD_KEYS}
    t0 = time.perf_counter()
    for step in range(steps + recovery_steps):
        target_value = high if step < steps else float(recovery_target)
        x = (input_std * torch.randn(batch_size, model.config.channels, n_in, generator=inputs)).to(device)
        targets = torch.full(shape, target_value, device=device)
        probe.reset()
        out = model(x)
        loss = compute_loss(mode.loss, out, targets, model.head)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
        pre = out.pre_activation.detach()
        est = out.estimates.detach()
        values = {
            "loss": loss.detach(),
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
        for k, v in zip(values, torch.stack([v.float().cpu() for v in values.values()]).tolist(), strict=True):
            records[k].append(v)
        opt.step()
    probe.close()
    return {"mode": mode.__dict__, "optimiser": optimiser.__dict__, "steps": steps,
            "recovery_steps": recovery_steps, "recovery_target": recovery_target,
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


def run_saturation(model_cfg: Any, modes: Sequence[SaturationMode], optimisers: Sequence[OptimiserSpec],
                   out_dir: str | os.PathLike, *, steps: int, recovery_steps: int = 0,
                   recovery_target: float = 0.0, batch_size: int = 4, input_std: float = 0.3,
                   seed: int = 0, device: str = "cpu", command: str = "", progress: bool = True) -> dict[str, Any]:
    """Run every (optimiser, mode); write saturation.json / .md / _<optimiser>.png to ``out_dir``."""
    from tqdm import tqdm

    if steps < 2 or recovery_steps < 0 or batch_size < 1:
        raise ConfigError(f"saturation: need steps >= 2, recovery_steps >= 0 and batch_size >= 1 "
                          f"(got {steps}, {recovery_steps}, {batch_size})")
    if not modes or not optimisers:
        raise ConfigError("saturation: need at least one mode and one optimiser")
    for what, names in (("modes", [m.name for m in modes]), ("optimisers", [o.name for o in optimisers])):
        if len(set(names)) != len(names):
            raise ConfigError(f"saturation.{what}: names must be distinct, got {names}")
    out = Path(out_dir)
    _check_out_dir(out, optimisers)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = []
    jobs = [(o, m) for o in optimisers for m in modes]
    for opt, mode in tqdm(jobs, desc="saturation", unit="run", disable=not progress):
        run = run_mode(model_cfg, mode, opt, steps=steps, recovery_steps=recovery_steps,
                       recovery_target=recovery_target, batch_size=batch_size, input_std=input_std,
                       seed=seed, device=device)
        run["summary"] = summarise(run)
        runs.append(run)
    figures = {}
    for opt in optimisers:
        name = f"saturation_{opt.name}.png"
        figures[opt.name] = name
        saturation_panels(out / name, [r for r in runs if r["optimiser"]["name"] == opt.name],
             f"All targets at the bound 1.0 for {steps} steps"
             + (f", then {recovery_target:g} for {recovery_steps}" if recovery_steps else "")
             + f": {opt.name}, lr {opt.lr:g}, batch {batch_size}, seed {seed}")
    model = build_model(model_cfg, output_preset(modes[0].output))
    result = {
        "generator": GENERATOR,
        "command": command,
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, device {device}",
        "model": OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg),
        "parameters": model.num_parameters(),
        "modes": [m.__dict__ for m in modes], "optimisers": [o.__dict__ for o in optimisers],
        "steps": steps, "recovery_steps": recovery_steps, "recovery_target": recovery_target,
        "batch_size": batch_size, "input_std": input_std, "seed": seed,
        "wall_s": time.perf_counter() - t0, "figures": figures, "runs": runs,
    }
    atomic_write_text(str(out / JSON_NAME), dumps_json(result))
    atomic_write_text(str(out / MD_NAME), saturation_markdown(result))
    result["out_dir"] = str(out.resolve())
    return result


def _check_out_dir(out: Path, optimisers: Sequence[OptimiserSpec]) -> None:
    """Refuse to replace saturation.json / .md / _<optimiser>.png that an earlier run here did not write."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"saturation.out_dir: {out} exists and is not a directory")
    ours = [JSON_NAME, MD_NAME, *(f"saturation_{o.name}.png" for o in optimisers)]
    present = [n for n in ours if (out / n).exists()]
    if not present:
        return
    try:
        previous = json.loads((out / JSON_NAME).read_text())
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict) or previous.get("generator") != GENERATOR:
        raise ConfigError(f"saturation.out_dir: {out} holds {', '.join(present)} not written by the "
                          "saturation experiment; choose another saturation.out_dir")


def run_from_config(cfg: DictConfig, command: str = "") -> dict[str, Any]:
    """``waveunet compare experiment=saturation``: the ``saturation`` block + the ``model`` group."""
    s = cfg.get("saturation")
    if s is None:
        raise ConfigError("saturation: missing settings block (use experiment=saturation)")
    modes = []
    for i, entry in enumerate(s.get("modes") or []):
        entry = dict(entry)
        unknown = sorted(set(entry) - {"name", "output", "loss"})
        if unknown:
            raise ConfigError(f"saturation.modes[{i}]: unknown key(s) {', '.join(unknown)} (name, output, loss)")
        output = str(entry.get("output"))
        modes.append(SaturationMode(str(entry.get("name") or output), output, str(entry.get("loss") or "mse")))
    threads = _threads(s.get("threads"), "saturation.threads")
    optimisers = [OptimiserSpec(str(o["name"]), float(o["lr"])) for o in (s.get("optimisers") or [])]
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return run_saturation(
            cfg.model, modes, optimisers, str(s.out_dir), steps=int(s.steps),
            recovery_steps=int(s.get("recovery_steps", 0)), recovery_target=float(s.get("recovery_target", 0.0)),
            batch_size=int(s.batch_size), input_std=float(s.input_std), seed=int(s.seed),
            device=str(s.get("device", "cpu")), command=command, progress=bool(s.get("progress", True)))
    finally:
        torch.set_num_threads(previous)


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
