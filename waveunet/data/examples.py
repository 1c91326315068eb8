"""Training examples and batches: random crops of the cached stems, a loader, the batch split.

Example ``index`` of epoch ``e`` is a pure function of ``(seed, e, index)``, so a
resumed run sees the same data. Which track a crop comes from follows each track's
sampling rule (:class:`~waveunet.data.Track`): per second of audio (every start
position of every track equally likely, the default) or per track (every track
equally likely, as the original Wave-U-Net drew a fixed number of snippets per
song), times its dataset's weight.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from ..errors import ConfigError, DataError
from ..settings.schema import SAMPLINGS
from .cache import Track

log = logging.getLogger(__name__)


class TrainingExamples(Dataset):
    """Random crops of ``input_samples`` of the source stems, drawn by the tracks' sampling rule.

    The epoch lives in shared memory, so :meth:`set_epoch` reaches persistent
    DataLoader workers too.
    """

    def __init__(self, tracks: list[Track], input_samples: int, examples_per_epoch: int, seed: int):
        if not tracks:
            raise DataError("TrainingExamples needs at least one track")
        if input_samples < 1 or examples_per_epoch < 1:
            raise ConfigError("input_samples and examples_per_epoch must be >= 1 "
                              f"(got {input_samples}, {examples_per_epoch})")
        _check_tracks_agree(tracks)
        self.tracks = tracks
        self.input_samples = int(input_samples)
        self.examples_per_epoch = int(examples_per_epoch)
        self.seed = int(seed)
        # Tracks shorter than the input count as one (zero-padded) position.
        self._positions = np.array([max(t.samples - self.input_samples + 1, 1) for t in tracks],
                                   dtype=np.int64)
        self._ends = np.cumsum(self._positions)
        self._mass_ends = _mass_ends(tracks, self._positions)
        if self._mass_ends is not None:  # u * total can round up to total: the last track with mass
            self._last_drawable = int(np.flatnonzero(np.diff(self._mass_ends, prepend=0) > 0)[-1])
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return self.examples_per_epoch

    def track_probabilities(self) -> np.ndarray:
        """The probability that an example comes from each track."""
        ends = self._ends if self._mass_ends is None else self._mass_ends
        return np.diff(ends, prepend=0) / ends[-1]

    def locate(self, index: int, epoch: int | None = None) -> tuple[int, int]:
        """(track index, start sample) of an example."""
        epoch = int(self._epoch) if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        if self._mass_ends is None:
            # Uniform over all positions: the draw every run before sampling weights made.
            position = int(rng.integers(int(self._ends[-1])))
            track = int(np.searchsorted(self._ends, position, side="right"))
            return track, position - (int(self._ends[track - 1]) if track else 0)
        ends = self._mass_ends
        track = int(np.searchsorted(ends, rng.random() * ends[-1], side="right"))
        track = min(track, self._last_drawable)
        return track, int(rng.integers(int(self._positions[track])))

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """The examples of a batch, as views of one ``(B, S, C, input_samples)`` tensor.

        The DataLoader calls this instead of ``__getitem__`` per example. Crops are
        copied straight from the cache into one tensor; :func:`collate_batch` hands
        that tensor on, where stacking 16 separate 4.5 MiB crops cost more than
        reading them (scripts/bench_data.py). torch's default_collate still works.
        """
        first = self.tracks[0].sources
        out = _new_batch((len(indices), first.shape[0], first.shape[1], self.input_samples))
        target = out.numpy()
        for row, index in enumerate(indices):
            if not 0 <= index < self.examples_per_epoch:
                raise IndexError(index)
            track_index, start = self.locate(index)
            crop = self.tracks[track_index].sources[:, :, start:start + self.input_samples]
            missing = self.input_samples - crop.shape[-1]
            if missing > 0:
                target[row] = 0.0
                target[row, :, :, missing // 2:missing // 2 + crop.shape[-1]] = crop
            else:
                target[row] = crop
        return _Batch(out)


def check_track_lengths(tracks: Sequence[Track], input_samples: int, split: str,
                        warn: bool = True) -> None:
    """A track shorter than the model's input is zero-padded to it: warn, naming such tracks
    (``warn``); a split where no track is that long is a :class:`DataError`."""
    short = [t for t in tracks if t.samples < input_samples]
    if not short:
        return
    rate = short[0].sample_rate_hz
    need = f"the model's input ({input_samples} samples, {input_samples / rate:.3g} s at {rate} Hz)"
    if len(short) == len(tracks):
        longest = max(tracks, key=lambda t: t.samples)
        raise DataError(
            f"no {split} track is as long as {need}: the longest, {_label(longest)}, has "
            f"{longest.samples} samples ({longest.samples / rate:.3g} s). Use longer tracks "
            "(data.seconds for generated data), or a model with a shorter input "
            "(model.output_samples, model.levels)")
    if warn:
        names = ", ".join(f"{_label(t)} ({t.samples / rate:.3g} s)" for t in short[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        log.warning("%d of %d %s tracks are shorter than %s and are zero-padded to it: %s%s",
                    len(short), len(tracks), split, need, names, more)


def _label(track: Track) -> str:
    return f"'{track.name}'" + (f" ({track.dataset})" if track.dataset else "")


def _check_tracks_agree(tracks: list[Track]) -> None:
    """One batch tensor holds crops of every track: they must share sources, rate and channels."""
    first = tracks[0]
    checks = (("sources", lambda t: ", ".join(t.source_names)),
              ("sample rate", lambda t: f"{t.sample_rate_hz} Hz"),
              ("channels", lambda t: f"{t.sources.shape[1]} channel(s)"),
              ("sampling", lambda t: t.sampling))
    for what, value in checks:
        for track in tracks[1:]:
            if value(track) != value(first):
                raise ConfigError(f"the training tracks disagree on {what}: {_label(first)} has "
                                  f"{value(first)}, {_label(track)} has {value(track)}")


def _mass_ends(tracks: list[Track], positions: np.ndarray) -> np.ndarray | None:
    """Cumulative draw weights of the tracks; None for the uniform draw over all positions."""
    sampling = tracks[0].sampling
    if sampling not in SAMPLINGS:
        raise ConfigError(f"track sampling {sampling!r} is not one of {', '.join(SAMPLINGS)}")
    weights = np.array([t.weight for t in tracks], dtype=np.float64)
    if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and weights.sum() > 0):
        raise ConfigError("dataset weights must be >= 0 and not all 0 "
                          f"(got {sorted(set(weights.tolist()))})")
    if sampling == "per_second" and np.all(weights == weights[0]):
        return None
    mass = weights * positions if sampling == "per_second" else weights
    return np.cumsum(mass)


class _Batch(list):
    """Per-example views of one batch tensor, which stays reachable as ``.tensor``."""

    def __init__(self, tensor: torch.Tensor):
        super().__init__(tensor.unbind(0))
        self.tensor = tensor


def _new_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor; in a DataLoader worker, in shared memory so the
    batch reaches the main process without another copy (as torch's default_collate does)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    numel = int(np.prod(shape))
    storage = torch.empty(0)._typed_storage()._new_shared(numel)
    return torch.empty(0).new(storage).view(shape)


def collate_batch(batch: Any) -> Any:
    """DataLoader collate_fn: TrainingExamples' batches are already one tensor (no stacking copy);
    anything else goes through torch's default_collate."""
    return batch.tensor if isinstance(batch, _Batch) else torch.utils.data.default_collate(batch)


def split_batch(stems: torch.Tensor, output_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixture ``(B, C, T_in)`` re-summed from (augmented) stems and centred targets
    ``(B, S, C, output_samples)``."""
    excess = stems.shape[-1] - int(output_samples)
    if excess < 0 or excess % 2:
        raise ConfigError(
            f"cannot centre {output_samples} output samples in {stems.shape[-1]} input samples "
            "(the difference must be even and >= 0)"
        )
    start = excess // 2
    return stems.sum(1), stems[..., start:start + int(output_samples)]


def make_loader(dataset: Dataset, batch_size: int, *, workers: int, shuffle: bool, seed: int,
                distributed: bool = False, sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader that keeps the model fed: worker processes, prefetching, pinned memory on CUDA.

    :class:`TrainingExamples` is already random per index; pass ``shuffle=False``
    for it to make a resumed run's batches identical. With ``distributed`` each
    rank reads its own share of the indices (call ``loader.sampler.set_epoch``).
    A given ``sampler`` (the trainer's resumable one) replaces both.
    """
    if sampler is None and distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=shuffle)
    elif sampler is None and shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=shuffle,
        collate_fn=collate_batch,
        # Its own generator: an iterator otherwise draws its base seed from the global
        # RNG, at a different moment in a run resumed mid-epoch than in the original.
        generator=torch.Generator().manual_seed(seed),
    )
