"""Measurement inputs and outputs: (S, C, T) arrays in, plain JSON values out.

Every measurement takes numpy arrays or torch tensors (CPU or GPU) of shape (sources, channels,
samples) and computes in float64; the helpers here convert and check them (errors name the
argument). Results become JSON through :func:`waveunet.files.dumps_json`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError

ArrayLike = torch.Tensor | np.ndarray


def as_float64(x: ArrayLike, name: str, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        raise ConfigError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if device is not None:
        t = t.to(device)
    return t.to(torch.float64)


def check_sct(t: torch.Tensor, name: str) -> None:
    if t.ndim != 3:
        raise ConfigError(
            f"{name}: expected shape (sources, channels, samples), got {tuple(t.shape)}"
        )


def pad_or_truncate(estimates: torch.Tensor, n_samples: int) -> torch.Tensor:
    """museval.pad_or_truncate: estimates are cut or zero-padded at the end to the reference
    length."""
    t = estimates.shape[-1]
    if t > n_samples:
        return estimates[..., :n_samples]
    if t < n_samples:
        return torch.nn.functional.pad(estimates, (0, n_samples - t))
    return estimates


def prepare_pair(
    references: ArrayLike, estimates: ArrayLike
) -> tuple[torch.Tensor, torch.Tensor]:
    ref = as_float64(references, "references")
    est = as_float64(estimates, "estimates", device=ref.device)
    check_sct(ref, "references")
    check_sct(est, "estimates")
    if ref.shape[:2] != est.shape[:2]:
        raise ConfigError(
            f"estimates: (sources, channels) {tuple(est.shape[:2])} differ from references "
            f"{tuple(ref.shape[:2])}"
        )
    return ref, pad_or_truncate(est, ref.shape[-1])


def check_bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bounds: expected (low, high), got {bounds!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"bounds: need finite low < high, got {bounds!r}")
    return low, high


def float_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def db(ratio: float, power: bool = False) -> float | None:
    if not (math.isfinite(ratio) and ratio > 0):
        return None
    return (10.0 if power else 20.0) * math.log10(ratio)
