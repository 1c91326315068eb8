"""Validation during training: the eval-mode model on whole validation tracks.

Scores MSE and framewise SDR (museval's, :func:`waveunet.metrics.framewise_sdr`) of the
separated tracks, and shows the first ``trainer.validation.audio_examples`` of them in
TensorBoard: audio as mono downmixes (the mixture and the references once per run, the
estimates at every validation) and the waveform/clipping and spectrogram figures of their
loudest passage. The :class:`~waveunet.training.solver.Solver` calls it at the end of every epoch.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ..metrics import framewise_sdr
from ..separation.inference import Separator

log = logging.getLogger("waveunet.train")  # the command's name: its log lines say what ran

# Share of the GPU memory that is free (to this process) at validation time that the validation
# separator may plan its chunks for: the Separator's own default (75 % of the whole card) would
# not leave room for the training's parameters, optimiser state and cached blocks beside it.
VALIDATION_GPU_MEMORY_FRACTION = 0.5


def validation_memory_budget_bytes(device: torch.device) -> int | None:
    """The activation memory the validation separator plans for: on CUDA, half of what is free
    now (free on the card plus what PyTorch's allocator holds cached but unused); elsewhere None
    (the Separator's default, e.g. 2 GiB on the CPU)."""
    if device.type != "cuda":
        return None
    free_bytes, _ = torch.cuda.mem_get_info(device)
    cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(VALIDATION_GPU_MEMORY_FRACTION * (free_bytes + cached_unused))


class Validation:
    """Validates ``model`` on ``device`` with the ``trainer.validation`` settings; ``logger``
    is the run's :class:`~waveunet.training.run_log.RunLogger`. The model separates in the
    training's own ``precision`` (``trainer.precision``), not the separation default ``auto``: an
    fp32 run is validated, and its best epoch chosen, in fp32 on every machine."""

    def __init__(self, model, device: torch.device, settings: Any, logger: Any,
                 precision: str = "fp32"):
        self.model, self.device, self.settings, self.logger = model, device, settings, logger
        self.precision = precision
        self.references_logged = False  # the mixture and references go to TensorBoard once

    @torch.no_grad()
    def __call__(self, tracks, step: int, first: bool = True) -> dict:
        """``{"loss": MSE, "sdr": {source: median framewise SDR}}`` over ``tracks``; ``first``:
        no validation of this run was logged before (a resumed run has logged its references)."""
        vcfg = self.settings
        rate = self.model.sample_rate_hz
        was_training = self.model.training
        self.model.eval()
        separator = Separator(self.model, device=self.device, batch_size=vcfg.batch_size,
                              precision=self.precision,
                              memory_budget_bytes=validation_memory_budget_bytes(self.device))
        sources = list(self.model.sources)
        squared_error, count = 0.0, 0
        frames: list[torch.Tensor] = []
        log_references = first and not self.references_logged
        for index, track in enumerate(tracks):
            mixture = torch.tensor(np.asarray(track.mixture), dtype=torch.float32)
            references = torch.tensor(np.asarray(track.sources), dtype=torch.float32)
            separated = separator.separate_tensor(mixture)
            estimates = separated.stems
            squared_error += (estimates - references).double().square().sum().item()
            count += references.numel()
            frames.append(framewise_sdr(references, estimates, win=rate, hop=rate))
            if index < vcfg.audio_examples:
                self._log_example(track.name, mixture, references, separated, step,
                                  log_references)
        self.references_logged = True
        self.model.train(was_training)
        pooled = torch.cat(frames, dim=1) if frames else torch.empty(len(sources), 0)
        sdr = {}
        for name, row in zip(sources, pooled, strict=True):
            row = row[torch.isfinite(row)]
            sdr[name] = float(row.median()) if row.numel() else float("nan")
        return {"loss": squared_error / max(count, 1), "sdr": sdr}

    def _log_example(self, name: str, mixture: torch.Tensor, references: torch.Tensor,
                     separated: Any, step: int, log_references: bool) -> None:
        """One validation track in TensorBoard: audio of its first ``audio_seconds`` as mono
        downmixes ((L + R) / 2: TensorBoard's audio is mono), and its figures."""
        vcfg = self.settings
        rate = self.model.sample_rate_hz
        sources = list(self.model.sources)
        n = int(vcfg.audio_seconds * rate)

        def downmix(audio: torch.Tensor) -> torch.Tensor:
            return audio[:, :n].mean(0).clamp(-1, 1)

        fixed = [("mixture", mixture)] + [(f"{s}/reference", r)
                                          for s, r in zip(sources, references, strict=True)]
        logged = [(f"{s}/estimate", e) for s, e in zip(sources, separated.stems, strict=True)]
        if log_references:
            logged = fixed + logged
        for tag, audio in logged:
            self.logger.audio(f"valid/{name}/{tag}", downmix(audio), step, rate)
        if vcfg.figures and self.logger.enabled:
            self._log_figures(name, references, separated, step)

    def _log_figures(self, name: str, references: torch.Tensor, separated: Any,
                     step: int) -> None:
        from ..reporting.figures import (
            Passage,
            librosa_missing,
            spectrogram_figure,
            waveform_figure,
        )

        passage = Passage.loudest(name, list(self.model.sources), references.numpy(),
                                  separated.stems.numpy(), separated.unclipped.numpy(),
                                  self.model.sample_rate_hz, self.settings.figure_seconds)
        bounds = self.model.output_mode.bounds.measured()
        self.logger.figure(f"valid/{name}/waveform", waveform_figure(passage, bounds), step)
        missing = librosa_missing()
        if missing is None:
            self.logger.figure(f"valid/{name}/spectrogram", spectrogram_figure(passage), step)
        elif not self.references_logged:
            log.warning("%s (trainer.validation.figures=false turns figures off)", missing)
