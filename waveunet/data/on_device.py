"""Training crops drawn on the training device: the decoded training tracks kept there.

``data.on_device`` keeps the source stems of every training track in one tensor on the
training device, so a batch is one gather there: no loader processes, no host-to-device
copy per step (a GPU step of a few milliseconds otherwise waits for the loader). The examples
are the loader's: :meth:`~waveunet.data.TrainingExamples.locate` draws each one's track and
start from ``(seed, epoch, index)`` by the same sampling rule, and a track shorter than the
input is zero-padded, centred, as there. With float32 storage a batch equals the loader's
batch exactly; ``int16`` (16-bit samples with one scale per track: half the memory) and
``bfloat16`` store less and give the stems back rounded to that precision.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..settings.schema import ON_DEVICE_DTYPES
from .cache import Track
from .examples import TrainingExamples

# data.on_device_dtype -> how the samples are stored on the device
STORAGE_DTYPES = {name: getattr(torch, name) for name in ON_DEVICE_DTYPES}
_INT16_MAX = 32767


def storage_bytes(tracks: Sequence[Track], dtype: str) -> int:
    """Bytes the tracks' source stems take on the device in ``dtype``."""
    itemsize = torch.empty((), dtype=STORAGE_DTYPES[dtype]).element_size()
    return sum(int(np.prod(t.sources.shape)) for t in tracks) * itemsize


class DeviceTracks:
    """The source stems of ``tracks``, end to end in one ``(S, C, total samples)`` tensor on
    ``device``, stored as ``dtype`` (a key of :data:`STORAGE_DTYPES`)."""

    def __init__(self, tracks: Sequence[Track], device: torch.device, dtype: str = "float32"):
        if dtype not in STORAGE_DTYPES:
            raise ConfigError(f"data.on_device_dtype: unknown {dtype!r} "
                              f"(choose from {', '.join(STORAGE_DTYPES)})")
        if not tracks:
            raise ConfigError("data.on_device: there are no training tracks to keep")
        self.device, self.dtype = torch.device(device), dtype
        lengths = [t.samples for t in tracks]
        sources, channels = tracks[0].sources.shape[:2]
        self.stems = torch.empty((sources, channels, sum(lengths)), dtype=STORAGE_DTYPES[dtype],
                                 device=self.device)
        self.lengths = torch.tensor(lengths, dtype=torch.int64, device=self.device)
        self.offsets = torch.tensor(np.cumsum([0, *lengths[:-1]]), dtype=torch.int64,
                                    device=self.device)
        self.scales = torch.ones(len(tracks), dtype=torch.float32, device=self.device)
        for i, (track, offset) in enumerate(zip(tracks, self.offsets.tolist(), strict=True)):
            stems = torch.from_numpy(np.array(track.sources, dtype=np.float32)).to(self.device)
            if dtype == "int16":
                peak = float(stems.abs().max())
                self.scales[i] = peak / _INT16_MAX if peak > 0 else 1.0
                stems = torch.round(stems / self.scales[i])
            self.stems[:, :, offset:offset + track.samples] = stems.to(self.stems.dtype)

    @property
    def nbytes(self) -> int:
        return self.stems.numel() * self.stems.element_size()

    def crops(self, locations: Sequence[tuple[int, int]], input_samples: int) -> torch.Tensor:
        """Float32 crops ``(B, S, C, input_samples)`` at (track, start) ``locations``; a track
        shorter than the input is zero-padded, centred (as :class:`TrainingExamples`)."""
        where = torch.tensor(locations, dtype=torch.int64, device=self.device).reshape(-1, 2)
        track, start = where[:, 0], where[:, 1]
        length = self.lengths[track]
        left = (input_samples - length).clamp(min=0) // 2
        # position inside its track of every sample of every crop: (B, T)
        position = (start - left)[:, None] + torch.arange(input_samples, device=self.device)
        inside = (position >= 0) & (position < length[:, None])
        index = self.offsets[track][:, None] + torch.minimum(position.clamp(min=0),
                                                             length[:, None] - 1)
        batch = self.stems[:, :, index].permute(2, 0, 1, 3).float()  # (B, S, C, T)
        scale = torch.where(inside, self.scales[track][:, None], 0.0)
        return batch.mul_(scale[:, None, None, :]).contiguous()

    def batches(self, examples: TrainingExamples, indices: Iterator[int] | Sequence[int],
                batch_size: int) -> Iterator[torch.Tensor]:
        """The crops of ``indices`` (of ``examples``' current epoch), ``batch_size`` at a time."""
        chunk: list[tuple[int, int]] = []
        for index in indices:
            chunk.append(examples.locate(index))
            if len(chunk) == batch_size:
                yield self.crops(chunk, examples.input_samples)
                chunk = []
        if chunk:
            yield self.crops(chunk, examples.input_samples)
