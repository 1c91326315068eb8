"""The many-song pipeline: decoding, the model and the writing overlap, on the CPU too, and
give exactly what the one-song stream gives."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from waveunet.errors import DataError
from waveunet.model.network import build_model
from waveunet.separation import pipeline, streaming
from waveunet.separation.inference import Separator
from waveunet.separation.pipeline import Job, separate_files
from waveunet.separation.streaming import separate_file

SOURCES = ("accompaniment", "vocals")


def separator(**kwargs) -> Separator:
    torch.manual_seed(0)
    model = build_model(
        {"levels": 3, "initial_filters": 4, "output_samples": 256, "channels": 2,
         "sample_rate_hz": 22050},
        {"type": "difference", "activation": "tanh"},
    )
    return Separator(model, device="cpu", chunk_output_samples=2000, **kwargs)


def song(folder: Path, name: str, seconds: float, rate: int, channels: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    audio = (0.3 * rng.uniform(-1, 1, (int(seconds * rate), channels))).astype(np.float32)
    path = folder / name
    sf.write(str(path), audio, rate, subtype="PCM_24" if path.suffix == ".flac" else "FLOAT")
    return path


def targets(folder: Path, stems=SOURCES) -> dict[str, Path]:
    return {s: folder / f"{s}.wav" for s in stems}


def test_many_songs_equal_the_one_song_stream(tmp_path):
    sep = separator()
    songs = [song(tmp_path, "a.wav", 1.5, 44100, 2, 0), song(tmp_path, "b.flac", 0.4, 22050, 1, 1),
             song(tmp_path, "c.wav", 2.2, 48000, 2, 2)]
    jobs = [Job(s, targets(tmp_path / "many" / s.stem)) for s in songs]
    seen = []
    outcomes = separate_files(sep, jobs, subtype="FLOAT", block_frames=4096,
                              on_done=lambda o: seen.append(o.job.song))
    assert seen == songs and [o.job for o in outcomes] == jobs
    assert all(o.error is None for o in outcomes)
    for s in songs:
        one = separate_file(sep, s, targets(tmp_path / "one" / s.stem), subtype="FLOAT",
                            block_frames=4096)
        many = next(o.result for o in outcomes if o.job.song == s)
        assert many.clip_report == one.clip_report and many.frames == one.frames
        for source in SOURCES:
            a, _ = sf.read(str(tmp_path / "many" / s.stem / f"{source}.wav"), dtype="float32")
            b, _ = sf.read(str(tmp_path / "one" / s.stem / f"{source}.wav"), dtype="float32")
            np.testing.assert_array_equal(a, b)


def test_the_stages_overlap_in_three_threads(tmp_path, monkeypatch):
    """The model is still on song 1 when song 2 is opened and decoded: a sequential loop would
    wait here for ever (the test would time out at the assertion)."""
    sep = separator()
    songs = [song(tmp_path, f"{i}.wav", 1.0, 22050, 2, i) for i in range(3)]
    opened = {s: threading.Event() for s in songs}
    threads: dict[str, set[str]] = {"decode": set(), "model": set(), "write": set()}
    overlapped = []

    class Reader(streaming.SongReader):
        def __init__(self, path, *args, **kwargs):
            super().__init__(path, *args, **kwargs)
            threads["decode"].add(threading.current_thread().name)
            opened[Path(path)].set()

    class Writer(streaming.StemWriter):
        def push(self, stems, raw):
            threads["write"].add(threading.current_thread().name)
            super().push(stems, raw)

    real_iter_chunks = sep.iter_chunks

    def iter_chunks(total, source, desc=None, **options):
        threads["model"].add(threading.current_thread().name)
        if desc == "0.wav":  # song 1 in the model: song 2 must get decoded meanwhile
            overlapped.append(opened[songs[1]].wait(timeout=30))
        yield from real_iter_chunks(total, source, desc, **options)

    monkeypatch.setattr(pipeline, "SongReader", Reader)
    monkeypatch.setattr(pipeline, "StemWriter", Writer)
    monkeypatch.setattr(sep, "iter_chunks", iter_chunks)
    jobs = [Job(s, targets(tmp_path / "out" / s.stem), desc=s.name) for s in songs]
    outcomes = separate_files(sep, jobs)
    assert overlapped == [True]
    assert all(o.error is None for o in outcomes)
    assert threads["model"] == {threading.main_thread().name}
    assert len(threads["decode"] | threads["model"] | threads["write"]) == 3


def test_a_bad_song_fails_alone(tmp_path):
    sep = separator()
    good = song(tmp_path, "good.wav", 0.5, 22050, 2, 0)
    audio = np.zeros((3 * 22050, 2), np.float32)
    audio[-10] = np.nan  # found in the last block, after stems were partly written
    bad = tmp_path / "bad.wav"
    sf.write(str(bad), audio, 22050, subtype="FLOAT")
    missing = tmp_path / "missing.wav"
    jobs = [Job(p, targets(tmp_path / "out" / p.stem)) for p in (bad, missing, good)]
    outcomes = separate_files(sep, jobs, block_frames=8192)
    assert [type(o.error) for o in outcomes] == [DataError, DataError, type(None)]
    assert "NaN" in str(outcomes[0].error) and "not found" in str(outcomes[1].error)
    written = sorted(p.relative_to(tmp_path / "out").as_posix()
                     for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == [f"good/{s}.wav" for s in SOURCES]


def test_an_interruption_stops_every_stage_and_leaves_no_file(tmp_path, monkeypatch):
    sep = separator()
    songs = [song(tmp_path, f"{i}.wav", 2.0, 22050, 2, i) for i in range(3)]
    real_iter_chunks = sep.iter_chunks

    def iter_chunks(total, source, desc=None, **options):
        for k, chunk in enumerate(real_iter_chunks(total, source, desc, **options)):
            if desc == "1.wav" and k == 3:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(sep, "iter_chunks", iter_chunks)
    jobs = [Job(s, targets(tmp_path / "out" / s.stem), desc=s.name) for s in songs]
    done = []
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(KeyboardInterrupt):
        separate_files(sep, jobs, on_done=done.append)
    assert [o.job.song for o in done] == [songs[0]]
    written = sorted(p.relative_to(tmp_path / "out").as_posix()
                     for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == [f"0/{s}.wav" for s in SOURCES]  # song 1's temporaries are gone
    assert not ({t.name for t in threading.enumerate()} - before)  # no stage left running


def test_a_fatal_error_is_raised_only_after_the_writer_cleaned_up(tmp_path, monkeypatch):
    """A bug in the decode stage while the model waits for blocks stops the run; the error comes
    out of separate_files only once the writer has removed the song's temporaries (a process
    that exits on it would otherwise kill the daemon writer in the middle of its clean-up)."""
    sep = separator()
    songs = [song(tmp_path, f"{i}.wav", 1.0, 22050, 2, i) for i in range(2)]

    class Reader(streaming.SongReader):
        def blocks(self):
            source = super().blocks()
            yield next(source)
            yield next(source)
            time.sleep(0.5)  # the model has used both blocks and waits for more
            raise RuntimeError("a bug in the decode stage")

    aborted = []

    class Writer(streaming.StemWriter):
        def abort(self):
            aborted.append(sorted(p.name for p in self.temps if p.exists()))
            time.sleep(1.0)  # a slow clean-up (a network disk)
            super().abort()

    monkeypatch.setattr(pipeline, "SongReader", Reader)
    monkeypatch.setattr(pipeline, "StemWriter", Writer)
    jobs = [Job(s, targets(tmp_path / "out" / s.stem)) for s in songs]
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeError, match="a bug in the decode stage"):
        separate_files(sep, jobs, block_frames=4096)
    assert len(aborted) == 1 and len(aborted[0]) == 2  # song 0's two temporaries existed
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == []
    assert not ({t.name for t in threading.enumerate()} - before)  # no stage left running
