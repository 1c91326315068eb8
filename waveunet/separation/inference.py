"""Separating whole songs with a trained model: the tiling engine behind ``waveunet separate``.

A song is cut into output chunks; each chunk is computed from its exact input
context (zeros beyond the song's ends), chunks are batched, and their outputs
are written into the song-length result. Memory is bounded by the chunk size
and the batch, not by the song: only the song itself and its stems are held
whole, never the activations of the whole padded song.

Why chunk steps are multiples of ``2 ** levels`` (``context=True`` models):
the network decimates by 2 at each of its L levels, so it is shift-equivariant
only for shifts that are multiples of ``2 ** L``. A valid output chunk has
``2 ** L * m + K_up`` samples. Chunk k takes its input from song position
``k * step - context`` with ``step = 2 ** L * m`` and keeps its first ``step``
outputs (the last ``K_up`` are dropped). Every chunk then sees its input on the
same decimation grid as one forward pass over the whole zero-padded song does,
so the tiled result is *identical* (to float rounding) to that single pass, for
any chunk size. An unaligned step (e.g. using all ``2 ** L * m + K_up`` outputs)
would put every chunk on a different grid and leave audible seams.

``context=False`` models (M1, M2: "same" padding, input length == output
length) have no exact context: the zero padding of every convolution sees the
chunk's own edges. They are tiled into non-overlapping chunks, as the original
Wave-U-Net did, and their output depends (slightly, near chunk edges) on the
chunk size.

The network runs in the separator's ``precision`` (``auto``: bf16 on CUDA and on CPUs with
native bf16, :func:`resolve_precision`) under autocast; chunk inputs and outputs stay float32,
and the tiling stays exact in every precision.

The layers of the API: :meth:`Separator.plan` (the chunk plan), :meth:`Separator.iter_chunks` (the
tiling loop over any :class:`Window`, public so that the file-to-file stream of
:mod:`waveunet.separation.streaming` runs the same loop), :meth:`Separator.separate_tensor` (a
model-rate array), and :meth:`Separator.separate`, the one any-rate call: stems and unclipped stems
at the caller's rate and channels, and on request the bound statistics of the model-rate output
(what ``waveunet evaluate`` scores).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..audio import approximate_rates, convert_channels, resample
from ..devices import resolve_device
from ..errors import ConfigError, DataError
from ..metrics import bound_hits, bound_stats
from ..model.checkpoint import load_model, unwrap
from ..model.network import WaveUNet
from ..precision import autocast, resolve_precision

GIB = 1024**3
# A (rows, columns) array with more rows than this and fewer columns is taken for soundfile's
# (frames, channels) layout, not (channels, samples).
MAX_PLAUSIBLE_CHANNELS = 8
DEFAULT_CPU_BUDGET_BYTES = 2 * GIB
# On a GPU: this share of its memory (6 GiB on an 8 GB card) ...
DEFAULT_GPU_BUDGET_FRACTION = 0.75
# ... but chunks no longer than this many output samples (~95 s at 44.1 kHz):
# beyond it the context overhead is already < 4 % and larger chunks only waste
# work at the song's end.
MAX_CHUNK_OUTPUT_SAMPLES = 2**22
# On the CPU chunks no longer than this (~6 s at 44.1 kHz): larger ones get
# memory-bound. scripts/bench.py, M5-HighSR, 2-core CPU, file to file: RTF 0.126 to
# 0.136 at 2**18 vs 0.136 to 0.142 at the 2 GiB budget's 1,638,400 (60- and 180-s
# songs, twice each), and peak RSS 1.2 GB instead of 2.4 to 2.8 GB.
MAX_CPU_CHUNK_OUTPUT_SAMPLES = 2**18
DEFAULT_GPU_BATCH = 4


def default_memory_budget_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(DEFAULT_GPU_BUDGET_FRACTION * total)
    return DEFAULT_CPU_BUDGET_BYTES


def estimate_activation_bytes(
    model: WaveUNet, output_samples: int, batch_size: int = 1, bytes_per_value: int = 4
) -> int:
    """Peak memory of one inference forward pass, from the architecture alone.

    Walks the forward pass of ``WaveUNet.forward`` with the real lengths and
    counts the float32 values alive at each step, taking the maximum:

    * the input batch (C x n_in) is alive throughout;
    * every down level's activation (F(i+1) x n_i) is kept as a skip until the
      end, so the skips add up to about ``4 F n_in`` values (sum (i+1)/2^i);
    * a convolution step holds its input, the convolution's output and the
      LeakyReLU's output at once (``x = leaky_relu(conv(x))``), plus a
      contiguous copy of a decimated (strided) input;
    * an up level holds the upsampled tensor (and the interpolation's temporaries:
      ``left - right``, its product with w, the middle samples, the interleaved
      stack), then the concatenation [skip, upsampled] (C_skip + C_in) x n;
    * the head: the concatenated features, the pre-activations, and the
      estimates / unclipped stems (S x C x n_out each).

    A 10 % allowance for allocator slack and convolution workspaces is added.
    Checked against measurement (``scripts/bench_separate.py --check-memory``:
    peak RSS growth of a fresh process during one forward on the CPU, plus the
    input batch): estimate / measured = 1.02 to 1.26 for M4 and M5-HighSR with
    64k to 1M output samples per chunk and batches of 1 and 4 (1.6 for 64k on
    M5-HighSR). It errs high, as a budget check should.
    """
    cfg = model.config
    shapes = model.shapes
    n_out = shapes.output_samples_for(output_samples)
    n = shapes.input_samples_for(n_out)
    f, c, levels = cfg.initial_filters, cfg.channels, cfg.levels
    shrink_down = cfg.down_kernel - 1 if cfg.context else 0
    shrink_up = cfg.up_kernel - 1 if cfg.context else 0

    base = c * n  # the input batch
    peak = base
    skips = 0
    ch, length = c, n
    for i in range(levels):
        out_ch, out_len = f * (i + 1), length - shrink_down
        copy = ch * length if i > 0 else 0  # contiguous copy of the strided input
        peak = max(peak, base + skips + copy + 2 * out_ch * out_len)
        skips += out_ch * out_len
        ch, length = out_ch, (out_len + 1) // 2
    out_ch, out_len = f * (levels + 1), length - shrink_down
    peak = max(peak, base + skips + ch * length + 2 * out_ch * out_len)
    ch, length = out_ch, out_len
    for i in range(levels):
        up_len = 2 * length - 1 if cfg.context else 2 * length
        # interpolation: x, 3 temporaries of (length - 1), the stack and the result
        peak = max(peak, base + skips + ch * (length + 3 * length + 2 * up_len))
        skip_ch, out_ch = f * (levels - i), f * (levels - i)
        cat = (skip_ch + ch) * up_len
        out_len = up_len - shrink_up
        peak = max(peak, base + skips + ch * up_len + cat)
        peak = max(peak, base + skips + cat + 2 * out_ch * out_len)
        ch, length = out_ch, out_len
    n_sources = len(cfg.sources)
    predicted = model.output_mode.predicted_sources(n_sources)
    features = (ch + c) * length
    stems = n_sources * c * length
    head = features + 3 * predicted * c * length + 2 * stems + 2 * c * length
    peak = max(peak, base + skips + ch * length + head)
    return int(1.1 * peak * batch_size * bytes_per_value)


@dataclass(frozen=True)
class ChunkPlan:
    """How one song of ``num_samples`` is tiled (lengths in the model's samples)."""

    num_samples: int
    output_samples: int  # valid output length of one chunk
    step_samples: int  # outputs kept per chunk (a multiple of 2**levels with context)
    input_samples: int  # input length of one chunk
    context_samples: int  # input samples before the first kept output
    num_chunks: int


@dataclass
class SeparationResult:
    """Stems of one song: ``stems`` and ``unclipped`` are (S, C, T) float32 CPU tensors.

    ``stems`` are what users get (clipped to the output bounds as the model does
    at evaluation); ``unclipped`` are the same without any test-time clip (for
    a ``difference`` model they sum to the mixture).
    """

    stems: torch.Tensor
    unclipped: torch.Tensor
    sources: tuple[str, ...]
    sample_rate_hz: int
    bounds: tuple[float, float | None] = (-1.0, 1.0)
    # Per source, :func:`waveunet.metrics.bound_stats` of the output at the model's own rate
    # (``Separator.separate(..., bound_statistics=True)``); None when not asked for.
    bound_statistics: list[dict[str, Any]] | None = None

    def __getitem__(self, source: str) -> torch.Tensor:
        return self.stems[self.sources.index(source)]

    def clip_report(self, low: float | None = None, high: float | None = None) -> dict[str, dict]:
        """Per source: how many stem samples sit at a bound, and how far the raw output overshot.

        See :func:`waveunet.metrics.bound_hits` for the keys. A model with many of
        either is fighting its output range. Bounds default to the model's;
        ``high=None`` means bounded below only.
        """
        low = self.bounds[0] if low is None else low
        high = self.bounds[1] if high is None else high
        hits = bound_hits(self.stems, self.unclipped, low, high)
        return dict(zip(self.sources, hits, strict=True))


class Separator:
    """A model ready to separate songs: load once, separate many arrays.

    The model is used as it is, not copied: it is moved to ``device`` in place
    (``Module.to``), so a separator on another device than a model being trained would move
    the training model itself; give it a copy (``copy.deepcopy(model)``) instead, or the
    model's own device. Its train/eval mode is set per call and restored.

    Args:
        model: a ``WaveUNet`` (or a DDP / compiled wrapper of one).
        device: ``'auto'`` (CUDA if available), ``'cpu'``, ``'cuda'`` or a torch.device.
        chunk_output_samples: output samples per chunk (rounded up to a valid,
            aligned length). None: the largest chunk whose estimated activation
            memory for ``batch_size`` chunks fits ``memory_budget_bytes``, at most
            ``2**22`` output samples on a GPU and ``2**18`` on the CPU (where
            larger chunks are memory-bound and slower).
        batch_size: chunks per forward pass; None: 4 on a GPU, 1 on the CPU (where
            batching gains nothing and one longer chunk wastes less on context).
        memory_budget_bytes: see above; default 2 GiB on the CPU, 75 % of a GPU's memory.
        progress: show a tqdm bar per song.
        precision: ``'auto'`` (default), ``'fp32'``, ``'bf16'`` or ``'fp16'``: the network runs
            under autocast in that precision; ``'auto'`` is bf16 on CUDA and on CPUs that
            report native bf16 (:func:`resolve_precision`), else fp32. Inputs, outputs and the
            bound statistics stay float32, and tiling stays exact in every precision (the
            chunk size does not change the output).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "auto",
        chunk_output_samples: int | None = None,
        batch_size: int | None = None,
        memory_budget_bytes: int | None = None,
        progress: bool = False,
        precision: str = "auto",
    ):
        self.device = resolve_device(device)
        # What error messages call the model: its checkpoint file (from_checkpoint sets it).
        self.origin: str | None = None
        self.precision = resolve_precision(precision, self.device)
        if batch_size is None:
            batch_size = DEFAULT_GPU_BATCH if self.device.type == "cuda" else 1
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        # Eval mode is set per call and the caller's mode restored, so a model
        # still being trained can be scored between steps.
        self.model: WaveUNet = unwrap(model).to(self.device)
        self.batch_size = batch_size
        self.progress = progress
        cfg = self.model.config
        self.scale = 2**cfg.levels
        self.context = cfg.context
        self.context_samples = self.model.context_samples if cfg.context else 0
        if memory_budget_bytes is None:
            memory_budget_bytes = default_memory_budget_bytes(self.device)
        self.memory_budget_bytes = int(memory_budget_bytes)
        if chunk_output_samples is None:
            blocks = self._blocks_for_budget(self.memory_budget_bytes)
        else:
            if chunk_output_samples < 1:
                raise ConfigError(f"chunk_output_samples must be >= 1, got {chunk_output_samples}")
            blocks = self._blocks_for_output(chunk_output_samples)
        self.blocks = blocks  # the step in units of 2**levels
        self.step_samples = blocks * self.scale
        self.chunk_output_samples = self._output_for_blocks(blocks)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs) -> Separator:
        """Rebuild the model a checkpoint describes (CheckpointError if it cannot)."""
        separator = cls(load_model(path, "cpu"), **kwargs)
        separator.origin = str(path)
        return separator

    # -- what the model is ------------------------------------------------
    @property
    def sample_rate_hz(self) -> int:
        return self.model.sample_rate_hz

    @property
    def channels(self) -> int:
        return self.model.config.channels

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.model.sources)

    @property
    def bounds(self) -> tuple[float, float | None]:
        return tuple(self.model.output_mode.bounds)

    # -- chunk arithmetic -------------------------------------------------
    def _output_for_blocks(self, blocks: int) -> int:
        """Valid output length whose aligned step is ``blocks * 2**levels``."""
        if not self.context:
            return blocks * self.scale
        return blocks * self.scale + self.model.config.up_kernel

    def _blocks_for_output(self, output_samples: int) -> int:
        valid = self.model.output_samples_for(output_samples)
        if self.context:
            valid -= self.model.config.up_kernel
        return max(1, valid // self.scale)

    def _blocks_for_budget(self, budget: int) -> int:
        def fits(blocks: int) -> bool:
            n = self._output_for_blocks(blocks)
            return estimate_activation_bytes(self.model, n, self.batch_size) <= budget

        cap = (
            MAX_CHUNK_OUTPUT_SAMPLES if self.device.type == "cuda" else MAX_CPU_CHUNK_OUTPUT_SAMPLES
        )
        hi = max(1, cap // self.scale)
        if fits(hi):
            return hi
        lo = 1  # used even if it does not fit: the smallest chunk there is
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo

    def plan(self, num_samples: int) -> ChunkPlan:
        """Tile ``num_samples`` (model rate): as few chunks as the chunk size allows, evenly sized.

        With context the result does not depend on the chunk size, so chunks are
        shrunk (in aligned steps) to cover the song with the least padding; a
        song shorter than one chunk is one smaller chunk. Without context the
        configured chunk is used as is, except for a song shorter than it.
        """
        if num_samples < 1:
            raise DataError("cannot separate zero-length audio")
        needed = math.ceil(num_samples / self.scale)
        if self.context:
            num_chunks = math.ceil(needed / self.blocks)
            blocks = math.ceil(needed / num_chunks)
        else:
            blocks = min(self.blocks, needed)
            num_chunks = math.ceil(needed / blocks)
        output = self._output_for_blocks(blocks)
        input_ = self.model.input_samples_for(output)
        assert input_ == output + 2 * self.context_samples
        return ChunkPlan(num_samples, output, blocks * self.scale, input_,
                         self.context_samples, num_chunks)

    # -- separation ---------------------------------------------------------
    def separate_tensor(
        self, mixture: torch.Tensor, *, desc: str | None = None
    ) -> SeparationResult:
        """Separate a mixture (C, T) at the model's sample rate and channel count.

        Returns stems and unclipped stems (S, C, T) as float32 CPU tensors, equal
        (with context) to one forward pass over the whole zero-padded song.
        """
        if not isinstance(mixture, torch.Tensor):
            mixture = torch.as_tensor(mixture)
        if mixture.dim() != 2 or mixture.shape[0] != self.channels:
            raise DataError(
                f"expected a mixture of shape ({self.channels}, samples), "
                f"got {tuple(mixture.shape)}"
            )
        song = mixture.detach().to("cpu", torch.float32).contiguous()
        if not torch.isfinite(song).all():
            raise DataError("the mixture contains NaN or infinite samples")
        total = song.shape[-1]
        n_sources = len(self.sources)
        stems = torch.empty(n_sources, self.channels, total)
        unclipped = torch.empty(n_sources, self.channels, total)
        position = 0
        for est, raw in self.iter_chunks(total, _TensorWindow(song), desc):
            n = est.shape[-1]
            stems[..., position:position + n] = est
            unclipped[..., position:position + n] = raw
            position += n
        return SeparationResult(stems, unclipped, self.sources, self.sample_rate_hz, self.bounds)

    def separate_passage(self, mixture: torch.Tensor | np.ndarray, start: int,
                         stop: int) -> SeparationResult:
        """The stems of ``mixture[:, start:stop]`` only, equal to separating the whole (C, T)
        mixture (:meth:`separate_tensor`) and cropping: the passage and the model's context
        on each side are separated, the window aligned to this separator's chunk grid (so its
        chunks are the whole song's chunks, and beyond the song the same zeros)."""
        total = mixture.shape[-1]
        if not 0 <= start < stop <= total:
            raise DataError(f"passage {start}:{stop} is not inside a song of {total} samples")
        context = self.model.input_samples - self.model.output_samples
        step = self.step_samples
        lo = max(0, start - context) // step * step
        hi = min(total, -(-(stop + context) // step) * step)
        window = self.separate_tensor(torch.as_tensor(mixture)[:, lo:hi].contiguous())
        crop = slice(start - lo, stop - lo)
        return SeparationResult(window.stems[..., crop].contiguous(),
                                window.unclipped[..., crop].contiguous(), self.sources,
                                self.sample_rate_hz, self.bounds)

    def iter_chunks(self, total: int, source: Window, desc: str | None = None, *,
                    check_finite: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The tiling loop: yield each chunk's kept (stems, unclipped), (S, C, n), in song order.

        ``source.window(start, stop)`` gives the model-rate input ``[start, stop)``
        (zeros outside the song), with ``start`` increasing from call to call, so
        a streaming source holds only the current chunks' inputs. The chunks'
        outputs tile ``[0, total)`` exactly. Both the array API and the
        file-to-file path (:mod:`waveunet.separation.streaming`) run this loop.

        With ``check_finite`` (the file-to-file path: a NaN would be written as a full-scale
        sample) a NaN or infinite output raises a DataError naming :attr:`origin`, after the
        first batch or at the song's end; the caller discards what was yielded. The array API
        returns such output as it is (``waveunet evaluate`` applies its ``nonfinite`` rule).
        """
        plan = self.plan(total)
        step, n_in = plan.step_samples, plan.input_samples
        was_training = self.model.training
        self.model.eval()
        # Whether every output so far is finite, kept on the model's device and read on the
        # host after the first batch (a broken model fails at once) and at the song's end,
        # not once per batch (a host sync on a GPU).
        finite = torch.ones((), dtype=torch.bool, device=self.device) if check_finite else None
        try:
            with tqdm(total=plan.num_chunks, desc=desc, unit="chunk", disable=not self.progress,
                      leave=False) as bar:
                for first in range(0, plan.num_chunks, self.batch_size):
                    chunks = range(first, min(first + self.batch_size, plan.num_chunks))
                    # song position of each chunk's input sample 0
                    batch = torch.stack([source.window(k * step - plan.context_samples,
                                                       k * step - plan.context_samples + n_in)
                                         for k in chunks])
                    with torch.inference_mode(), self.autocast():
                        out = self.model(batch.to(self.device))
                        kept = out.unclipped[..., :step]  # the stems are clamped from it
                        if finite is not None:
                            finite = finite & torch.isfinite(kept).all()
                        # one copy to the CPU as float32 (a view of ``out`` must not outlive it)
                        estimates = out.estimates[..., :step].to("cpu", torch.float32, copy=True)
                        raw = kept.to("cpu", torch.float32, copy=True)
                    del out, batch, kept
                    if finite is not None and (first == 0 or chunks.stop == plan.num_chunks):
                        self._check_finite(finite)
                    bar.update(len(chunks))
                    for j, k in enumerate(chunks):
                        n = min((k + 1) * step, total) - k * step
                        yield estimates[j, ..., :n], raw[j, ..., :n]
        finally:
            self.model.train(was_training)

    def _check_finite(self, finite: torch.Tensor) -> None:
        if not bool(finite):
            model = f"the model of {self.origin}" if self.origin else "the model"
            raise DataError(f"{model} produced non-finite output (NaN or infinity) in "
                            f"{self.precision}: its weights are broken, or overflow in this "
                            "precision")

    def autocast(self) -> torch.autocast:
        """The autocast context of this separator's precision (disabled for fp32)."""
        return autocast(self.device, self.precision)

    def separate_file(self, song, targets, **kwargs):
        """Stream ``song`` to one stem file per source in bounded memory.

        See :func:`waveunet.separation.streaming.separate_file` (the path ``waveunet separate``
        uses).
        """
        from .streaming import separate_file

        return separate_file(self, song, targets, **kwargs)

    def separate(self, audio: np.ndarray | torch.Tensor, sample_rate_hz: int, *,
                 desc: str | None = None, bound_statistics: bool = False) -> SeparationResult:
        """Separate (C, T) audio at any sample rate and channel count.

        The audio is resampled to the model's rate and mixed to its channels for
        the network; the stems come back at ``sample_rate_hz`` with the input's
        channel count and length (:meth:`back_to_song`). Content above the model's
        Nyquist frequency is in no stem. A rate whose ratio to the model's is too large to
        compute is treated as a close one, with a warning that gives the pitch change
        (:func:`waveunet.audio.tractable_rates`). A (frames, channels) array is refused
        (:func:`check_channels_first`). With ``bound_statistics`` the result also
        holds :func:`waveunet.metrics.bound_stats` of the model-rate output (resampling
        back rings past the bounds, which would count as clipping): what evaluation scores.
        """
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu().numpy()
        audio = np.asarray(audio)
        check_channels_first(audio)
        if not isinstance(sample_rate_hz, int | np.integer) or sample_rate_hz < 1:
            raise DataError(f"sample rate must be a positive integer, got {sample_rate_hz!r}")
        rate = int(sample_rate_hz)
        in_channels, length = audio.shape
        mix = convert_channels(audio.astype(np.float32, copy=False), self.channels, via_mono=True)
        # A ratio too large to compute is replaced by a close one, the same both ways, so the
        # stems stay sample-aligned with the song (waveunet.audio.tractable_rates).
        song_as, model_as = approximate_rates(rate, self.sample_rate_hz, desc or "song")
        # at least one sample: resampling gives ceil(new * length / orig) >= 1 for length >= 1
        mix = resample(mix, song_as, model_as)
        result = self.separate_tensor(torch.from_numpy(np.ascontiguousarray(mix)), desc=desc)
        statistics = None
        if bound_statistics:
            statistics = bound_stats(result.stems, result.unclipped,
                                     bounds=self.model.output_mode.bounds.measured())
        stems, unclipped = (_fit_length(resample(x, model_as, song_as), length)
                            for x in (result.stems, result.unclipped))
        stems, unclipped = self.back_to_song(stems, unclipped, in_channels,
                                             resampled=song_as != model_as)
        return SeparationResult(stems, unclipped, self.sources, rate, self.bounds, statistics)

    def back_to_song(self, stems: torch.Tensor, unclipped: torch.Tensor, channels: int,
                     resampled: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Stems already resampled back to a song's rate -> the song's channel count, and the
        stems clamped to the output bounds again if they were resampled (resampling rings
        slightly past a clipped peak); ``unclipped`` stays as it is.

        The one place for this rule: :meth:`separate` (and so ``waveunet evaluate``) and the
        block-wise stream of :mod:`waveunet.separation.streaming` call it.
        """
        stems = convert_channels(stems, channels, via_mono=True).contiguous()
        unclipped = convert_channels(unclipped, channels, via_mono=True).contiguous()
        if resampled:
            low, high = self.bounds
            stems = stems.clamp(min=low, max=high)
        return stems, unclipped


def check_channels_first(audio: np.ndarray | torch.Tensor) -> None:
    """DataError unless ``audio`` is a non-empty (channels, samples) array.

    soundfile and librosa's multi-channel arrays are (frames, channels): an array with more
    than :data:`MAX_PLAUSIBLE_CHANNELS` rows and fewer columns than rows is refused with the
    fix (``audio.T``) rather than transposed silently, since a short array (2 channels of 1
    sample) would be ambiguous. Their mono arrays are (frames,): refused with ``audio[None]``.
    """
    shape = tuple(audio.shape)
    if len(shape) == 1:  # soundfile's mono array
        raise DataError(f"expected audio of shape (channels, samples), got {shape}: for mono "
                        "audio pass audio[None] (one channel first)")
    if len(shape) != 2 or shape[0] < 1:
        raise DataError(f"expected audio of shape (channels, samples), got {shape}")
    if shape[0] > MAX_PLAUSIBLE_CHANNELS and shape[1] < shape[0]:
        raise DataError(
            f"expected audio of shape (channels, samples), got {shape}: this looks like "
            "soundfile's (frames, channels) layout; pass audio.T"
        )
    if shape[1] == 0:
        raise DataError("cannot separate zero-length audio")


class Window(Protocol):
    """A model-rate song that :meth:`Separator.iter_chunks` reads chunk inputs from."""

    def window(self, start: int, stop: int) -> torch.Tensor:
        """Samples ``[start, stop)`` (C, stop - start), zeros outside the song."""


class _TensorWindow:
    """The whole song in memory as a :class:`Window` for :meth:`Separator.iter_chunks`."""

    def __init__(self, song: torch.Tensor):
        self.song = song

    def window(self, start: int, stop: int) -> torch.Tensor:
        total = self.song.shape[-1]
        out = torch.zeros(self.song.shape[0], stop - start)
        lo, hi = max(start, 0), min(stop, total)
        if hi > lo:
            out[:, lo - start:hi - start] = self.song[:, lo:hi]
        return out


def _fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Truncate or zero-pad the last axis (resampling rounds the length up)."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return torch.nn.functional.pad(x, (0, length - x.shape[-1]))
