"""Shared fixtures: tiny generated datasets built under pytest's tmp folders."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import waveunet
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


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """``cli("train", ...)``: ``waveunet`` run in this process, returned as a finished
    subprocess would be (``returncode``, ``stdout``, ``stderr``): the command line's behaviour
    without the cost of starting Python, torch and Hydra again."""

    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        returncode = waveunet(*args)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess([str(a) for a in args], returncode, out, err)

    return run
