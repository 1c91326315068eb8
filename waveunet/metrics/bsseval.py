"""museval itself: full BSSEval v4 (SDR, ISR, SIR, SAR) per source and frame, museval's
per-track JSON, and many tracks scored in worker processes.

This module imports numpy and museval, never torch: museval's workers import only it, so each
starts in about half the time a worker importing torch would take. Tensors are accepted (told by
their type's module) and turned into numpy arrays in the calling process.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np

from ..errors import ConfigError, space_checked
from ..files import atomic_write_text, safe_filename

BSS_METRICS = ("SDR", "ISR", "SIR", "SAR")


def check_frame_params(win: int, hop: int) -> None:
    for name, v in (("win", win), ("hop", hop)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{name}: must be a positive integer number of samples, got {v!r}")


def _to_numpy_sct(x: Any, name: str) -> np.ndarray:
    # A tensor is told by its type's module: this module does not import torch.
    is_tensor = type(x).__module__.partition(".")[0] == "torch"
    arr = x.detach().cpu().numpy() if is_tensor else np.asarray(x)
    if arr.ndim != 3:
        raise ConfigError(f"{name}: expected shape (sources, channels, samples), got {arr.shape}")
    return arr.astype(np.float64, copy=False)


def silent_sources(arr: Any) -> list[int]:
    """Indices of the sources of an (S, C, T) array that are silent over the whole signal.

    museval's test: the sum over channels is 0 at every sample (museval cannot score those).
    """
    a = _to_numpy_sct(arr, "audio")
    return np.flatnonzero(np.all(a.sum(axis=1) == 0, axis=-1)).tolist()


def bss_eval(
    references: Any,
    estimates: Any,
    sample_rate_hz: int,
    *,
    win_seconds: float = 1.0,
    hop_seconds: float = 1.0,
) -> dict[str, np.ndarray]:
    """Full BSSEval v4 (``museval.evaluate``): SDR, ISR, SIR, SAR per source and frame.

    All sources of one task are scored together, as ``museval.eval_mus_track`` does for
    like-with-like comparisons (voice task: vocals with accompaniment; 4-source task: all four).
    Slow (tens of seconds per minute of audio); use :func:`framewise_sdr` for SDR alone.

    Args:
        references, estimates: (S, C, T) arrays; estimates padded/truncated to T by museval.
        sample_rate_hz: sample rate, to turn the window and hop into samples.

    Returns:
        {"SDR": (S, F), "ISR": ..., "SIR": ..., "SAR": ...} float64 numpy arrays.
    """
    import museval  # lazy: importing museval pulls in musdb, pandas and jsonschema

    if sample_rate_hz <= 0:
        raise ConfigError(f"sample_rate_hz: must be positive, got {sample_rate_hz}")
    ref = _to_numpy_sct(references, "references")
    est = _to_numpy_sct(estimates, "estimates")
    if ref.shape[:2] != est.shape[:2]:
        raise ConfigError(
            f"estimates: (sources, channels) {est.shape[:2]} differ from references {ref.shape[:2]}"
        )
    if ref.shape[0] < 2:
        # With one source BSSEval has no interference to measure; museval warns and misbehaves.
        raise ConfigError(f"references: BSSEval needs at least 2 sources, got {ref.shape[0]}")
    for name, arr in (("references", ref), ("estimates", est)):
        silent = silent_sources(arr)
        if silent:
            raise ConfigError(
                f"{name}: source(s) {silent} are silent over the whole signal; museval cannot "
                "score them"
            )
    win = int(round(win_seconds * sample_rate_hz))
    hop = int(round(hop_seconds * sample_rate_hz))
    check_frame_params(win, hop)
    sdr, isr, sir, sar = museval.evaluate(
        np.moveaxis(ref, 1, 2), np.moveaxis(est, 1, 2), win=win, hop=hop
    )
    return {"SDR": sdr, "ISR": isr, "SIR": sir, "SAR": sar}


def museval_track_json(
    track_name: str,
    source_names: Sequence[str],
    scores: dict[str, np.ndarray],
    *,
    win_seconds: float = 1.0,
    hop_seconds: float = 1.0,
) -> str:
    """Per-track JSON exactly as ``museval.eval_mus_track`` writes it (museval's own TrackStore:
    values quantised to 1e-5, inf written as NaN), validated against museval's schema."""
    from museval.aggregate import TrackStore

    store = TrackStore(track_name=track_name, win=win_seconds, hop=hop_seconds)
    for i, name in enumerate(source_names):
        store.add_target(target_name=name, values={m: scores[m][i].tolist() for m in BSS_METRICS})
    store.validate()
    return store.json


@dataclass
class BssJob:
    """One track to score with museval: (S, C, T) arrays and the source names in that order."""

    name: str
    source_names: Sequence[str]
    references: Any
    estimates: Any


def _as_numpy(job: BssJob) -> BssJob:
    return BssJob(job.name, list(job.source_names),
                  _to_numpy_sct(job.references, "references"),
                  _to_numpy_sct(job.estimates, "estimates"))


def _run_bss_job(
    job: BssJob, sample_rate_hz: int, win_seconds: float, hop_seconds: float, json_dir: str | None
) -> tuple[str, dict[str, np.ndarray]]:
    scores = bss_eval(
        job.references,
        job.estimates,
        sample_rate_hz,
        win_seconds=win_seconds,
        hop_seconds=hop_seconds,
    )
    if json_dir is not None:
        text = museval_track_json(
            job.name, job.source_names, scores, win_seconds=win_seconds, hop_seconds=hop_seconds
        )
        path = os.path.join(json_dir, safe_filename(job.name) + ".json")
        with space_checked(path):
            atomic_write_text(path, text)
    return job.name, scores


# Ctrl-C in a terminal reaches every process of its group: this one reports it in one line.
# museval's workers take SIGINT only while they score (the job stops, and its KeyboardInterrupt
# comes back as the job's result, unprinted); a worker that waits for its next job ignores it,
# and one still starting holds it back until its first job, where either would print a
# traceback of its own. A spawned process inherits the signal mask of the thread that starts
# it, hence the mask around submit below; ignoring (not masking) covers the worker's threads.
_CTRL_C = {signal.SIGINT}


def _run_bss_job_in_worker(*args: Any) -> tuple[str, dict[str, np.ndarray]]:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _CTRL_C)  # one held back stops the job now
        return _run_bss_job(*args)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the next job


@contextmanager
def _ctrl_c_held_back() -> Iterator[None]:
    """SIGINT held back in this thread meanwhile; delivered (KeyboardInterrupt) after."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _CTRL_C)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _score_in(pool: ProcessPoolExecutor, jobs: list, load: Callable[[Any], BssJob],
              args: tuple, n_workers: int, results: dict, bar: Any) -> None:
    """At most ``n_workers`` jobs in flight, each loaded just before it is submitted."""
    pending: set[Future[Any]] = set()
    it = iter(jobs)
    exhausted = False
    while pending or not exhausted:
        while not exhausted and len(pending) < n_workers:
            try:
                j = next(it)
            except StopIteration:
                exhausted = True
                break
            job = _as_numpy(load(j))  # the worker unpickles numpy, not torch
            with _ctrl_c_held_back():  # the worker it may start inherits the mask
                pending.add(pool.submit(_run_bss_job_in_worker, job, *args))
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            name, scores = fut.result()
            results[name] = scores
            bar.update(1)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the workers now (Ctrl-C, SIGTERM, an error): their jobs are abandoned, and a worker
    still starting would otherwise outlive this process and print the traceback of its failed
    start. (``ProcessPoolExecutor.terminate_workers`` comes with Python 3.14; its process table
    is read here instead.)"""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def evaluate_tracks(
    jobs: Iterable[BssJob] | Iterable[Callable[[], BssJob]],
    sample_rate_hz: int,
    *,
    json_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    win_seconds: float = 1.0,
    hop_seconds: float = 1.0,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """Run :func:`bss_eval` on many tracks in worker processes, with a tqdm progress bar.

    Args:
        jobs: :class:`BssJob` s, or zero-argument callables returning one (loaded lazily in
            this process, so only ``workers`` tracks are held in memory and in flight at once).
        json_dir: if given, one ``<track>.json`` per track in museval's format is written there.
        workers: worker processes (default: min(CPU count, 4); museval peaks at ~4 GB per job).
            ``workers=0`` runs in this process (debugging, tests).

    Returns:
        {track name: {"SDR"|"ISR"|"SIR"|"SAR": (S, F) array}} in completion order.
    """
    from tqdm import tqdm

    jobs = list(jobs) if not isinstance(jobs, list) else jobs
    out_dir = None if json_dir is None else os.fspath(json_dir)
    n_workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    if n_workers < 0:
        raise ConfigError(f"workers: must be >= 0, got {workers}")
    results: dict[str, dict[str, np.ndarray]] = {}
    args = (sample_rate_hz, win_seconds, hop_seconds, out_dir)

    def load(j: BssJob | Callable[[], BssJob]) -> BssJob:
        return j if isinstance(j, BssJob) else j()

    with tqdm(total=len(jobs), desc="bss_eval", unit="track", disable=not progress) as bar:
        if n_workers == 0:
            for j in jobs:
                name, scores = _run_bss_job(load(j), *args)
                results[name] = scores
                bar.update(1)
            return results
        # spawn, not fork: forking a process that has run torch/OpenMP threads can deadlock.
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn")) as pool:
            try:
                _score_in(pool, jobs, load, args, n_workers, results, bar)
            except BaseException:
                _stop_workers(pool)
                raise
    return results
