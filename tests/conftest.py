"""Shared fixtures: tiny generated datasets built under pytest's tmp folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from waveunet.data.synth import generate_dataset


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip where no CUDA GPU is visible (``make gpu-check`` runs them)."""
    import os

    import torch

    if torch.cuda.is_available():
        return
    if os.environ.get("WAVEUNET_REQUIRE_CUDA") == "1":  # make gpu-check: a skip is a failure
        raise pytest.UsageError("WAVEUNET_REQUIRE_CUDA=1 but torch sees no CUDA GPU")
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated MUSDB18-HQ-layout dataset: 3 train + 1 test tracks of 2 s, 44.1 kHz stereo.

    Session-scoped and shared: tests must not modify it (copy it first).
    """
    return generate_dataset(tmp_path_factory.mktemp("synth") / "dataset", tracks=3, seconds=2.0,
                            seed=1, test_tracks=1)


@pytest.fixture
def make_data_cfg(tmp_path: Path):
    """Build a data config like configs/data/*.yaml, with the cache under this test's tmp_path."""

    def make(format: str = "musdb_hq", root: Path | str | None = None, **overrides) -> DictConfig:
        cfg = {"name": format, "format": format, "root": None if root is None else str(root),
               "cache_dir": str(tmp_path / "cache"), "valid_tracks": None, "valid_fraction": 0.0,
               "augmentations": [], "workers": 0}
        cfg.update(overrides)
        return OmegaConf.create(cfg)

    return make


def tiny_training_overrides(cache: Path) -> list[str]:
    """Model and data overrides that make a training run take seconds (train and compare tests)."""
    return [
        "model.levels=3",
        "model.initial_filters=6",
        "model.output_samples=1024",
        "data.tracks=3",
        "data.test_tracks=1",
        "data.seconds=3",
        "data.valid_fraction=0.34",
        f"data.cache_dir={cache}",
        "optim.batch_size=4",
    ]


def dead_pid() -> int:
    """The PID of a process that has ended (what a SIGKILL'd writer's temporaries carry)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
