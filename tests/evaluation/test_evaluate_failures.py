"""waveunet evaluate when things go wrong or meet: a full disk under the report, two evaluations
into one out_dir, progress=false, Ctrl-C during museval."""

from __future__ import annotations

import errno
import os
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from helpers import ctrl_c_as_in_a_terminal, environment

from waveunet import files
from waveunet.audio import write_audio
from waveunet.cli import main as cli_main
from waveunet.errors import DiskFullError, disk_full
from waveunet.metrics import BssJob, evaluate_tracks
from waveunet.reporting import figures

RATE = 44100
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def voice_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder dataset of 2 test tracks of 1.2 s: vocals, accompaniment and their mixture."""
    root = tmp_path_factory.mktemp("voice") / "dataset"
    rng = np.random.default_rng(11)
    n = int(1.2 * RATE)
    t = np.arange(n) / RATE
    for k, name in enumerate(["song_a", "song_b"]):
        vocals = np.stack([0.3 * np.sin(2 * np.pi * (300 + 40 * k) * t + c) for c in (0, 0.4)])
        accompaniment = 0.2 * rng.standard_normal((2, n))
        for stem, audio in (("vocals", vocals), ("accompaniment", accompaniment),
                            ("mixture", vocals + accompaniment)):
            write_audio(root / "test" / name / f"{stem}.wav", audio.astype(np.float32), RATE,
                        subtype="FLOAT")
    (root / "train").mkdir()
    return root


@pytest.fixture(scope="module")
def estimates(voice_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every source estimated as the mixture, in `waveunet separate`'s layout."""
    out = tmp_path_factory.mktemp("estimates")
    for track in sorted((voice_root / "test").iterdir()):
        (out / track.name).mkdir()
        for source in ("vocals", "accompaniment"):
            shutil.copy(track / "mixture.wav", out / track.name / f"{source}.wav")
    return out


def evaluate_args(voice_root: Path, estimates: Path, cache: Path, out_dir: Path,
                  *extra: str) -> list[str]:
    """No figures unless ``extra`` asks for them (figures=true): they are most of the time."""
    return ["evaluate", f"estimates={estimates}", "data=folder", f"data.root={voice_root}",
            "data.stems=[vocals,accompaniment]", f"data.cache_dir={cache}",
            f"out_dir={out_dir}", "progress=false", "figures=false", *extra]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# progress=false
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("progress", [False, True])
def test_progress_setting_reaches_the_decoding_bar(voice_root, estimates, tmp_path, capsys,
                                                    progress: bool) -> None:
    # a fresh cache: every track is decoded
    args = evaluate_args(voice_root, estimates, tmp_path / "cache", tmp_path / "report",
                         f"progress={str(progress).lower()}")
    assert cli_main(args) == 0
    err = capsys.readouterr().err
    assert ("decoding" in err) is progress, err


# --------------------------------------------------------------------------------------------
# Two evaluations, one out_dir
# --------------------------------------------------------------------------------------------


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock, as a running evaluation does."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from waveunet.folders import FolderLock; "
        f"FolderLock.acquire({str(folder)!r}); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_second_evaluation_into_a_busy_out_dir_is_refused_and_writes_nothing(
        voice_root, estimates, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    holder = hold_lock(out)
    try:
        before = snapshot(out)
        rc = cli_main(evaluate_args(voice_root, estimates, tmp_path / "cache", out,
                                    "overwrite=true"))
        err = capsys.readouterr().err
        assert rc == 2, err
        assert error_lines(err) == [
            f"waveunet evaluate: error: {out} is in use by process {holder.pid}, which is "
            f"writing into it (it holds {out / '.lock'}); wait until it ends or stop it, or "
            "give this evaluation another out_dir=..."]
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the killed holder's lock: the folder is free again
    assert cli_main(evaluate_args(voice_root, estimates, tmp_path / "cache", out)) == 0


def test_the_lock_leaves_no_file_that_counts_as_a_report(voice_root, estimates,
                                                         tmp_path) -> None:
    out = tmp_path / "report"
    out.mkdir()
    # left by an evaluation killed with SIGKILL: its lock file and half-written temporaries
    (out / "test").mkdir()
    (out / ".lock").write_text("999999999\n")
    (out / ".summary.pid999999999.abc.tmp.json").write_text("{")
    (out / "test" / ".song_a.pid999999999.abc.tmp.json").write_text("{")
    args = evaluate_args(voice_root, estimates, tmp_path / "cache", out)
    assert cli_main(args) == 0  # not refused: none of them is a report
    assert [p.name for p in out.rglob(".*")] == []
    assert (out / "summary.json").is_file()
    assert cli_main([*args, "overwrite=true"]) == 0
    assert not (out / ".lock").exists()


def test_a_refused_evaluation_leaves_no_out_dir(voice_root, estimates, tmp_path) -> None:
    out = tmp_path / "new" / "report"
    args = evaluate_args(voice_root, estimates, tmp_path / "cache", out, "sources=[drums]")
    assert cli_main(args) == 2
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------------------------
# A full disk under the report
# --------------------------------------------------------------------------------------------


def fill_the_disk_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Writing the file ``name`` fails as on a full disk: its whole content goes to the
    temporary, then the write fails with ENOSPC (as a close that flushes the last block)."""
    real = files.atomic_write

    def atomic_write(path, write):
        if Path(path).name != name:
            return real(path, write)

        def fills_up(tmp: str) -> None:
            write(tmp)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return real(path, fills_up)

    monkeypatch.setattr(files, "atomic_write", atomic_write)  # what atomic_write_text calls
    monkeypatch.setattr(figures, "atomic_write", atomic_write)


@pytest.mark.parametrize("full_at,kept", [
    ("sdr_boxplot.png", []),
    ("summary.json", ["report.md", "sdr_boxplot.png", "spectrogram_song_a.png",
                      "waveform_song_a.png"]),
])
def test_no_space_for_the_report_is_one_line_naming_the_file(
        voice_root, estimates, tmp_path, capsys, monkeypatch, full_at: str, kept) -> None:
    out = tmp_path / "report"
    fill_the_disk_at(monkeypatch, full_at)
    rc = cli_main(evaluate_args(voice_root, estimates, tmp_path / "cache", out, "figures=true"))
    err = capsys.readouterr().err
    assert rc == 2, err
    rerun = "rerun with overwrite=true" if kept else "rerun"  # overwrite: a part stays
    assert error_lines(err) == [f"waveunet evaluate: error: cannot write {out / full_at}: "
                                f"no space (the disk is full); free space and {rerun}"]
    if figures.librosa_missing() is not None:
        kept = [k for k in kept if not k.startswith("spectrogram")]
    # what was written before stays whole; no temporary and no lock file are left
    assert sorted(p.name for p in out.rglob("*")) == kept
    for png in (out / k for k in kept if k.endswith(".png")):
        assert mpimg.imread(png).ndim == 3


def test_no_space_for_museval_json_in_a_worker_is_one_line_naming_the_file(
        voice_root, estimates, tmp_path) -> None:
    """A real failed write in museval's worker process: a file-size limit (EFBIG, where a full
    disk gives ENOSPC) smaller than a track's JSON. The cache is decoded beforehand."""
    args = evaluate_args(voice_root, estimates, tmp_path / "cache", tmp_path / "first")
    assert cli_main(args) == 0
    out = tmp_path / "report"
    limit = 200  # bytes: the PID in .lock fits, a museval JSON does not
    proc = subprocess.run(
        [sys.executable, "-m", "waveunet.cli",
         *evaluate_args(voice_root, estimates, tmp_path / "cache", out, "metrics=bss",
                        "workers=1")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == 2, proc.stderr
    (line,) = error_lines(proc.stderr)
    assert re.fullmatch(
        f"waveunet evaluate: error: cannot write {re.escape(str(out / 'test'))}/song_[ab].json: "
        r"no space \(the file-size limit is reached\); free space and rerun", line), line
    assert list(out.rglob("*")) == [out / "test"]  # no JSON, temporary or lock file


def test_no_room_for_a_figure_under_a_real_file_size_limit_says_to_rerun_with_overwrite(
        voice_root, estimates, tmp_path) -> None:
    """A real failed write of the report (EFBIG from a file-size limit, where a full disk gives
    ENOSPC, the same line): the boxplot fits, the waveform figure does not. What was written
    makes a plain rerun refused, so the line says overwrite=true."""
    assert cli_main(evaluate_args(voice_root, estimates, tmp_path / "cache",
                                  tmp_path / "first")) == 0  # the cache decoded beforehand
    limit = 64 * 1024  # bytes: the box plot is smaller, the waveform figure larger
    out = tmp_path / "report"
    args = evaluate_args(voice_root, estimates, tmp_path / "cache", out, "figures=true")
    proc = subprocess.run(
        [sys.executable, "-m", "waveunet.cli", *args], capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc.stderr) == [
        f"waveunet evaluate: error: cannot write {out / 'waveform_song_a.png'}: no space "
        "(the file-size limit is reached); free space and rerun with overwrite=true"]
    assert sorted(p.name for p in out.rglob("*")) == ["sdr_boxplot.png"]  # whole, no temporary
    assert mpimg.imread(out / "sdr_boxplot.png").ndim == 3
    assert cli_main(args) == 2  # as the line says: a plain rerun is refused
    assert cli_main([*args, "overwrite=true"]) == 0
    assert (out / "summary.json").is_file()


def test_a_disk_full_error_crosses_processes_whole() -> None:
    error = disk_full("/out/test/song.json", errno.ENOSPC)
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is DiskFullError and str(back) == str(error)
    assert (back.path, back.errno) == ("/out/test/song.json", errno.ENOSPC)


# --------------------------------------------------------------------------------------------
# Ctrl-C during museval
# --------------------------------------------------------------------------------------------

# Ctrl-C in a terminal reaches every process of the group. WHEN=starting: museval's worker is
# still starting (importing) when it comes; WHEN=waiting: the worker scored one track and
# waits while the next is loaded (a checkpoint separating it).
CTRL_C_SCRIPT = """
import sys, time
import numpy as np
from waveunet.metrics import BssJob, evaluate_tracks

rng = np.random.default_rng(0)
refs = rng.standard_normal((2, 2, 8000)).astype(np.float32)

def scored():
    if sys.argv[1] == "starting":
        print("ready", flush=True)
    return BssJob("a", ["x", "y"], refs, refs + 0.1 * rng.standard_normal(refs.shape))

def loading():
    print("ready", flush=True)
    time.sleep(60)

try:
    evaluate_tracks([scored, loading], 8000, workers=1, progress=False)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
"""


@pytest.mark.parametrize("when", ["starting", "waiting"])
def test_ctrl_c_while_a_museval_worker_starts_or_waits_is_reported_once(when: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, when], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=ctrl_c_as_in_a_terminal, env=environment())
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert error_lines(err) == ["interrupted"], err  # no traceback of a worker


def test_museval_workers_leave_ctrl_c_here_as_it_was() -> None:
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((2, 2, 8000)).astype(np.float32)
    mask, handler = signal.pthread_sigmask(signal.SIG_BLOCK, set()), signal.getsignal(signal.SIGINT)
    scores = evaluate_tracks([BssJob("a", ["x", "y"], refs, refs + 0.1)], 8000, workers=1,
                             progress=False)
    assert scores["a"]["SDR"].shape == (2, 1)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == mask
    assert signal.getsignal(signal.SIGINT) is handler


# --------------------------------------------------------------------------------------------
# SIGTERM
# --------------------------------------------------------------------------------------------


def test_sigterm_stops_an_evaluation_as_ctrl_c_does_and_says_so(
        voice_root, estimates, tmp_path) -> None:
    """A real SIGTERM once the evaluation holds its out_dir (museval's worker still to start):
    the one line, exit 143, and no report, lock or temporary left."""
    assert cli_main(evaluate_args(voice_root, estimates, tmp_path / "cache",
                                  tmp_path / "first")) == 0  # the cache decoded beforehand
    out = tmp_path / "report"
    proc = subprocess.Popen(
        [sys.executable, "-m", "waveunet.cli",
         *evaluate_args(voice_root, estimates, tmp_path / "cache", out, "metrics=bss",
                        "workers=1")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 60
        while not (out / ".lock").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # the scoring left takes seconds more
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert error_lines(err) == ["waveunet evaluate: terminated (SIGTERM)"], err
    assert not out.exists(), list(out.rglob("*"))  # made by this run: removed, being empty
