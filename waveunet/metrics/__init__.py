"""SDR, BSSEval and clipping statistics: the one place where separation quality is measured.

Everything here is model independent and works on ``(S, C, T)`` arrays (sources, channels,
samples), torch tensors (CPU or GPU) or numpy arrays alike. Computation is in float64.

Two SDR paths:

* :func:`framewise_sdr` -- fast, vectorised torch reimplementation of museval's (BSSEval v4)
  SDR. museval's SDR reduces exactly to a framewise SNR, so no projection filters are needed;
  it reproduces museval's frame and NaN rules to ~1e-12 dB.
* :func:`bss_eval` / :func:`evaluate_tracks` -- museval itself, for SDR/ISR/SIR/SAR (slow:
  512-tap projection filters), with per-track JSON in museval's own format.

Aggregation follows both conventions in use, and says which is which:

* :func:`aggregate_pooled` -- the Wave-U-Net papers: all 1-s frames of all tracks pooled.
* :func:`aggregate_tracks` -- SiSEC / Open-Unmix / Demucs: median over frames per track, then
  median (and mean) over tracks.

Clipping statistics (:func:`clipping_stats`, :func:`difference_error_share`) measure what the
bounded output does to the estimate: how often it hits the bound, by how much a linear output
overshoots before the test-time clip, and how much a tanh output attenuates loud passages.

Modules: :mod:`.sdr` (framewise SDR, aggregation), :mod:`.bsseval` (museval: full BSSEval,
its JSON, worker processes; no torch), :mod:`.clipping` (bounds and clipping statistics),
:mod:`.arrays` (checked array inputs). Everything public is importable from
``waveunet.metrics``; its modules are imported when a name is first used, so museval's worker
processes, which import :mod:`.bsseval` alone, do not load torch.
"""

__all__ = [
    "BOUND_KEYS", "BSS_METRICS", "ArrayLike", "BssJob", "aggregate_pooled", "aggregate_tracks",
    "at_bounds", "beyond_bounds", "bound_hits", "bound_stats", "bss_eval", "clipping_stats",
    "difference_error_share", "evaluate_tracks", "framewise_sdr", "museval_track_json",
    "num_frames", "silent_sources",
]


def __getattr__(name: str):
    if name == "ArrayLike":
        from . import arrays as module
    elif name in ("BSS_METRICS", "BssJob", "bss_eval", "evaluate_tracks", "museval_track_json",
                  "silent_sources"):
        from . import bsseval as module
    elif name in ("aggregate_pooled", "aggregate_tracks", "framewise_sdr", "num_frames"):
        from . import sdr as module
    elif name in __all__:
        from . import clipping as module
    else:
        raise AttributeError(f"module 'waveunet.metrics' has no attribute {name!r}")
    return getattr(module, name)
