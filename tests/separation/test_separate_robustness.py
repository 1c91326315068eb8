"""``waveunet separate`` under hostile input and conditions: odd rates, broken files, a full
disk, signals, stale temporaries, names that try to leave the output folder."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import dead_pid, files_under, separate, tiny_checkpoint, tone, write_song

from waveunet.files import remove_stale_temporaries, temporary_next_to

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("accompaniment", "vocals")
MODEL = "model"  # the checkpoint file's stem: it has no run config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def checkpoint_44k(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt44") / "model.pt", rate=44100)


def env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


# -- inputs are never overwritten, names never leave -o -----------------------------------


def test_force_never_overwrites_an_input(tmp_path, checkpoint, capsys):
    song = write_song(tmp_path / "out" / MODEL / "vocals" / "vocals.wav")  # its own target
    before = song.read_bytes()
    assert separate(song, "-c", checkpoint, "-o", tmp_path / "out", "--force", "-q") == 1
    assert "would overwrite an input song" in capsys.readouterr().err
    assert song.read_bytes() == before
    assert files_under(tmp_path / "out") == [f"{MODEL}/vocals/vocals.wav"]


def test_track_names_are_safe_path_components(tmp_path, checkpoint):
    names = ("...wav", "..wav", ".wav", "Mike's Song (Live) [2].wav")
    songs = [write_song(tmp_path / "in" / name, format="WAV") for name in names]
    out = tmp_path / "in" / "out"
    assert separate(*songs, "-c", checkpoint, "-o", out, "-q") == 0
    tracks = ("__", "_", "_wav", "Mike's Song (Live) [2]")  # MUSDB18's characters are kept
    assert files_under(tmp_path / "in") == sorted(
        [*names, "out/.waveunet-separate.json"]
        + [f"out/{MODEL}/{t}/{s}.wav" for t in tracks for s in SOURCES])


# -- broken files ---------------------------------------------------------------------------


def test_a_corrupt_file_is_one_line_with_the_detail_on_verbose(tmp_path, checkpoint, capsys):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    assert separate(corrupt, "-c", checkpoint, "-o", tmp_path / "out", "-q") == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and str(corrupt) in lines[0] and "cannot read audio file" in lines[0]
    assert lines[1].startswith("waveunet separate: 1 of 1 song(s) failed")
    assert separate(corrupt, "-c", checkpoint, "-o", tmp_path / "out", "-q", "-v") == 1
    verbose = capsys.readouterr().err.splitlines()
    assert verbose[0].startswith(f"waveunet separate: error: cannot read audio file {corrupt}")
    assert any(line.startswith("    libsndfile:") for line in verbose)
    assert any(line.startswith("    ffmpeg:") for line in verbose)


def test_a_decode_error_part_way_fails_that_song_alone(tmp_path, checkpoint, capsys):
    whole = write_song(tmp_path / "whole.flac", tone(seconds=6.0, rate=44100, seed=3), 44100)
    data = whole.read_bytes()
    truncated = tmp_path / "trunc.flac"
    truncated.write_bytes(data[: len(data) // 2])
    good = write_song(tmp_path / "good.wav")
    out = tmp_path / "out"
    assert separate(truncated, good, "-c", checkpoint, "-o", out, "-q") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and str(truncated) in err[0] and "cannot decode it after" in err[0]
    assert "Traceback" not in "\n".join(err)
    assert files_under(out) == [".waveunet-separate.json"] + [f"{MODEL}/good/{s}.wav"
                                                             for s in SOURCES]


# -- a full disk ------------------------------------------------------------------------------

FILL_DRIVER = textwrap.dedent("""
    import resource, signal, sys
    limit = int(sys.argv[1])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from waveunet.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_file_size_limit_fails_the_song_in_one_line_and_leaves_nothing(tmp_path, checkpoint):
    big = write_song(tmp_path / "big.wav", tone(seconds=4.0, seed=1))  # 4 s stems: 352 kB each
    small = write_song(tmp_path / "small.wav", tone(seconds=0.5))  # 44 kB each
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", FILL_DRIVER, str(200_000), "separate", str(big), str(small),
         "-c", str(checkpoint), "-o", str(out), "-q", "--chunk-seconds", "0.5"],
        capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert "Traceback" not in done.stderr
    assert len(lines) == 2, done.stderr
    # the song, then the stem of it that could not be written, and why
    assert lines[0].startswith(f"waveunet separate: error: {big}: cannot write "
                               f"{out / MODEL / 'big'}{os.sep}"), lines[0]
    assert lines[0].endswith(".wav: no space (the file-size limit is reached)"), lines[0]
    assert lines[1] == f"waveunet separate: 1 of 2 song(s) failed: {big}"
    assert files_under(out) == [".waveunet-separate.json"] + [f"{MODEL}/small/{s}.wav"
                                                             for s in SOURCES]


def test_no_space_for_the_manifest_fails_each_song_in_one_line(tmp_path, checkpoint, capsys,
                                                              monkeypatch):
    """The manifest is written on the write stage's thread, after a song's stems: no space for it
    fails that song alone, in one line, and the next song tries again; the stems stay."""
    from waveunet.separation import layout

    def no_space(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(layout, "atomic_write_text", no_space)
    songs = [write_song(tmp_path / f"{name}.wav") for name in ("a", "b")]
    out = tmp_path / "out"
    assert separate(*songs, "-c", checkpoint, "-o", out, "-q") == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    for song, line in zip(songs, lines, strict=False):
        assert line == (f"waveunet separate: error: {song}: cannot write "
                        f"{out / '.waveunet-separate.json'}: no space (the disk is full)")
    assert lines[2] == f"waveunet separate: 2 of 2 song(s) failed: {songs[0]}, {songs[1]}"
    assert files_under(out) == [f"{MODEL}/{t}/{s}.wav" for t in "ab" for s in SOURCES]


def test_a_file_size_limit_that_stops_only_the_manifest(tmp_path, checkpoint):
    """The real thing, not a mocked write: songs so short that their stems fit under the
    file-size limit and the manifest does not."""
    songs = [write_song(tmp_path / f"{name}.wav", tone(seconds=0.001)) for name in ("a", "b")]
    sizes = tmp_path / "sizes"
    assert separate(songs[0], "-c", checkpoint, "-o", sizes, "-q") == 0
    stem = max((sizes / MODEL / "a" / f"{s}.wav").stat().st_size for s in SOURCES)
    manifest = (sizes / ".waveunet-separate.json").stat().st_size
    assert stem < manifest, (stem, manifest)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", FILL_DRIVER, str((stem + manifest) // 2), "separate",
         *map(str, songs), "-c", str(checkpoint), "-o", str(out), "-q"],
        capture_output=True, text=True, env=env(), timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"waveunet separate: error: {song}: cannot write {out / '.waveunet-separate.json'}: "
        "no space (the file-size limit is reached)" for song in songs] + [
        f"waveunet separate: 2 of 2 song(s) failed: {songs[0]}, {songs[1]}"]
    assert files_under(out) == [f"{MODEL}/{t}/{s}.wav" for t in "ab" for s in SOURCES]


def test_an_earlier_stem_that_cannot_be_removed_fails_its_song_alone(tmp_path, checkpoint,
                                                                     capsys, monkeypatch):
    songs = [write_song(tmp_path / f"{name}.wav") for name in ("a", "b")]
    out = tmp_path / "out"
    earlier = write_song(out / MODEL / "a" / "vocals.flac")  # an earlier run's stem, another format
    real_unlink = Path.unlink

    def unlink(self, *args, **kwargs):
        if self == earlier:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    assert separate(*songs, "-c", checkpoint, "-o", out, "-q", "--force") == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"waveunet separate: error: {songs[0]}: [Errno {errno.EACCES}] "
                     f"{os.strerror(errno.EACCES)}: '{earlier}'",
                     f"waveunet separate: 1 of 2 song(s) failed: {songs[0]}"]
    assert files_under(out) == sorted([".waveunet-separate.json", f"{MODEL}/a/vocals.flac"] + [
        f"{MODEL}/{t}/{s}.wav" for t in "ab" for s in SOURCES])


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root may mount one: CI runs as root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); the RLIMIT_FSIZE test covers it")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_says_so_and_leaves_no_partial_files(tmp_path, checkpoint, small_disk,
                                                         capsys):
    big = write_song(tmp_path / "big.wav", tone(seconds=4.0, seed=1))
    small = write_song(tmp_path / "small.wav", tone(seconds=0.2))
    assert separate(big, small, "-c", checkpoint, "-o", small_disk, "-q",
               "--chunk-seconds", "0.5") == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert "cannot write" in lines[0] and "no space (the disk is full)" in lines[0]
    assert lines[1] == f"waveunet separate: 1 of 2 song(s) failed: {big}"
    assert files_under(small_disk) == [".waveunet-separate.json"] + [f"{MODEL}/small/{s}.wav"
                                                                    for s in SOURCES]


# -- interruption and stale temporaries --------------------------------------------------------


def test_remove_stale_temporaries_keeps_those_of_live_processes(tmp_path):
    mine = temporary_next_to(tmp_path / "vocals.wav")
    stale = tmp_path / f".vocals.pid{dead_pid()}.k3x9.tmp.wav"
    cache_style = tmp_path / f".track.npy.pid{dead_pid()}.tmp.npy"
    checkpoint_style = tmp_path / f".last.pid{dead_pid()}.abc.tmp.pt"
    untagged = tmp_path / ".vocals.k3x9.tmp.wav"  # not ours to judge: no pid
    user = tmp_path / "vocals.wav"
    for path in (stale, cache_style, checkpoint_style, untagged, user):
        path.write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, cache_style, checkpoint_style])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [mine.name, untagged.name, user.name])
    assert remove_stale_temporaries(tmp_path / "missing") == []


def _start_separating(tmp_path: Path, checkpoint: Path, out: Path) -> subprocess.Popen:
    song = write_song(tmp_path / "long.wav", tone(seconds=30.0, seed=4))
    return subprocess.Popen(
        [sys.executable, "-m", "waveunet", "separate", str(song), "-c", str(checkpoint),
         "-o", str(out), "-q", "--chunk-seconds", "0.05", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())


def _wait_for_temporaries(proc: subprocess.Popen, folder: Path) -> list[Path]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(folder.glob(f".*.pid{proc.pid}.*.tmp.wav"))
        if len(found) == 2:
            return found
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no temporaries appeared: {proc.communicate()}")


def test_sigterm_is_handled_like_ctrl_c(tmp_path, checkpoint):
    out = tmp_path / "out"
    proc = _start_separating(tmp_path, checkpoint, out)
    _wait_for_temporaries(proc, out / MODEL / "long")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip() == "waveunet separate: terminated (SIGTERM)"
    assert files_under(out) == []  # no stems, no temporaries


def test_the_sigterm_handler_is_the_commands_alone(tmp_path, checkpoint):
    """In one process (a test, a notebook) the caller's SIGTERM handler comes back after."""
    before = signal.getsignal(signal.SIGTERM)
    assert separate(write_song(tmp_path / "song.wav"), "-c", checkpoint, "-o", tmp_path / "out",
                    "-q") == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_next_run_removes_the_temporaries_of_a_killed_one(tmp_path, checkpoint):
    out = tmp_path / "out"
    proc = _start_separating(tmp_path, checkpoint, out)
    left = _wait_for_temporaries(proc, out / MODEL / "long")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert all(p.exists() for p in left)  # SIGKILL cannot clean up
    song = write_song(tmp_path / "short.wav")
    assert separate(song, "-c", checkpoint, "-o", out, "-q", "--filename",
               "{model}/long/{track}-{stem}.{ext}") == 0
    assert not any(p.exists() for p in left)
    assert files_under(out / MODEL) == [f"long/short-{s}.wav" for s in SOURCES]


def test_a_killed_songs_temporaries_go_when_a_later_run_writes_another_track(tmp_path,
                                                                              checkpoint):
    out = tmp_path / "out"
    proc = _start_separating(tmp_path, checkpoint, out)
    left = _wait_for_temporaries(proc, out / MODEL / "long")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert all(p.exists() for p in left)
    manifest_tmp = out / f".waveunet-separate.pid{dead_pid()}.x1y2.tmp.json"
    manifest_tmp.write_text("{")
    kept = write_song(out / MODEL / "mine" / "notes.wav")  # a user's file beside a dead temporary
    beside = out / MODEL / "mine" / f".vocals.pid{dead_pid()}.k3x9.tmp.wav"
    beside.write_bytes(b"x")
    (out / MODEL / "empty").mkdir()  # empty before the run: not the sweep's to remove
    assert separate(write_song(tmp_path / "short.wav"), "-c", checkpoint, "-o", out, "-q") == 0
    assert not any(p.exists() for p in [*left, manifest_tmp, beside])
    assert not (out / MODEL / "long").exists()  # the sweep emptied it
    assert kept.exists() and (out / MODEL / "empty").is_dir()
    assert files_under(out) == sorted([".waveunet-separate.json", f"{MODEL}/mine/notes.wav"]
                                      + [f"{MODEL}/short/{s}.wav" for s in SOURCES])


# -- odd sample rates ----------------------------------------------------------------------------

RATE_DRIVER = textwrap.dedent("""
    import json, sys
    from waveunet.cli import main
    rc = main(sys.argv[1:])
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"rc": rc, "peak_rss_bytes": peak}))
""")


@pytest.mark.parametrize("rate", [44101, 47999])
def test_odd_rates_resample_in_bounded_memory_and_stay_aligned(tmp_path, checkpoint_44k, rate):
    """Before: 44,101 Hz took 20.5 GB and 88 s (a 44,100 x 44,115-tap filter bank)."""
    import json

    seconds = 2.0
    song = write_song(tmp_path / f"song{rate}.wav",
                 tone(seconds=seconds, rate=rate, freqs=(3000, 5000), noise=0), rate,
                 subtype="FLOAT")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", RATE_DRIVER, "separate", str(song), "-c", str(checkpoint_44k),
         "-o", str(out), "-q", "--bits", "32f", "--precision", "fp32"],
        capture_output=True, text=True, env=env(), timeout=120)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["rc"] == 0 and figures["peak_rss_bytes"] < 2 * 2**30
    treated = 44100 if rate == 44101 else 48000
    assert f"{rate} Hz is treated as {treated} Hz" in done.stderr
    mixture, _ = sf.read(str(song), dtype="float32", always_2d=True)
    stems = []
    for source in SOURCES:
        stem, stem_rate = sf.read(str(out / MODEL / f"song{rate}" / f"{source}.wav"),
                                  dtype="float32", always_2d=True)
        assert stem_rate == rate and stem.shape == mixture.shape
        stems.append(stem)
    # A difference model's stems sum to the mixture (resampled there and back): aligned to
    # the sample, since one sample off at 3-5 kHz would leave an error of about -5 dB.
    error = stems[0] + stems[1] - mixture
    inner = slice(100, -100)  # the resampling filter's edges
    snr = 10 * np.log10(np.sum(mixture[inner] ** 2) / np.sum(error[inner] ** 2))
    assert snr > 40, snr
