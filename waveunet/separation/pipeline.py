"""Separating many songs: decoding, the model and the writing of stems run at the same time.

Three stages in three threads, joined by bounded queues, so memory stays bounded (a few
blocks and chunks per queue) whatever the songs' lengths:

* decode (a thread): each song is opened, decoded block by block, mixed to the model's
  channels and resampled to its rate (:class:`waveunet.separation.streaming.SongReader`); it runs
  ahead into the next song while the model is still on this one;
* model (the calling thread): the tiling loop (:meth:`Separator.iter_chunks`) over a window
  fed by the decode stage; the model is loaded, and CUDA initialised, once for all songs;
* write (a thread): each chunk's stems are resampled back, brought to the song's channels and
  clamped (:meth:`Separator.back_to_song`) and appended to pid-tagged temporaries, renamed into
  place when the song is complete (:class:`waveunet.separation.streaming.StemWriter`).

torch's kernels, libsndfile and file writes release the GIL, so the stages overlap. Each song's
result is the same as :func:`waveunet.separation.streaming.separate_file` gives (the same stage
objects, run one after the other there). A song that fails (unreadable, cut short, disk full, ...)
is reported in its :class:`Outcome` and the others go on. Ctrl-C (or SIGTERM, which the CLI turns
into the same) stops all three stages: the song being written leaves no file behind.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import WaveUNetError
from .streaming import (
    DEFAULT_BLOCK_FRAMES,
    FileSeparation,
    SongReader,
    StemWriter,
    StreamingSeparator,
    StreamWindow,
)

# Errors that fail one song and let the others go on; anything else stops the run.
SONG_ERRORS = (WaveUNetError, OSError)
# Items a queue holds: decoded blocks (2**16 frames each) or separated chunks.
QUEUE_ITEMS = 8
_POLL_SECONDS = 0.1


@dataclass
class Job:
    """One song and where its stems go (some or all of the separator's sources)."""

    song: Path
    targets: Mapping[str, Path]
    desc: str | None = None


@dataclass
class Outcome:
    """What became of one job: its stems, or the error that stopped it."""

    job: Job
    result: FileSeparation | None = None
    error: BaseException | None = None


@dataclass
class _Run:
    stop: threading.Event = field(default_factory=threading.Event)
    fatal: list[BaseException] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)  # id() of jobs whose writing failed


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put unless the run stopped; False if it did."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event, thread: threading.Thread | None = None) -> Any:
    while True:
        try:
            return q.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            if stop.is_set():
                raise _Stopped() from None
            if thread is not None and not thread.is_alive():
                raise RuntimeError("a pipeline stage ended unexpectedly") from None


class _Stopped(Exception):
    """The run is stopping (interrupted, or a fatal error in another stage)."""


def separate_files(
    separator: StreamingSeparator,
    jobs: Sequence[Job],
    *,
    subtype: str | None = None,
    overwrite: bool = False,
    compression_level: float | None = None,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Separate every job's song into its targets, the stages overlapped (module docstring).

    Returns one :class:`Outcome` per job, in order; ``on_done`` is called with each as soon
    as its stems are on disk (or it failed), in job order, from the write stage's thread.
    """
    run = _Run()
    blocks: queue.Queue = queue.Queue(QUEUE_ITEMS)
    chunks: queue.Queue = queue.Queue(QUEUE_ITEMS)

    def finish(outcome: Outcome) -> None:
        run.outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    decoder = threading.Thread(target=_decode_stage, name="waveunet-decode", daemon=True,
                               args=(separator, jobs, block_frames, blocks, run))
    writer = threading.Thread(
        target=_write_stage, name="waveunet-write", daemon=True,
        args=(separator, chunks, run, finish,
              {"subtype": subtype, "overwrite": overwrite, "compression_level": compression_level}))
    decoder.start()
    writer.start()
    try:
        for job in jobs:
            _model_stage(separator, job, blocks, chunks, run, decoder)
        _put(chunks, ("done",), run.stop)
        while writer.is_alive():
            writer.join(_POLL_SECONDS)
    except _Stopped:
        pass  # a fatal error in another stage, raised below
    finally:
        run.stop.set()
        # Whatever stopped the run (Ctrl-C here, a fatal error in a stage), the writer removes
        # the temporaries of the song it was writing before anything is raised: the process
        # may exit right after, and its daemon threads with it.
        writer.join()
        decoder.join(1.0)
    if run.fatal:
        raise run.fatal[0]
    return run.outcomes


def _decode_stage(separator: StreamingSeparator, jobs: Sequence[Job], block_frames: int,
                  blocks: queue.Queue, run: _Run) -> None:
    for job in jobs:
        try:
            reader = SongReader(job.song, separator.sample_rate_hz, separator.channels,
                                block_frames)
        except SONG_ERRORS as exc:
            if not _put(blocks, ("failed", exc), run.stop):
                return
            continue
        except BaseException as exc:
            run.fatal.append(exc)
            run.stop.set()
            return
        try:
            if not _put(blocks, ("song", reader), run.stop):
                return
            for block in reader.blocks():
                if not _put(blocks, ("block", block), run.stop):
                    return
            item: tuple = ("end",)
        except SONG_ERRORS as exc:
            item = ("error", exc)
        except BaseException as exc:
            run.fatal.append(exc)
            run.stop.set()
            return
        finally:
            reader.close()
        if not _put(blocks, item, run.stop):
            return


def _model_stage(separator: StreamingSeparator, job: Job, blocks: queue.Queue,
                 chunks: queue.Queue, run: _Run, decoder: threading.Thread) -> None:
    """Run one song through the model, its input from ``blocks``, its output to ``chunks``."""
    if run.stop.is_set():
        raise _stopped(run)
    item = _get(blocks, run.stop, decoder)
    if item[0] == "failed":
        _put(chunks, ("failed", job, item[1]), run.stop)
        return
    reader: SongReader = item[1]
    state = {"open": True}

    def song_blocks() -> Iterator[torch.Tensor]:
        while True:
            kind, *rest = _get(blocks, run.stop, decoder)
            if kind == "block":
                yield rest[0]
                continue
            state["open"] = False
            if kind == "error":
                raise rest[0]
            return

    if not _put(chunks, ("start", job, reader), run.stop):
        raise _stopped(run)
    source = song_blocks()
    try:
        window = StreamWindow(source, reader.total, separator.channels)
        for est, raw in separator.iter_chunks(reader.total, window, job.desc,
                                              check_finite=True):
            if id(job) in run.failed:  # its writing failed (disk full, ...): stop computing
                break
            if not _put(chunks, ("chunk", est, raw), run.stop):
                raise _stopped(run)
        _put(chunks, ("end",), run.stop)
    except SONG_ERRORS as exc:
        _put(chunks, ("abort", exc), run.stop)
    while state["open"] and not run.stop.is_set():  # the rest of this song's blocks
        try:
            next(source)
        except (StopIteration, *SONG_ERRORS):
            break


def _stopped(run: _Run) -> BaseException:
    return run.fatal[0] if run.fatal else _Stopped()


def _write_stage(separator: StreamingSeparator, chunks: queue.Queue, run: _Run,
                 finish: Callable[[Outcome], None], options: dict[str, Any]) -> None:
    writer: StemWriter | None = None
    job: Job | None = None
    try:
        while True:
            try:
                item = _get(chunks, run.stop)
            except _Stopped:
                return
            kind = item[0]
            if kind == "done":
                return
            if kind == "failed":
                finish(Outcome(item[1], error=item[2]))
            elif kind == "start":
                job, reader = item[1], item[2]
                try:
                    writer = StemWriter(separator, reader, job.targets, **options)
                    writer.open()
                except SONG_ERRORS as exc:
                    if writer is not None:
                        writer.abort()
                    writer = None
                    run.failed.add(id(job))
                    finish(Outcome(job, error=exc))
            elif writer is None:  # the rest of a song whose writer failed
                continue
            elif kind == "chunk":
                try:
                    writer.push(item[1], item[2])
                except SONG_ERRORS as exc:
                    writer.abort()
                    writer = None
                    run.failed.add(id(job))
                    finish(Outcome(job, error=exc))
            elif kind == "end":
                current, writer = writer, None
                try:
                    result = current.commit()
                except SONG_ERRORS as exc:
                    current.abort()
                    finish(Outcome(job, error=exc))
                else:
                    finish(Outcome(job, result=result))
            elif kind == "abort":
                writer.abort()
                writer = None
                finish(Outcome(job, error=item[1]))
    except BaseException as exc:
        run.fatal.append(exc)
        run.stop.set()
    finally:
        if writer is not None:
            writer.abort()
