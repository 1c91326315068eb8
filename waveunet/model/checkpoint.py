"""Self-describing checkpoints: the weights travel with everything needed to use them.

A checkpoint holds the model's architecture and output mode (``model.describe()``),
its sample rate and sources, the weights, and optionally the resolved run
config and the training state. ``load_model`` rebuilds the network from the file
alone, so nobody has to repeat the hyper-parameters it was trained with (the
original Wave-U-Net's most common support question).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, space_checked
from ..files import atomic_write
from ..version import __version__
from .network import WaveUNet, model_from_description

FORMAT = "waveunet-checkpoint"
FORMAT_VERSION = 1


def unwrap(model: nn.Module) -> WaveUNet:
    """The WaveUNet inside DDP / torch.compile wrappers."""
    while True:
        if isinstance(model, WaveUNet):
            return model
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"not a WaveUNet: {type(model).__name__}")
        model = inner


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file: never a half-written checkpoint.

    A write that fails for lack of space (full disk, quota, file-size limit) is a
    :class:`~waveunet.errors.DiskFullError` naming ``path``; the old file stays as it was.
    """

    def write(tmp: str) -> None:
        # Through a Python file: torch's own file writer turns a failed write into a
        # RuntimeError without the OS error; this way the OSError is its context.
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    with space_checked(path):
        atomic_write(path, write)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    config: dict | None = None,
    training: dict | None = None,
) -> Path:
    model = unwrap(model)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "waveunet_version": __version__,
        **model.describe(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config,
        "training": training,
    }
    atomic_torch_save(payload, path)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint file; errors name the file and what is wrong."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"{path}: a directory without best.pt or last.pt")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        raise CheckpointError(
            f"{path}: not a readable waveunet checkpoint ({exc.__class__.__name__})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a waveunet checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} (written by waveunet "
            f"{payload.get('waveunet_version', '?')}); this waveunet {__version__} reads "
            f"version {FORMAT_VERSION}"
        )
    payload["path"] = str(path)
    return payload


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> WaveUNet:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode."""
    return model_from_checkpoint(load_checkpoint(path), device)


def model_from_checkpoint(payload: dict, device: str | torch.device = "cpu") -> WaveUNet:
    """The model of a checkpoint already read with :func:`load_checkpoint`, in eval mode."""
    try:
        model = model_from_description(payload)
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise CheckpointError(
            f"{payload['path']}: weights do not fit the described model ({exc})"
        ) from exc
    return model.to(device).eval()
