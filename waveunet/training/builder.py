"""A training run's parts, built from its config: the one place the trainer's parts are made.

:func:`build_parts` checks the run's typed settings (:mod:`waveunet.settings.schema`), seeds the
random generators, and makes what :class:`waveunet.training.solver.Solver` works with: the model
(and the compiled / DistributedDataParallel network around it), the optimiser, the augmentation, the
data (training examples and validation tracks) and the logger. ``waveunet train`` and ``waveunet
compare`` train with all of them; an experiment that trains on made-up batches (``waveunet
saturation``) asks for ``data=False`` and no run folder, and drives the same solver's
:meth:`~waveunet.training.solver.Solver.train_step`.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Sampler

from .. import data as data_lib
from ..data.augment import augmentation_from_config, check_batch
from ..data.on_device import DeviceTracks, storage_bytes
from ..devices import resolve_device
from ..errors import ConfigError
from ..model.losses import check_loss
from ..model.network import WaveUNet, build_model
from ..settings.schema import (
    DataLoadingConfig,
    LossConfig,
    OptimConfig,
    RunConfig,
    TrainerConfig,
    picked,
    typed,
)
from .distributed import DistInfo, barrier
from .run_log import RunLogger

log = logging.getLogger("waveunet.train")  # the command's name: its log lines say what ran

@dataclass
class RunSettings:
    """The checked settings a training run reads (the config keeps the rest)."""

    seed: int
    trainer: TrainerConfig
    optim: OptimConfig
    loss: LossConfig
    data: DataLoadingConfig


def run_settings(cfg: DictConfig, world_size: int = 1) -> RunSettings:
    """Check a training config's settings; every error names its key."""
    settings = RunSettings(picked(RunConfig, cfg).seed,
                           typed(TrainerConfig, cfg.trainer, "trainer."),
                           typed(OptimConfig, cfg.optim, "optim."),
                           typed(LossConfig, cfg.loss, "loss."),
                           picked(DataLoadingConfig, cfg.data, "data."))
    if settings.optim.batch_size % world_size:
        raise ConfigError(f"optim.batch_size={settings.optim.batch_size} must be divisible by "
                          f"the {world_size} processes")
    return settings


def seed_everything(seed: int) -> None:
    """torch, Python and numpy generators from one seed (model initialisation uses torch's)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def build_optimizer(optim: OptimConfig, params: Any, lr: float) -> torch.optim.Optimizer:
    """``optim.name``'s optimiser at learning rate ``lr``."""
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=optim.weight_decay)
    # fused: one kernel for all parameters instead of a loop of element-wise ops
    # (an unfused Adam step was ~17% of an m5_highsr step at batch 1 on the CPU).
    return torch.optim.Adam(params, lr=lr, betas=tuple(optim.betas),
                            weight_decay=optim.weight_decay, fused=True)


class ResumableSampler(Sampler[int]):
    """Indices ``start..n-1`` of one epoch, this rank's share of each global batch.

    Global batch ``s`` is indices ``[s*B, (s+1)*B)``; rank r takes the r-th slice
    of it, so the union over ranks is exactly the examples one process would train on.
    """

    def __init__(self, num_examples: int, batch_size: int, start_step: int, dist_info: DistInfo):
        self.num_examples, self.batch_size = num_examples, batch_size
        self.start_step, self.dist = start_step, dist_info

    def __iter__(self):
        per_rank = self.batch_size // self.dist.world_size
        for step in range(self.start_step, self.num_examples // self.batch_size):
            first = step * self.batch_size + self.dist.rank * per_rank
            yield from range(first, first + per_rank)

    def __len__(self) -> int:
        steps = self.num_examples // self.batch_size - self.start_step
        return max(0, steps) * (self.batch_size // self.dist.world_size)


class TrainingData:
    """A run's dataset: training tracks (examples drawn per epoch) and validation tracks.

    The examples come from a DataLoader over the memory-mapped cache, or, with
    ``data.on_device``, from the tracks kept on the training device
    (:class:`~waveunet.data.on_device.DeviceTracks`); :meth:`describe` says which and why.
    """

    def __init__(self, cfg: DictConfig, model: WaveUNet, settings: RunSettings,
                 dist_info: DistInfo, device: torch.device | None = None):
        split = dict(sample_rate_hz=model.sample_rate_hz, channels=model.config.channels,
                     sources=list(model.sources),
                     progress=settings.trainer.progress and dist_info.is_main)
        self.cfg, self.model, self.settings, self.dist = cfg, model, settings, dist_info
        self.workers = settings.data.workers
        on_device, dtype = settings.data.on_device, settings.data.on_device_dtype
        if not dist_info.is_main:
            barrier(dist_info)  # rank 0 generates / decodes the dataset into the cache first
        self.train_tracks = data_lib.load_split(cfg.data, "train", **split)
        self.valid_tracks = data_lib.load_split(cfg.data, "valid", **split)
        if dist_info.is_main:
            barrier(dist_info)
        max_tracks = settings.trainer.validation.max_tracks
        if max_tracks is not None:
            self.valid_tracks = self.valid_tracks[:max_tracks]
        for name, tracks in (("training", self.train_tracks), ("validation", self.valid_tracks)):
            data_lib.check_track_lengths(tracks, model.input_samples, name, dist_info.is_main)
        device = torch.device("cpu") if device is None else device
        use, why = _choose_path(on_device, dtype, self.train_tracks, device)
        self.on_device = DeviceTracks(self.train_tracks, device, dtype) if use else None
        self.description = self._describe(use, why, dtype, device)
        if dist_info.is_main:
            log.info("%s", self.description)

    def _describe(self, use: bool, why: str, dtype: str, device: torch.device) -> str:
        size = _size(storage_bytes(self.train_tracks, dtype if use else "float32"))
        if use:
            return (f"training data on {device}: {size} ({dtype}), crops drawn there, no loader "
                    f"workers ({why})")
        return (f"training data: DataLoader with {self.workers} worker(s) over the "
                f"memory-mapped cache ({size} float32) ({why})")

    def loader(self, epoch: int, start_step: int,
               batch_size: int) -> DataLoader | Iterator[torch.Tensor]:
        """The global batches ``start_step..`` of one epoch, this process's share of each."""
        seed = self.settings.seed
        examples = data_lib.TrainingExamples(
            self.train_tracks, self.model.input_samples,
            self.settings.trainer.steps_per_epoch * batch_size, seed)
        examples.set_epoch(epoch)
        sampler = ResumableSampler(len(examples), batch_size, start_step, self.dist)
        per_rank = batch_size // self.dist.world_size
        if self.on_device is not None:
            return self.on_device.batches(examples, sampler, per_rank)
        return data_lib.make_loader(examples, per_rank, workers=self.workers, shuffle=False,
                                    seed=seed + epoch, sampler=sampler)


def _choose_path(on_device: bool | str, dtype: str, tracks: list,
                 device: torch.device) -> tuple[bool, str]:
    """(keep the training tracks on the device?, why)."""
    if on_device is True:
        return True, "data.on_device=true"
    if on_device is False:
        return False, "data.on_device=false"
    if device.type != "cuda":
        return False, f"data.on_device=auto: the training device is {device.type}"
    free, _ = torch.cuda.mem_get_info(device)
    need = storage_bytes(tracks, dtype)
    # Half the free memory: the rest is the model's, its activations' and the optimiser's.
    if need <= free / 2:
        return True, f"data.on_device=auto: fits in half of the {_size(free)} free"
    return False, (f"data.on_device=auto: {_size(need)} does not fit in half of the {_size(free)} "
                   "free; data.on_device=true data.on_device_dtype=int16 needs half of it")


def _size(n_bytes: float) -> str:
    if n_bytes >= 2**30:
        return f"{n_bytes / 2**30:.2f} GiB"
    return f"{n_bytes / 2**20:.1f} MiB"


@dataclass
class SolverParts:
    """Everything :class:`waveunet.training.solver.Solver` works with."""

    settings: RunSettings
    dist: DistInfo
    device: torch.device
    model: WaveUNet
    network: nn.Module  # the model, or its compiled / DDP wrapper: what the step calls
    optimizer: torch.optim.Optimizer
    augment: nn.Module
    data: TrainingData | None
    logger: RunLogger


def build_parts(cfg: DictConfig, run_dir: str | os.PathLike | None, *, data: bool = True,
                dist_info: DistInfo | None = None) -> SolverParts:
    """The parts of one training run of ``cfg``; ``run_dir`` None: nothing is written."""
    dist_info = dist_info or DistInfo.from_env()
    settings = run_settings(cfg, dist_info.world_size)
    device = resolve_device(settings.trainer.device, local_rank=dist_info.local_rank,
                            setting="trainer.device")
    seed_everything(settings.seed)
    model = build_model(cfg.model, cfg.output).to(device)
    check_loss(settings.loss.name, model.head)
    optimizer = build_optimizer(settings.optim, model.parameters(), settings.optim.lr)
    augment = augmentation_from_config(cfg.data).to(device) if data else nn.Identity()
    if data:
        check_batch(augment, settings.optim.batch_size // dist_info.world_size)
    training_data = TrainingData(cfg, model, settings, dist_info, device) if data else None
    network: nn.Module = model
    if settings.trainer.compile:
        network = torch.compile(network)
    if dist_info.enabled:
        network = nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)
    logger = RunLogger(None if run_dir is None else Path(run_dir), enabled=dist_info.is_main)
    return SolverParts(settings, dist_info, device, model, network, optimizer, augment,
                       training_data, logger)
