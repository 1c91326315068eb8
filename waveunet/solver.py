"""The training loop: one ``Solver`` owns the model, optimiser, data, checkpoints and logs.

Design points:

* GPU-first: batches of source stems go to the device, augmentation runs there
  on the (B, S, C, T) tensor, and the mixture is re-summed after it.
* Exact resumption: every example is a pure function of (seed, epoch, index),
  the sampler starts at the saved position, and the RNG, optimiser, scaler and
  schedule state are in ``last.pt``; a killed run continues with the same losses.
* Early stopping as in the original: a round ends after ``patience`` epochs
  without a better validation loss; the second round restarts from the best
  state with a doubled batch and a lower learning rate.
* Bounded-output health (``heads.output_health``) is logged with the loss, and
  divergence (non-finite loss, exploding pre-activations) stops the run or
  rolls back, instead of writing a garbage checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from . import data as data_lib
from .augment import augmentation_from_config
from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError, ConfigError, WaveUNetError
from .heads import output_health
from .inference import Separator, resolve_device
from .losses import check_loss, compute_loss
from .metrics import framewise_sdr, to_jsonable
from .model import WaveUNet, build_model

log = logging.getLogger("waveunet.train")

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(WaveUNetError):
    """The loss or the output layer blew up; nothing bad was checkpointed."""


def resume_mode(value: Any) -> str | Path | None:
    """``trainer.resume``: None (start fresh), ``"latest"`` (the newest run of this name) or a run folder."""
    if value in (False, None, "", "false", "False"):
        return None
    if value in (True, "true", "True"):
        return "latest"
    return Path(str(value))


@dataclass
class DistInfo:
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


@dataclass
class TrainState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    round: int = 1
    lr: float = 1e-4
    batch_size: int = 16
    best_valid_loss: float | None = None
    best_epoch: int | None = None
    epochs_without_improvement: int = 0
    rollbacks: int = 0
    finished: bool = False  # early stopping ended the last round (max_epochs does not)
    history: list[dict] = field(default_factory=list)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate((state["python_version"], tuple(state["python"]), None))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))


def validate_config(cfg: DictConfig) -> None:
    """Check the settings that fail late otherwise; every error names its key."""
    def positive(key: str, value: Any, kind=int) -> None:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{key} must be a positive {kind.__name__}, got {value!r}")
        if kind is int and int(value) != value:
            raise ConfigError(f"{key} must be a whole number, got {value!r}")

    positive("optim.batch_size", cfg.optim.batch_size)
    positive("optim.lr", cfg.optim.lr, float)
    positive("trainer.steps_per_epoch", cfg.trainer.steps_per_epoch)
    positive("trainer.patience", cfg.trainer.patience)
    positive("trainer.log_every_steps", cfg.trainer.log_every_steps)
    positive("trainer.checkpoint_every_steps", cfg.trainer.checkpoint_every_steps)
    if cfg.trainer.max_epochs is not None:
        positive("trainer.max_epochs", cfg.trainer.max_epochs)
    if cfg.optim.name != "adam":
        raise ConfigError(f"optim.name: unknown {cfg.optim.name!r} (adam)")
    if cfg.trainer.precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision: unknown {cfg.trainer.precision!r}; choose from {', '.join(PRECISIONS)}")
    if cfg.trainer.divergence.policy not in ("stop", "rollback"):
        raise ConfigError(f"trainer.divergence.policy: unknown {cfg.trainer.divergence.policy!r} (stop, rollback)")
    world = DistInfo.from_env().world_size
    if cfg.optim.batch_size % world:
        raise ConfigError(f"optim.batch_size={cfg.optim.batch_size} must be divisible by the {world} processes")


class Solver:
    def __init__(self, cfg: DictConfig, run_dir: str | Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist = DistInfo.from_env()
        validate_config(cfg)
        self.device = resolve_device(str(cfg.trainer.device), local_rank=self.dist.local_rank,
                                     setting="trainer.device")
        torch.manual_seed(int(cfg.seed))
        random.seed(int(cfg.seed))
        np.random.seed(int(cfg.seed) % 2**32)

        self.model: WaveUNet = build_model(cfg.model, cfg.output).to(self.device)
        self.loss_name = str(cfg.loss.name)
        check_loss(self.loss_name, self.model.head)
        self.precision = PRECISIONS[cfg.trainer.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.trainer.precision == "fp16")
        self.state = TrainState(lr=float(cfg.optim.lr), batch_size=int(cfg.optim.batch_size))
        self.optimizer = self._make_optimizer()
        self.augment = augmentation_from_config(cfg.data).to(self.device)

        split = dict(sample_rate_hz=self.model.sample_rate_hz, channels=self.model.config.channels,
                     sources=list(self.model.sources))
        if self.dist.enabled and not self.dist.is_main:
            dist.barrier()  # rank 0 generates / decodes the dataset into the cache first
        self.train_tracks = data_lib.load_split(cfg.data, "train", **split)
        self.valid_tracks = data_lib.load_split(cfg.data, "valid", **split)
        if self.dist.enabled and self.dist.is_main:
            dist.barrier()
        max_tracks = cfg.trainer.validation.max_tracks
        if max_tracks is not None:
            self.valid_tracks = self.valid_tracks[: int(max_tracks)]

        self.network: torch.nn.Module = self.model
        if cfg.trainer.compile:
            self.network = torch.compile(self.network)
        if self.dist.enabled:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.grad_clip_norm = None if cfg.optim.grad_clip_norm is None else float(cfg.optim.grad_clip_norm)
        self._metrics_file = None
        self.writer = None
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        self._maybe_resume()

    # -- set-up -------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        # fused: one kernel for all parameters instead of a loop of element-wise ops
        # (an unfused Adam step was ~17% of an m5_highsr step at batch 1 on the CPU).
        return torch.optim.Adam(self.model.parameters(), lr=self.state.lr, betas=tuple(o.betas),
                                weight_decay=float(o.weight_decay), fused=True)

    def _set_lr(self, lr: float) -> None:
        self.state.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _training_payload(self) -> dict:
        return {
            "state": asdict(self.state),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }

    def _save(self, name: str) -> Path:
        config = OmegaConf.to_container(self.cfg, resolve=True)
        return save_checkpoint(self.run_dir / name, self.model, config=config, training=self._training_payload())

    def _restore(self, payload: dict) -> None:
        ours = self.model.describe()
        differ = [f"{group}.{key}: checkpoint {payload[group].get(key)!r}, this run {value!r}"
                  for group in ("model", "output") for key, value in ours[group].items()
                  if payload[group].get(key) != value]
        if differ:
            raise ConfigError(f"{payload['path']}: cannot resume with other settings ({'; '.join(differ)})")
        if not payload.get("training"):
            raise CheckpointError(f"{payload['path']}: has no training state to resume from")
        self.model.load_state_dict(payload["state_dict"])
        training = payload["training"]
        self.state = TrainState(**training["state"])
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(training["optimizer"])
        self._set_lr(self.state.lr)
        self.scaler.load_state_dict(training["scaler"])
        set_rng_state(training["rng"])

    def _maybe_resume(self) -> None:
        mode = resume_mode(self.cfg.trainer.resume)
        if mode is None:
            return
        last = self.run_dir / "last.pt"
        if not last.is_file():
            if mode == "latest":
                log.info("trainer.resume=true: no earlier run of %s to resume; starting fresh", self.cfg.name)
                return
            raise ConfigError(f"trainer.resume={self.cfg.trainer.resume}: no last.pt in {self.run_dir}")
        self._restore(load_checkpoint(last, map_location=self.device))
        metrics = self.run_dir / "metrics.jsonl"
        if self.dist.is_main and metrics.is_file() and not metrics.read_bytes().endswith(b"\n"):
            with open(metrics, "a") as f:  # the kill cut a line: start the next one cleanly
                f.write("\n")
        log.info("resumed %s at epoch %d, step %d (global step %d)", last, self.state.epoch,
                 self.state.step_in_epoch, self.state.global_step)

    # -- the loop -----------------------------------------------------------
    def _loader(self) -> DataLoader:
        batch = self.state.batch_size
        examples = data_lib.TrainingExamples(
            self.train_tracks, self.model.input_samples,
            int(self.cfg.trainer.steps_per_epoch) * batch, int(self.cfg.seed),
        )
        examples.set_epoch(self.state.epoch)
        sampler = ResumableSampler(len(examples), batch, self.state.step_in_epoch, self.dist)
        return data_lib.make_loader(
            examples, batch // self.dist.world_size, workers=int(self.cfg.data.get("workers", 0)),
            shuffle=False, seed=int(self.cfg.seed) + self.state.epoch, sampler=sampler,
        )

    def train(self) -> dict:
        """Train until early stopping (both rounds) or ``max_epochs``; returns a summary."""
        max_epochs = self.cfg.trainer.max_epochs
        try:
            while not self.state.finished:
                if max_epochs is not None and self.state.epoch >= int(max_epochs):
                    break
                try:
                    self._train_epoch()
                except _RolledBack:
                    continue  # the epoch restarts from the restored position
                self._end_of_epoch()
        finally:
            if self.writer is not None:
                self.writer.close()
            if self._metrics_file is not None:
                self._metrics_file.close()
                self._metrics_file = None
        return self.summary()

    def summary(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "best_checkpoint": str(self.run_dir / "best.pt"),
            "last_checkpoint": str(self.run_dir / "last.pt"),
            "tensorboard": str(self.run_dir / "tensorboard"),
            "epochs": self.state.epoch,
            "global_step": self.state.global_step,
            "best_valid_loss": self.state.best_valid_loss,
            "best_epoch": self.state.best_epoch,
            "history": self.state.history,
        }

    def _train_epoch(self) -> None:
        cfg = self.cfg.trainer
        steps = int(cfg.steps_per_epoch)
        self.network.train()
        bar = tqdm(total=steps, initial=self.state.step_in_epoch, desc=f"epoch {self.state.epoch}",
                   disable=not (self.dist.is_main and cfg.progress), dynamic_ncols=True, leave=False)
        window_start, window_examples = time.perf_counter(), 0
        for stems in self._loader():
            loss_value, output, targets = self._step(stems)
            self.state.step_in_epoch += 1
            self.state.global_step += 1
            window_examples += stems.shape[0] * self.dist.world_size
            self._log_jsonl({"kind": "train", "step": self.state.global_step, "epoch": self.state.epoch,
                             "loss": loss_value})
            if self.state.global_step % int(cfg.log_every_steps) == 0:
                elapsed = time.perf_counter() - window_start
                self._log_train(loss_value, output, targets, window_examples / max(elapsed, 1e-9))
                window_start, window_examples = time.perf_counter(), 0
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4g}")
            if self.state.step_in_epoch % int(cfg.checkpoint_every_steps) == 0 and self.state.step_in_epoch < steps:
                self._checkpoint_last()
        bar.close()

    def _step(self, stems: torch.Tensor) -> tuple[float, Any, torch.Tensor]:
        stems = stems.to(self.device, non_blocking=True)
        # Augmentation draws are a pure function of (seed, epoch, step, rank): each DDP
        # process gets its own, and a resumed run repeats them exactly.
        key = [int(self.cfg.seed), self.state.epoch, self.state.step_in_epoch, self.dist.rank]
        with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
            stems = self.augment(stems)
        mixture, targets = data_lib.split_batch(stems, self.model.output_samples)
        with torch.autocast(self.device.type, dtype=self.precision or torch.float32,
                            enabled=self.precision is not None):
            output = self.network(mixture)
        loss = compute_loss(self.loss_name, output, targets, self.model.head)
        # One host sync per step for both checks (the loss is shown anyway).
        loss_value, pre_peak = torch.stack(
            [loss.detach().float(), output.pre_activation.detach().abs().amax().float()]
        ).tolist()
        limit = float(self.cfg.trainer.divergence.max_pre_activation)
        bad = not (math.isfinite(loss_value) and math.isfinite(pre_peak) and pre_peak <= limit)
        if self.dist.enabled:  # every rank must take the same branch
            flag = torch.tensor([float(bad)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad = flag.item() > 0
        if bad:
            self._diverged(loss_value, pre_peak, limit)
            return loss_value, output, targets
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # a no-op without fp16; true gradients for clipping / logging
        if self.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_value, output, targets

    def _diverged(self, loss_value: float, pre_peak: float, limit: float) -> None:
        policy = self.cfg.trainer.divergence
        what = (f"step {self.state.global_step + 1}: loss={loss_value:.4g}, "
                f"max |pre-activation|={pre_peak:.4g} (limit {limit:g})")
        last = self.run_dir / "last.pt"
        if policy.policy == "rollback" and self.state.rollbacks < int(policy.max_rollbacks) and last.is_file():
            rollbacks = self.state.rollbacks + 1
            self._restore(load_checkpoint(last, map_location=self.device))
            self.state.rollbacks = rollbacks
            self._set_lr(self.state.lr * float(policy.rollback_lr_factor))
            log.warning("training diverged at %s; rolled back to %s with lr %.3g (rollback %d of %d)",
                        what, last, self.state.lr, rollbacks, int(policy.max_rollbacks))
            raise _RolledBack()
        if policy.policy != "rollback":
            advice = "Try a lower optim.lr, output=linear_direct, or trainer.divergence.policy=rollback"
        elif not last.is_file():
            advice = "There is no last.pt to roll back to yet; try a lower optim.lr or output=linear_direct"
        else:
            advice = (f"trainer.divergence.max_rollbacks={policy.max_rollbacks} rollbacks are used up; "
                      "try a lower optim.lr or output=linear_direct")
        raise TrainingDiverged(
            f"training diverged at {what}. No checkpoint was written after the last good one "
            f"({last if last.is_file() else 'none yet'}). {advice}"
        )

    def _checkpoint_last(self) -> None:
        if self.dist.is_main:
            self._save("last.pt")

    def _end_of_epoch(self) -> None:
        valid = self.validate() if self.dist.is_main else None
        decision = [valid]
        if self.dist.enabled:
            dist.broadcast_object_list(decision, src=0)
        valid = decision[0]
        improved = self.state.best_valid_loss is None or valid["loss"] < self.state.best_valid_loss
        if improved:
            self.state.best_valid_loss, self.state.best_epoch = valid["loss"], self.state.epoch
            self.state.epochs_without_improvement = 0
        else:
            self.state.epochs_without_improvement += 1
        self.state.history.append({"epoch": self.state.epoch, "round": self.state.round, **valid})
        log.info("epoch %d: valid loss %.5g, SDR %s%s", self.state.epoch, valid["loss"],
                 ", ".join(f"{k} {v:.2f} dB" for k, v in valid["sdr"].items()),
                 " (best)" if improved else "")
        self.state.epoch += 1
        self.state.step_in_epoch = 0
        if improved and self.dist.is_main:
            self._save("best.pt")  # before _end_round, which may start round 2 from it
        if self.dist.enabled:
            dist.barrier()
        if self.state.epochs_without_improvement >= int(self.cfg.trainer.patience):
            self._end_round()
        if self.dist.is_main:
            self._save("last.pt")

    def _end_round(self) -> None:
        second = self.cfg.trainer.second_round
        if self.state.round == 1 and second.enabled:
            payload = load_checkpoint(self.run_dir / "best.pt", map_location=self.device)
            self.model.load_state_dict(payload["state_dict"])
            self.optimizer.load_state_dict(payload["training"]["optimizer"])
            self.state.round = 2
            self.state.batch_size = int(self.cfg.optim.batch_size) * int(second.batch_multiplier)
            self._set_lr(float(second.lr))
            self.state.epochs_without_improvement = 0
            log.info("round 2: from the best state (epoch %s), batch %d, lr %g",
                     self.state.best_epoch, self.state.batch_size, self.state.lr)
        else:
            self.state.finished = True
            log.info("early stopping: %d epochs without improvement", self.state.epochs_without_improvement)

    # -- validation ---------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """MSE and framewise SDR of the eval-mode model on whole validation tracks."""
        vcfg = self.cfg.trainer.validation
        self.model.eval()
        separator = Separator(self.model, device=self.device, batch_size=int(vcfg.batch_size))
        sources = list(self.model.sources)
        squared_error, count = 0.0, 0
        frames: list[torch.Tensor] = []
        for index, track in enumerate(self.valid_tracks):
            mixture = torch.tensor(np.asarray(track.mixture), dtype=torch.float32)
            references = torch.tensor(np.asarray(track.sources), dtype=torch.float32)
            estimates = separator.separate_tensor(mixture).stems
            squared_error += (estimates - references).double().square().sum().item()
            count += references.numel()
            frames.append(framewise_sdr(references, estimates, win=self.model.sample_rate_hz,
                                        hop=self.model.sample_rate_hz))
            if index < int(vcfg.audio_examples) and self.writer is not None:
                seconds = int(float(vcfg.audio_seconds) * self.model.sample_rate_hz)
                for name, stem in [("mixture", mixture)] + list(zip(sources, estimates, strict=True)):
                    self.writer.add_audio(f"valid/{track.name}/{name}", stem[:, :seconds].mean(0).clamp(-1, 1),
                                          self.state.global_step, sample_rate=self.model.sample_rate_hz)
        self.model.train()
        pooled = torch.cat(frames, dim=1) if frames else torch.empty(len(sources), 0)
        sdr = {}
        for name, row in zip(sources, pooled, strict=True):
            row = row[torch.isfinite(row)]
            sdr[name] = float(row.median()) if row.numel() else float("nan")
        result = {"loss": squared_error / max(count, 1), "sdr": sdr}
        if self.writer is not None:
            self.writer.add_scalar("valid/loss", result["loss"], self.state.global_step)
            for name, value in sdr.items():
                self.writer.add_scalar(f"valid/sdr_{name}", value, self.state.global_step)
        self._log_jsonl({"kind": "valid", "step": self.state.global_step, "epoch": self.state.epoch, **result})
        return result

    # -- logging ------------------------------------------------------------
    def _log_train(self, loss_value: float, output, targets: torch.Tensor, examples_per_s: float) -> None:
        health = output_health(output, targets, self.model.head)
        scalars = {
            "train/loss": loss_value,
            "train/lr": self.state.lr,
            "train/grad_norm": float(torch.nn.utils.get_total_norm(
                [p.grad for p in self.model.parameters() if p.grad is not None])),
            "train/examples_per_s": examples_per_s,
            **{f"health/{k}": v for k, v in health.items()},
        }
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, self.state.global_step)
        self._log_jsonl({"kind": "health", "step": self.state.global_step, **scalars})
        log.info("step %d loss %.4g | saturated %.3f | |a| %.3g | vanishing grad %.3f | peak ratio %.3f | %.1f ex/s",
                 self.state.global_step, loss_value, health["saturated"], health["pre_activation_mean_abs"],
                 health["vanishing_gradient"], health["peak_ratio"], examples_per_s)

    def _log_jsonl(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        if self._metrics_file is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._metrics_file = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        self._metrics_file.write(json.dumps(to_jsonable(record), allow_nan=False) + "\n")


class _RolledBack(Exception):
    """Internal: a divergence was rolled back; the epoch loop restarts from the restored state."""
