"""The training loop: one ``Solver`` runs a run's parts, saves its checkpoints and resumes it.

The parts (model, optimiser, augmentation, data, logger) come from
:func:`waveunet.training.builder.build_parts`; :meth:`Solver.train_step` is the one training step,
which ``waveunet saturation`` drives with its own batches.

Design points:

* GPU-first: batches of source stems go to the device, augmentation runs there
  on the (B, S, C, T) tensor, and the mixture is re-summed after it.
* Exact resumption: every example is a pure function of (seed, epoch, index),
  the sampler starts at the saved position, and the RNG, optimiser, scaler and
  schedule state are in ``last.pt``; a killed run continues with the same losses.
  The run's folder is its own while it trains (:mod:`waveunet.training.run_folder`: a lock, the
  resume rule against the config ``last.pt`` recorded, ``metrics.jsonl`` cut back to it).
* Early stopping as in the original: a round ends after ``patience`` epochs
  without a better validation loss; the second round restarts from the best
  state with a doubled batch and a lower learning rate.
* Bounded-output health (``heads.output_health``) is logged with the loss, and
  divergence (non-finite loss, exploding pre-activations) stops the run or
  rolls back, instead of writing a garbage checkpoint.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .. import data as data_lib
from ..devices import thread_scope
from ..errors import CheckpointError, ConfigError, DiskFullError, WaveUNetError, space_checked
from ..files import remove_stale_temporaries
from ..folders import FolderLock
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.heads import ModelOutput, output_health
from ..model.losses import compute_loss
from ..precision import autocast
from .builder import SolverParts, build_parts, run_settings
from .distributed import DistInfo, any_rank, barrier, from_rank_0
from .run_folder import resume_differences, resume_mode
from .run_log import METRICS_NAME, truncate_metrics
from .validation import Validation

__all__ = ["Solver", "TrainState", "TrainingDiverged", "resume_mode"]

log = logging.getLogger("waveunet.train")  # the command's name: its log lines say what ran


class TrainingDiverged(WaveUNetError):
    """The loss or the output layer blew up; nothing bad was checkpointed."""


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
    # Wall time of this epoch's training so far (its steps that reached a checkpoint, when resumed)
    epoch_train_seconds: float = 0.0


def rng_state(device: torch.device) -> dict:
    """Every random generator a training step draws from: torch's CPU one, the training
    ``device``'s own CUDA one (only that device's: asking for all of them would start a CUDA
    context on every GPU of the machine in every process of a multi-GPU run), Python's, NumPy's.
    """
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restores :func:`rng_state`'s generators; the CUDA one into the training ``device``
    (a run saved on a GPU and resumed on the CPU keeps the others, and the reverse starts the
    device's generator from its seed)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # checkpoints before this rule held every device's state
        index = device.index or 0
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)
    random.setstate((state["python_version"], tuple(state["python"]), None))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))


class Solver:
    """Trains one run: epochs of :meth:`train_step`, validation, checkpoints, early stopping.

    Args:
        cfg: the run's training config (``compose("train", ...)``); saved in its checkpoints.
        run_dir: where checkpoints and logs go (None: nowhere; :meth:`train_step` only).
        parts: the run's parts; None: :func:`waveunet.training.builder.build_parts` of ``cfg``.
    """

    def __init__(self, cfg: DictConfig, run_dir: str | Path | None,
                 parts: SolverParts | None = None):
        self.cfg = cfg
        self.run_dir = None if run_dir is None else Path(run_dir)
        self._lock: FolderLock | None = None
        # {"checkpoint": path, "changes": {key: {"run": .., "now": ..}}} when resuming
        self.resumed_from: dict[str, Any] | None = None
        dist_info = parts.dist if parts is not None else DistInfo.from_env()
        settings = parts.settings if parts is not None else run_settings(cfg,
                                                                         dist_info.world_size)
        try:
            # The resume checks come before the parts are built (a refused resume decodes
            # nothing) and write nothing (a refused resume leaves the run as it was).
            payload = self._resume_checkpoint(settings.trainer.resume, dist_info.is_main)
            parts = parts if parts is not None else build_parts(cfg, run_dir)
            self._take_parts(parts)
            if payload is not None:
                self._restore(payload)
                log.info("resuming %s at epoch %d, step %d (global step %d)", payload["path"],
                         self.state.epoch, self.state.step_in_epoch, self.state.global_step)
        except BaseException:
            self._release(undo=True)
            raise

    def _take_parts(self, parts: SolverParts) -> None:
        self.parts = parts
        self.settings, self.dist, self.device = parts.settings, parts.dist, parts.device
        self.model, self.network, self.optimizer = parts.model, parts.network, parts.optimizer
        self.augment, self.data, self.logger = parts.augment, parts.data, parts.logger
        trainer = self.settings.trainer
        self.loss_name = self.settings.loss.name
        self.precision = trainer.precision  # fp32, bf16 or fp16 (precision.autocast)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=trainer.precision == "fp16")
        self.state = TrainState(
            lr=self.settings.optim.lr, batch_size=self.settings.optim.batch_size
        )
        self.grad_clip_norm = self.settings.optim.grad_clip_norm
        self.validation = Validation(self.model, self.device, self.settings.trainer.validation,
                                     self.logger, precision=trainer.precision)

    # -- set-up -------------------------------------------------------------
    def _set_lr(self, lr: float) -> None:
        self.state.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _training_payload(self) -> dict:
        return {
            "state": asdict(self.state),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.device),
        }

    def _save(self, name: str) -> Path:
        """Write a checkpoint atomically (a full disk: DiskFullError, the old file intact)."""
        config = OmegaConf.to_container(self.cfg, resolve=True)
        return save_checkpoint(self.run_dir / name, self.model, config=config,
                               training=self._training_payload())

    def _restore(self, payload: dict) -> None:
        ours = self.model.describe()
        differ = [f"{group}.{key}: checkpoint {payload[group].get(key)!r}, this run {value!r}"
                  for group in ("model", "output") for key, value in ours[group].items()
                  if payload[group].get(key) != value]
        if differ:
            raise ConfigError(f"{payload['path']}: cannot resume with other settings "
                              f"({'; '.join(differ)})")
        if not payload.get("training"):
            raise CheckpointError(f"{payload['path']}: has no training state to resume from")
        self.model.load_state_dict(payload["state_dict"])
        training = payload["training"]
        self.state = TrainState(**training["state"])
        self.optimizer.load_state_dict(training["optimizer"])  # replaces all of its state
        self._set_lr(self.state.lr)
        self.scaler.load_state_dict(training["scaler"])
        set_rng_state(training["rng"], self.device)

    def _resume_checkpoint(self, resume: Any, is_main: bool) -> dict | None:
        """The checkpoint to resume from (None: start fresh), its config checked against this
        one (:func:`waveunet.training.run_folder.resume_differences`); the main process takes the
        run
        folder's lock first."""
        mode = resume_mode(resume)
        if mode is None:
            return None
        if self.run_dir is None:
            raise ConfigError(f"trainer.resume={resume} needs a run folder to resume")
        last = self.run_dir / "last.pt"
        if not last.is_file():
            if mode == "latest":
                log.info("trainer.resume=true: no earlier run of %s to resume; starting fresh",
                         self.cfg.get("name"))
                return None
            what = "no last.pt in" if self.run_dir.is_dir() else "no such run folder:"
            raise ConfigError(f"trainer.resume={resume}: {what} {self.run_dir}")
        if is_main:
            self._lock = FolderLock.acquire(self.run_dir)
        payload = load_checkpoint(last, map_location="cpu")
        changes = {}
        if payload.get("config") is not None:
            now = OmegaConf.to_container(self.cfg, resolve=True)
            changes = resume_differences(self.run_dir, payload["config"], now)
        self.resumed_from = {"checkpoint": str(last), "changes": changes}
        return payload

    def use_folder(self, run_dir: str | Path) -> None:
        """Train into ``run_dir``: a new run's folder, made (here, if it is not yet) once the
        run was built and checked (``waveunet train``); the main process locks it now."""
        if self.resumed_from is not None:
            raise ValueError("a resumed run trains in the folder it resumed from")
        self.run_dir = Path(run_dir)
        if self.logger.run_dir is not None:
            self.logger.run_dir = self.run_dir
        if self.dist.is_main:
            with space_checked(self.run_dir):
                self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = FolderLock.acquire(self.run_dir)

    def _open_run_folder(self) -> None:
        """Before the first step (main process): the folder and its lock, stale temporaries of
        dead processes removed, and on resume ``metrics.jsonl`` cut back to the checkpoint's
        step and the resume (with what changed) recorded in it."""
        if self.run_dir is None or not self.dist.is_main:
            return
        if self._lock is None:
            with space_checked(self.run_dir):
                self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = FolderLock.acquire(self.run_dir)
        removed = remove_stale_temporaries(self.run_dir)
        if removed:
            log.info("removed %d temporary file(s) of processes that are gone: %s", len(removed),
                     ", ".join(p.name for p in removed))
        if self.resumed_from is not None:
            step = self.state.global_step
            dropped = truncate_metrics(self.run_dir / METRICS_NAME, step)
            if dropped:
                log.info("%s: dropped %d line(s) after step %d (logged after the checkpoint)",
                         METRICS_NAME, dropped, step)
            self.logger.purge_step = step + 1
            changes = {k: v for k, v in self.resumed_from["changes"].items()
                       if k != "trainer.resume"}
            self.logger.record({"kind": "resume", "step": step, "epoch": self.state.epoch,
                                "checkpoint": self.resumed_from["checkpoint"],
                                "changes": changes})
            if changes:
                log.info("resumed with changed settings: %s", ", ".join(
                    f"{k} {v['run']!r} -> {v['now']!r}" for k, v in changes.items()))

    def _release(self, undo: bool = False) -> None:
        if self._lock is not None:
            self._lock.release(undo=undo)
            self._lock = None

    # -- the loop -----------------------------------------------------------
    def train(self) -> dict:
        """Train until early stopping (both rounds) or ``max_epochs``; returns a summary.

        With ``trainer.threads`` torch CPU threads (restored after). A write that fails for
        lack of space stops the run with one :class:`~waveunet.errors.DiskFullError` line;
        ``last.pt`` keeps the last complete checkpoint.
        """
        if self.data is None:
            raise ConfigError("this solver has no data to train on (built with data=False)")
        max_epochs = self.settings.trainer.max_epochs
        try:
            self._open_run_folder()
            with thread_scope(self.settings.trainer.threads):
                while not self.state.finished:
                    if max_epochs is not None and self.state.epoch >= max_epochs:
                        break
                    try:
                        self._train_epoch()
                    except _RolledBack:
                        continue  # the epoch restarts from the restored position
                    self._end_of_epoch()
                self._log_hparams()
        except DiskFullError as exc:
            self.logger.close(failing=True)
            self._release()
            last = self.run_dir / "last.pt" if self.run_dir is not None else None
            if last is None or not last.is_file():
                raise
            raise DiskFullError(f"{exc}. {last} holds the last checkpoint: free some space, "
                                f"then continue with trainer.resume={self.run_dir}",
                                exc.path, exc.errno) from None
        except BaseException:
            self.logger.close(failing=True)
            self._release()
            raise
        self.logger.close()
        self._release()
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
        trainer = self.settings.trainer
        steps = trainer.steps_per_epoch
        self.network.train()
        bar = tqdm(total=steps, initial=self.state.step_in_epoch, desc=f"epoch {self.state.epoch}",
                   disable=not (self.dist.is_main and trainer.progress), dynamic_ncols=True,
                   leave=False)
        window_start, window_examples = time.perf_counter(), 0
        self._epoch_clock = window_start
        loader = self.data.loader(self.state.epoch, self.state.step_in_epoch,
                                  self.state.batch_size)
        for stems in loader:
            mixture, targets = self._augmented_batch(stems)
            loss_value, output = self.train_step(mixture, targets)
            self.state.step_in_epoch += 1
            self.state.global_step += 1
            window_examples += stems.shape[0] * self.dist.world_size
            self.logger.record({"kind": "train", "step": self.state.global_step,
                                "epoch": self.state.epoch, "loss": loss_value})
            if self.state.global_step % trainer.log_every_steps == 0:
                elapsed = time.perf_counter() - window_start
                self._log_train(loss_value, output, targets, window_examples / max(elapsed, 1e-9))
                window_start, window_examples = time.perf_counter(), 0
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4g}")
            if (self.state.step_in_epoch % trainer.checkpoint_every_steps == 0
                    and self.state.step_in_epoch < steps):
                self._count_train_time()
                self._checkpoint_last()
        bar.close()
        self._count_train_time()

    def _count_train_time(self) -> None:
        now = time.perf_counter()
        self.state.epoch_train_seconds += now - self._epoch_clock
        self._epoch_clock = now

    def _augmented_batch(self, stems: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader batch of stems -> (mixture, targets) on the device, augmented."""
        stems = stems.to(self.device, non_blocking=True)
        # Augmentation draws are a pure function of (seed, epoch, step, rank): each DDP
        # process gets its own, and a resumed run repeats them exactly.
        key = [self.settings.seed, self.state.epoch, self.state.step_in_epoch, self.dist.rank]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
            stems = self.augment(stems)
        return data_lib.split_batch(stems, self.model.output_samples)

    def train_step(self, mixture: torch.Tensor,
                   targets: torch.Tensor) -> tuple[float, ModelOutput]:
        """One optimiser step: forward (under autocast), loss, divergence check, backward, step.

        ``mixture`` (B, C, input samples) and ``targets`` (B, S, C, output samples) on the
        device. Returns the loss value and the model's output; the gradients stay on the
        parameters until the next step. A non-finite loss or a pre-activation beyond
        ``trainer.divergence.max_pre_activation`` stops (:class:`TrainingDiverged`) or rolls
        back, before the optimiser moves.
        """
        with autocast(self.device, self.precision):
            output = self.network(mixture)
        loss = compute_loss(self.loss_name, output, targets, self.model.head)
        # One host sync per step for both checks (the loss is shown anyway).
        loss_value, pre_peak = torch.stack(
            [loss.detach().float(), output.pre_activation.detach().abs().amax().float()]
        ).tolist()
        limit = self.settings.trainer.divergence.max_pre_activation
        bad = not (math.isfinite(loss_value) and math.isfinite(pre_peak) and pre_peak <= limit)
        bad = any_rank(bad, self.device, self.dist)  # every rank takes the same branch
        if bad:
            self._diverged(loss_value, pre_peak, limit)
            return loss_value, output
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        # a no-op without fp16; true gradients for clipping / logging
        self.scaler.unscale_(self.optimizer)
        if self.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_value, output

    def _diverged(self, loss_value: float, pre_peak: float, limit: float) -> None:
        policy = self.settings.trainer.divergence
        what = (f"step {self.state.global_step + 1}: loss={loss_value:.4g}, "
                f"max |pre-activation|={pre_peak:.4g} (limit {limit:g})")
        last = None if self.run_dir is None else self.run_dir / "last.pt"
        has_last = last is not None and last.is_file()
        if policy.policy == "rollback" and self.state.rollbacks < policy.max_rollbacks and has_last:
            rollbacks = self.state.rollbacks + 1
            self._restore(load_checkpoint(last, map_location="cpu"))
            self.state.rollbacks = rollbacks
            self._set_lr(self.state.lr * policy.rollback_lr_factor)
            log.warning("training diverged at %s; rolled back to %s with lr %.3g "
                        "(rollback %d of %d)", what, last, self.state.lr, rollbacks,
                        policy.max_rollbacks)
            raise _RolledBack()
        if policy.policy != "rollback":
            advice = ("Try a lower optim.lr, output=linear_direct, or "
                      "trainer.divergence.policy=rollback")
        elif not has_last:
            advice = ("There is no last.pt to roll back to yet; try a lower optim.lr or "
                      "output=linear_direct")
        else:
            advice = (f"trainer.divergence.max_rollbacks={policy.max_rollbacks} rollbacks are "
                      "used up; try a lower optim.lr or output=linear_direct")
        raise TrainingDiverged(
            f"training diverged at {what}. No checkpoint was written after the last good one "
            f"({last if has_last else 'none yet'}). {advice}"
        )

    def _checkpoint_last(self) -> None:
        if self.dist.is_main:
            self._save("last.pt")

    def _end_of_epoch(self) -> None:
        t0 = time.perf_counter()
        valid = self.validate() if self.dist.is_main else None
        valid_seconds = time.perf_counter() - t0
        valid = from_rank_0(valid, self.dist)
        improved = self.state.best_valid_loss is None or valid["loss"] < self.state.best_valid_loss
        if improved:
            self.state.best_valid_loss, self.state.best_epoch = valid["loss"], self.state.epoch
            self.state.epochs_without_improvement = 0
        else:
            self.state.epochs_without_improvement += 1
        self.state.history.append({"epoch": self.state.epoch, "round": self.state.round, **valid})
        train_seconds = self.state.epoch_train_seconds
        examples = self.settings.trainer.steps_per_epoch * self.state.batch_size
        self.logger.record({"kind": "epoch", "step": self.state.global_step,
                            "epoch": self.state.epoch, "train_seconds": train_seconds,
                            "valid_seconds": valid_seconds, "examples": examples,
                            "examples_per_s": examples / max(train_seconds, 1e-9)})
        log.info("epoch %d: valid loss %.5g, SDR %s%s | training %.1f s (%.1f ex/s), "
                 "validation %.1f s", self.state.epoch, valid["loss"],
                 ", ".join(f"{k} {v:.2f} dB" for k, v in valid["sdr"].items()),
                 " (best)" if improved else "", train_seconds,
                 examples / max(train_seconds, 1e-9), valid_seconds)
        self.state.epoch += 1
        self.state.step_in_epoch = 0
        self.state.epoch_train_seconds = 0.0
        if improved and self.dist.is_main:
            self._save("best.pt")  # before _end_round, which may start round 2 from it
        barrier(self.dist)
        if self.state.epochs_without_improvement >= self.settings.trainer.patience:
            self._end_round()
        if self.dist.is_main:
            self._save("last.pt")

    def _end_round(self) -> None:
        second = self.settings.trainer.second_round
        if self.state.round == 1 and second.enabled:
            payload = load_checkpoint(self.run_dir / "best.pt", map_location=self.device)
            self.model.load_state_dict(payload["state_dict"])
            self.optimizer.load_state_dict(payload["training"]["optimizer"])
            self.state.round = 2
            self.state.batch_size = self.settings.optim.batch_size * second.batch_multiplier
            self._set_lr(second.lr)
            self.state.epochs_without_improvement = 0
            log.info("round 2: from the best state (epoch %s), batch %d, lr %g",
                     self.state.best_epoch, self.state.batch_size, self.state.lr)
        else:
            self.state.finished = True
            log.info("early stopping: %d epochs without improvement",
                     self.state.epochs_without_improvement)

    # -- validation ---------------------------------------------------------
    def validate(self) -> dict:
        """MSE and framewise SDR of the eval-mode model on whole validation tracks
        (:class:`waveunet.training.validation.Validation`), logged to TensorBoard and
        metrics.jsonl."""
        result = self.validation(self.data.valid_tracks, self.state.global_step,
                                 first=not self.state.history)
        self.logger.scalars({"valid/loss": result["loss"],
                             **{f"valid/sdr_{name}": v for name, v in result["sdr"].items()}},
                            self.state.global_step)
        self.logger.record({"kind": "valid", "step": self.state.global_step,
                            "epoch": self.state.epoch, **result})
        return result

    def _log_hparams(self) -> None:
        """The resolved config as TensorBoard hparams, with the summary's validation numbers
        (``summary.json``: the best validation loss, the final validation's loss and SDRs)."""
        summary = self.summary()
        final = summary["history"][-1] if summary["history"] else {"sdr": {}}
        metrics = {"hparam/best_valid_loss": summary["best_valid_loss"],
                   "hparam/final_valid_loss": final.get("loss"),
                   **{f"hparam/final_valid_sdr_{s}": v for s, v in final["sdr"].items()}}
        metrics = {k: float(v) for k, v in metrics.items()
                   if v is not None and math.isfinite(v)}
        self.logger.hparams(OmegaConf.to_container(self.cfg, resolve=True), metrics,
                            self.state.global_step)

    # -- logging ------------------------------------------------------------
    def _log_train(self, loss_value: float, output: ModelOutput, targets: torch.Tensor,
                   examples_per_s: float) -> None:
        health = output_health(output, targets, self.model.head)
        scalars = {
            "train/loss": loss_value,
            "train/lr": self.state.lr,
            "train/grad_norm": float(torch.nn.utils.get_total_norm(
                [p.grad for p in self.model.parameters() if p.grad is not None])),
            "train/examples_per_s": examples_per_s,
            **{f"health/{k}": v for k, v in health.items()},
        }
        self.logger.scalars(scalars, self.state.global_step)
        self.logger.record({"kind": "health", "step": self.state.global_step, **scalars})
        log.info("step %d loss %.4g | saturated %.3f | |a| %.3g | vanishing grad %.3f | "
                 "peak ratio %.3f | %.1f ex/s", self.state.global_step, loss_value,
                 health["saturated"], health["pre_activation_mean_abs"],
                 health["vanishing_gradient"], health["peak_ratio"], examples_per_s)


class _RolledBack(Exception):
    """Internal: a divergence was rolled back; the epoch loop restarts from the restored state."""
