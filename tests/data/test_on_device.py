"""data.on_device: the training tracks kept on the training device give the loader's examples."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from helpers import training_overrides

from waveunet.data import Track, TrainingExamples, collate_batch
from waveunet.data.on_device import DeviceTracks, storage_bytes
from waveunet.errors import ConfigError
from waveunet.settings.compose import compose
from waveunet.settings.schema import DataLoadingConfig, picked
from waveunet.training.builder import ResumableSampler
from waveunet.training.distributed import DistInfo
from waveunet.training.solver import Solver


def make_tracks(lengths: list[int], seed: int = 0, weights=None, sampling="per_second"):
    rng = np.random.default_rng(seed)
    tracks = []
    for i, n in enumerate(lengths):
        sources = rng.uniform(-0.9, 0.9, size=(2, 2, n)).astype(np.float32)
        tracks.append(Track(f"t{i}", sources.sum(0), sources, ["accompaniment", "vocals"], 22050,
                            weight=1.0 if weights is None else weights[i], sampling=sampling))
    return tracks


def loader_batch(examples: TrainingExamples, indices: list[int]) -> torch.Tensor:
    return collate_batch(examples.__getitems__(indices))


@pytest.mark.parametrize("sampling,weights", [("per_second", None),
                                              ("per_track", [1.0, 3.0, 0.5, 2.0])])
def test_float32_device_batches_equal_the_loader_batches(sampling, weights):
    # one track shorter than the input: zero-padded, centred, in both paths
    tracks = make_tracks([5000, 300, 2200, 999], weights=weights, sampling=sampling)
    examples = TrainingExamples(tracks, input_samples=1001, examples_per_epoch=64, seed=7)
    device = DeviceTracks(tracks, torch.device("cpu"), "float32")
    for epoch in (0, 3):
        examples.set_epoch(epoch)
        indices = list(range(64))
        got = torch.cat(list(device.batches(examples, indices, batch_size=16)))
        expected = loader_batch(examples, indices)
        assert got.dtype == torch.float32 and got.shape == (64, 2, 2, 1001)
        assert torch.equal(got, expected)
    short = [examples.locate(i) for i in range(64)]
    assert any(track == 1 for track, _ in short)  # the short track was drawn and compared


def test_sixteen_bit_storage_is_close_and_takes_half_the_memory():
    tracks = make_tracks([4000, 3000])
    examples = TrainingExamples(tracks, input_samples=800, examples_per_epoch=32, seed=1)
    expected = loader_batch(examples, list(range(32)))
    full = DeviceTracks(tracks, torch.device("cpu"), "float32")
    for dtype, tolerance in (("int16", 1.0 / 32767), ("bfloat16", 2.0**-8)):
        stored = DeviceTracks(tracks, torch.device("cpu"), dtype)
        assert stored.nbytes * 2 == full.nbytes == storage_bytes(tracks, "float32")
        got = torch.cat(list(stored.batches(examples, range(32), batch_size=8)))
        assert not torch.equal(got, expected)  # really stored in 16 bits
        assert (got - expected).abs().max() <= tolerance  # |x| < 1: within one step


@pytest.mark.parametrize("value,dtype,problem", [
    ("sometimes", "float32", "data.on_device"),
    (1, "float32", "data.on_device"),
    (True, "float8", "data.on_device_dtype"),
    ("auto", "int16", "needs data.on_device=true"),
    (False, "bfloat16", "needs data.on_device=true"),
])
def test_the_settings_are_checked(value, dtype, problem):
    with pytest.raises(ConfigError, match=problem):
        picked(DataLoadingConfig, {"on_device": value, "on_device_dtype": dtype}, "data.")


def overrides(cache, *extra: str) -> list[str]:
    return training_overrides(cache, "trainer.steps_per_epoch=5", "trainer.max_epochs=2",
                              "trainer.log_every_steps=5", "trainer.checkpoint_every_steps=5",
                              "data.augmentations=[gain,channelswap,signflip]", *extra)


def train_losses(solver: Solver) -> list[float]:
    losses = []
    real = solver.train_step

    def step(mixture, targets):
        value, output = real(mixture, targets)
        losses.append(value)
        return value, output

    solver.train_step = step
    solver.train()
    return losses


def test_training_on_the_device_equals_training_from_the_loader(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="waveunet.train"):
        loader = Solver(compose("train", overrides(tmp_path / "cache", "data.on_device=false")),
                        tmp_path / "loader")
        on_device = Solver(compose("train", overrides(tmp_path / "cache", "data.on_device=true")),
                           tmp_path / "device")
    said = [r.getMessage() for r in caplog.records if "training data" in r.getMessage()]
    assert said[0].startswith("training data: DataLoader with 0 worker(s)")
    assert said[0].endswith("(data.on_device=false)")
    assert said[1].startswith("training data on cpu: ") and "MiB (float32)" in said[1]
    assert said[1].endswith("no loader workers (data.on_device=true)")
    assert on_device.data.on_device is not None and loader.data.on_device is None
    assert train_losses(on_device) == train_losses(loader)  # the same batches, bit for bit


def test_auto_uses_the_loader_on_the_cpu_and_says_why(tmp_path):
    solver = Solver(compose("train", overrides(tmp_path / "cache", "data.on_device=auto")),
                    None)
    assert solver.data.on_device is None
    assert solver.data.description.endswith("(data.on_device=auto: the training device is cpu)")


def test_each_process_of_a_distributed_run_gets_its_share_of_each_batch():
    tracks = make_tracks([3000, 2000])
    examples = TrainingExamples(tracks, input_samples=500, examples_per_epoch=16, seed=3)
    device = DeviceTracks(tracks, torch.device("cpu"))
    whole = torch.cat(list(device.batches(examples, range(16), batch_size=8)))
    shares = []
    for rank in range(2):
        sampler = ResumableSampler(16, 8, 0, DistInfo(rank=rank, world_size=2))
        shares.append(list(device.batches(examples, sampler, batch_size=4)))
    for step in range(2):
        together = torch.cat([shares[0][step], shares[1][step]])
        assert torch.equal(together, whole[step * 8:(step + 1) * 8])
