"""Time SDR-only (waveunet.metrics.framewise_sdr) vs full BSSEval (museval) per minute of audio.

Stereo 44.1 kHz noise-like signals, 2 and 4 sources. museval's cost grows with the signal
length (FFT correlations over the whole signal); it is timed once on --museval-seconds of
audio (default a full minute) and scaled to one minute; framewise_sdr is timed on a minute
(best of --repeats).

    python scripts/bench_metrics.py [--museval-seconds 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from waveunet.metrics import bss_eval, framewise_sdr

RATE_HZ = 44100


def _signals(n_src: int, seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE_HZ)
    ref = (0.2 * rng.standard_normal((n_src, 2, n))).astype(np.float32)
    est = (ref + 0.05 * rng.standard_normal((n_src, 2, n))).astype(np.float32)
    return ref, est


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--museval-seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for n_src in (2, 4):
        ref, est = _signals(n_src, 60.0)
        tr, te = torch.from_numpy(ref), torch.from_numpy(est)
        framewise_sdr(tr, te)  # warm-up
        best = min(_timed(framewise_sdr, tr, te) for _ in range(args.repeats))
        print(f"{n_src} sources  framewise_sdr (torch, CPU): {best * 1000:8.1f} ms per minute")
        if torch.cuda.is_available():
            gr, ge = tr.cuda(), te.cuda()
            framewise_sdr(gr, ge)
            torch.cuda.synchronize()
            best = min(_timed(_sdr_synced, gr, ge) for _ in range(args.repeats))
            print(f"{n_src} sources  framewise_sdr (torch, GPU): {best * 1000:8.1f} ms per minute")
        sec = args.museval_seconds
        r, e = ref[..., : int(sec * RATE_HZ)], est[..., : int(sec * RATE_HZ)]
        t = _timed(bss_eval, r, e, RATE_HZ)
        print(
            f"{n_src} sources  museval bss_eval:          {t:8.2f} s for {sec:g} s "
            f"-> {t * 60 / sec:8.1f} s per minute" + ("" if sec == 60 else " (scaled linearly)")
        )


def _sdr_synced(ref: torch.Tensor, est: torch.Tensor) -> None:
    framewise_sdr(ref, est)
    torch.cuda.synchronize()  # GPU work is asynchronous: time its completion


def _timed(fn: Callable[..., object], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
