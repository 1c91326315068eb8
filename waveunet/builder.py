"""A training run's parts, built from its config: the one place the trainer's parts are made.

:func:`build_parts` checks the run's typed settings (:mod:`waveunet.settings`), seeds the random
generators, and makes what :class:`waveunet.solver.Solver` works with: the model (and the
compiled / DistributedDataParallel network around it), the optimiser, the augmentation, the
data (training examples and validation tracks) and the logger. ``waveunet train`` and
``waveunet compare`` train with all of them; an experiment that trains on made-up batches
(``waveunet saturation``) asks for ``data=False`` and no run folder, and drives the same
solver's :meth:`~waveunet.solver.Solver.train_step`.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Sampler

from . import data as data_lib
from .augment import augmentation_from_config, check_batch
from .errors import ConfigError
from .inference import resolve_device
from .losses import check_loss
from .metrics import to_jsonable
from .model import WaveUNet, build_model
from .settings import LossConfig, OptimConfig, TrainerConfig, typed


@dataclass
class DistInfo:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistInfo:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class RunSettings:
    """The checked settings a training run reads (the config keeps the rest)."""

    seed: int
    trainer: TrainerConfig
    optim: OptimConfig
    loss: LossConfig


def run_settings(cfg: DictConfig, world_size: int = 1) -> RunSettings:
    """Check a training config's settings; every error names its key."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    settings = RunSettings(seed, typed(TrainerConfig, cfg.trainer, "trainer."),
                           typed(OptimConfig, cfg.optim, "optim."),
                           typed(LossConfig, cfg.loss, "loss."))
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
    """A run's dataset: training tracks (examples drawn per epoch) and validation tracks."""

    def __init__(self, cfg: DictConfig, model: WaveUNet, settings: RunSettings,
                 dist_info: DistInfo):
        split = dict(sample_rate_hz=model.sample_rate_hz, channels=model.config.channels,
                     sources=list(model.sources))
        self.cfg, self.model, self.settings, self.dist = cfg, model, settings, dist_info
        if dist_info.enabled and not dist_info.is_main:
            dist.barrier()  # rank 0 generates / decodes the dataset into the cache first
        self.train_tracks = data_lib.load_split(cfg.data, "train", **split)
        self.valid_tracks = data_lib.load_split(cfg.data, "valid", **split)
        if dist_info.enabled and dist_info.is_main:
            dist.barrier()
        max_tracks = settings.trainer.validation.max_tracks
        if max_tracks is not None:
            self.valid_tracks = self.valid_tracks[:max_tracks]

    def loader(self, epoch: int, start_step: int, batch_size: int) -> DataLoader:
        """The global batches ``start_step..`` of one epoch, this process's share of each."""
        seed = self.settings.seed
        examples = data_lib.TrainingExamples(
            self.train_tracks, self.model.input_samples,
            self.settings.trainer.steps_per_epoch * batch_size, seed)
        examples.set_epoch(epoch)
        sampler = ResumableSampler(len(examples), batch_size, start_step, self.dist)
        return data_lib.make_loader(
            examples, batch_size // self.dist.world_size,
            workers=int(self.cfg.data.get("workers", 0)), shuffle=False, seed=seed + epoch,
            sampler=sampler)


class RunLogger:
    """What a run tells the outside: TensorBoard scalars, audio, figures and hparams, and
    ``metrics.jsonl``.

    Writes only in the main process and only with a run folder; otherwise every call is a no-op.
    """

    def __init__(self, run_dir: Path | None, enabled: bool = True):
        self.run_dir = run_dir if enabled else None
        self.writer = None
        self._jsonl = None
        if self.run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def audio(self, tag: str, wave: torch.Tensor, step: int, sample_rate_hz: int) -> None:
        """Mono audio (TensorBoard's audio is one channel: give a downmix or one channel)."""
        if self.writer is not None:
            self.writer.add_audio(tag, wave, step, sample_rate=sample_rate_hz)

    @property
    def enabled(self) -> bool:
        """Whether anything is written (figures are worth drawing)."""
        return self.writer is not None

    def figure(self, tag: str, fig: Any, step: int) -> None:
        """A matplotlib figure as an image; the figure is closed either way."""
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step, close=True)
        else:
            import matplotlib.pyplot as plt

            plt.close(fig)

    def hparams(self, config: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """The run's config (nested, flattened to dotted keys) as TensorBoard hparams, with
        ``metrics`` logged as scalars under the same names in this run (where TensorBoard's
        HParams dashboard reads them); lists and nulls become their JSON text, and torch's
        writer stores booleans as 0 / 1."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        from .config import flatten

        flat = {k: v if isinstance(v, bool | int | float | str) else json.dumps(v)
                for k, v in flatten(config).items()}
        for summary in hparams(flat, metrics):
            self.writer.file_writer.add_summary(summary, step)
        self.scalars(metrics, step)

    def record(self, record: dict[str, Any]) -> None:
        """One line of ``metrics.jsonl`` (strict JSON: NaN becomes null)."""
        if self.run_dir is None:
            return
        if self._jsonl is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self._jsonl.write(json.dumps(to_jsonable(record), allow_nan=False) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


@dataclass
class SolverParts:
    """Everything :class:`waveunet.solver.Solver` works with."""

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
    training_data = TrainingData(cfg, model, settings, dist_info) if data else None
    network: nn.Module = model
    if settings.trainer.compile:
        network = torch.compile(network)
    if dist_info.enabled:
        network = nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)
    logger = RunLogger(None if run_dir is None else Path(run_dir), enabled=dist_info.is_main)
    return SolverParts(settings, dist_info, device, model, network, optimizer, augment,
                       training_data, logger)
