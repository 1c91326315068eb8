"""What the separation tests share: a tiny checkpoint, songs on disk, the command, listings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from waveunet.cli import main as cli_main
from waveunet.model.checkpoint import save_checkpoint
from waveunet.model.network import build_model


def make_checkpoint(path: Path, seed: int = 0, config: dict | None = None,
                    rate: int = 22050) -> Path:
    """A 3-level, 4-filter stereo tanh_difference model at ``rate`` (untrained, ``seed``)."""
    torch.manual_seed(seed)
    model = build_model(
        {"levels": 3, "initial_filters": 4, "output_samples": 256, "channels": 2,
         "sample_rate_hz": rate},
        {"type": "difference", "activation": "tanh"},
    )
    return save_checkpoint(path, model, config=config)


def write_song(path: Path, audio: np.ndarray, rate: int = 22050, **kwargs) -> Path:
    """``audio`` (channels, samples) written with soundfile (its folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, rate, **kwargs)
    return path


def run(*args) -> int:
    """``waveunet separate ARGS`` in this process; its exit status."""
    return cli_main(["separate", *map(str, args)])


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
