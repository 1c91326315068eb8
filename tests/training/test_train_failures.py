"""Training when things go wrong: bad input, resumes that change the run, two processes, killed
runs, a full disk, tiny data. Every failure is one line, and a run that cannot start leaves
nothing behind."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
from helpers import dead_pid, run_waveunet, start_waveunet, training_overrides, waveunet

from waveunet.data.synth import generate_dataset
from waveunet.errors import ConfigError, DataError
from waveunet.files import remove_stale_temporaries, temporary_next_to
from waveunet.folders import FolderInUse, FolderLock
from waveunet.model.checkpoint import load_checkpoint
from waveunet.model.network import build_model
from waveunet.settings.compose import compose
from waveunet.training.run_folder import claim_new_run_dir
from waveunet.training.run_log import read_metrics, truncate_metrics
from waveunet.training.solver import Solver

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("failures-cache")


def the_run(runs_root: Path) -> Path:
    (run_dir,) = [p.parent for p in runs_root.glob("*/*/.hydra")]
    return run_dir


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing created
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,named", [
    ("model=m9", "model/m9"),                      # an unknown preset (Hydra's composition)
    ("trainer.nope=1", "trainer.nope"),            # an unknown key
    ("optim.batch_size=0", "optim.batch_size"),    # a value out of range
    ("data=musdb_hq", "data.root"),                # a dataset without its root
    ("trainer.threads=0", "trainer.threads"),
    ("data.on_device=maybe", "data.on_device"),
])
def test_a_bad_setting_is_one_line_with_exit_2_and_creates_no_run_folder(tmp_path, cache, bad,
                                                                          named, cli):
    args = training_overrides(cache, bad) if not bad.startswith("data=") else [
        "experiment=demo", bad, f"data.cache_dir={cache}"]  # the synthetic keys would be unknown
    proc = cli("train", *args, f"runs_root={tmp_path / 'runs'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("waveunet train: error:"), proc.stderr
    assert named in lines[0]
    assert not (tmp_path / "runs").exists()


def test_a_multirun_checks_every_job_before_the_first(tmp_path, cache, cli):
    proc = cli("train", "-m", *training_overrides(cache, "output=tanh_difference,no_such_head"),
                     f"runs_root={tmp_path / 'runs'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert error_lines(proc) == [line for line in error_lines(proc) if "no_such_head" in line]
    assert len(error_lines(proc)) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("resume", ["trainer.resume=true", "trainer.resume=false,true"])
def test_a_multirun_refuses_to_resume(tmp_path, cache, resume, cli):
    """trainer.resume with -m would start fresh runs in Hydra's sweep folders: refused."""
    proc = cli("train", "-m", *training_overrides(cache, resume), f"runs_root={tmp_path / 'runs'}",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = error_lines(proc)
    assert line.startswith("waveunet train: error: trainer.resume=true: a multirun (-m)"), line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sweep").exists()


def test_resuming_a_missing_folder_creates_nothing(tmp_path, cache, cli):
    missing = tmp_path / "runs" / "demo" / "never"
    proc = cli("train", *training_overrides(cache, f"trainer.resume={missing}"),
                     f"runs_root={tmp_path / 'runs'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(error_lines(proc)) == 1 and str(missing) in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_new_run_into_a_given_folder_that_holds_a_run_is_refused(finished_run, tmp_path, cli):
    """hydra.run.dir=X names a new run's folder: one holding a run is left as it is."""
    run_dir, args = finished_run
    run = copy_of(run_dir, tmp_path)
    before = snapshot(run)
    proc = cli("train", *args, f"hydra.run.dir={run}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = error_lines(proc)
    assert f"hydra.run.dir={run} already holds a run (last.pt, best.pt, metrics.jsonl, .hydra)" \
        in line and f"trainer.resume={run}" in line, line
    assert snapshot(run) == before
    # trainer.resume=true with nothing to continue there (no last.pt) starts a new run: refused
    (run / "last.pt").unlink()
    before = snapshot(run)
    proc = cli("train", *args, "trainer.resume=true", f"hydra.run.dir={run}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = error_lines(proc)
    assert "already holds a run (best.pt, metrics.jsonl, .hydra)" in line, line
    assert snapshot(run) == before
    # A new (or empty) folder is the new run's.
    (tmp_path / "new").mkdir()
    proc = cli("train", *args, f"hydra.run.dir={tmp_path / 'new'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "new" / "best.pt").is_file()


# --------------------------------------------------------------------------------------------
# Resume: the run's config is the rule
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache) -> tuple[Path, list[str]]:
    """One finished one-epoch run (read-only: tests that change it copy it)."""
    root = tmp_path_factory.mktemp("finished")
    args = [*training_overrides(cache), f"runs_root={root}"]
    assert waveunet("train", *args) == 0
    return the_run(root), args


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("changed,named", [
    (["seed=3"], "seed"),
    (["loss.name=l1"], "loss.name"),
    (["data.seconds=4"], "data.seconds"),
    (["optim.lr=0.1", "trainer.patience=7"], "optim.lr"),
])
def test_a_resume_that_changes_the_run_is_refused_and_leaves_it_as_it_was(
        finished_run, tmp_path, changed, named, cli):
    run_dir, args = finished_run
    run = copy_of(run_dir, tmp_path)
    before = snapshot(run)
    proc = cli("train", *args, "trainer.max_epochs=2", *changed, f"trainer.resume={run}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = error_lines(proc)
    assert named in line and "other settings" in line, line
    # no tfevents file, no rewritten .hydra/config.yaml, no lock file left: nothing changed
    assert snapshot(run) == before


def test_a_resume_may_change_the_listed_settings_and_records_them(finished_run, tmp_path, cli):
    run_dir, args = finished_run
    run = copy_of(run_dir, tmp_path)
    hydra_config = (run / ".hydra" / "config.yaml").read_bytes()
    proc = cli("train", *args, "trainer.max_epochs=2", "trainer.log_every_steps=3",
                     "trainer.threads=2", f"trainer.resume={run}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (run / ".hydra" / "config.yaml").read_bytes() == hydra_config  # the original stays
    (resume,) = [r for r in read_metrics(run) if r["kind"] == "resume"]
    assert resume["step"] == 6 and resume["epoch"] == 1
    assert resume["changes"] == {"trainer.max_epochs": {"run": 1, "now": 2},
                                 "trainer.log_every_steps": {"run": 2, "now": 3},
                                 "trainer.threads": {"run": 1, "now": 2}}
    steps = [r["step"] for r in read_metrics(run) if r["kind"] == "train"]
    assert steps == list(range(1, 13))


def musdb_hq_overrides(cache: Path, root: Path, *extra: str) -> list[str]:
    """A generated MUSDB18-HQ-layout dataset read as ``data=musdb_hq`` (its own root)."""
    return ["experiment=demo", "data=musdb_hq", f"data.root={root}", f"data.cache_dir={cache}",
            "data.valid_tracks=[track_001]", "model.levels=3", "model.initial_filters=6",
            "model.output_samples=1024", "optim.batch_size=4", "data.workers=0",
            "trainer.steps_per_epoch=3", "trainer.max_epochs=1", "trainer.progress=false",
            "trainer.validation.audio_examples=0", *extra]


def test_a_moved_dataset_may_be_resumed_from_its_new_root_another_one_not(tmp_path):
    first = generate_dataset(tmp_path / "first", tracks=3, seconds=1.0, seed=1, test_tracks=1)
    cache = tmp_path / "cache"
    run = tmp_path / "run"
    Solver(compose("train", musdb_hq_overrides(cache, first)), run).train()

    moved = tmp_path / "moved"
    first.rename(moved)  # mv keeps the files' sizes and times: the cache's manifests match
    resumed = Solver(compose("train", musdb_hq_overrides(
        cache, moved, "trainer.max_epochs=2", f"trainer.resume={run}")), run)
    assert resumed.resumed_from["changes"]["data.root"] == {"run": str(first), "now": str(moved)}
    resumed.train()

    other = generate_dataset(tmp_path / "other", tracks=3, seconds=1.0, seed=2, test_tracks=1)
    with pytest.raises(ConfigError, match=r"data\.root"):
        Solver(compose("train", musdb_hq_overrides(
            cache, other, "trainer.max_epochs=3", f"trainer.resume={run}")), run)


# --------------------------------------------------------------------------------------------
# Two processes, killed processes
# --------------------------------------------------------------------------------------------


def test_the_lock_names_its_holder_and_is_free_once_the_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from waveunet.folders import FolderLock; "
        f"FolderLock.acquire({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)")],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUse, match=f"process {holder.pid}"):
            FolderLock.acquire(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    lock = FolderLock.acquire(tmp_path)
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    lock.release()


def test_a_lock_file_removed_by_its_holder_is_not_the_one_locked(tmp_path, monkeypatch):
    """A process that opened the lock file just before its holder removed it (release with
    remove) must lock the file there now, or two processes would hold "the" lock."""
    import waveunet.folders as folders

    real_flock, calls = folders.fcntl.flock, []

    def holder_removes_it_first(fd, operation):
        calls.append(fd)
        if len(calls) == 1:  # the holder lets go meanwhile, removing the file
            (tmp_path / ".lock").unlink()
        return real_flock(fd, operation)

    monkeypatch.setattr(folders.fcntl, "flock", holder_removes_it_first)
    lock = FolderLock.acquire(tmp_path)
    monkeypatch.undo()
    assert len(calls) == 2  # the first file was let go, the new one locked
    with pytest.raises(FolderInUse):
        FolderLock.acquire(tmp_path)
    lock.release(remove=True)
    assert not (tmp_path / ".lock").exists()
    FolderLock.acquire(tmp_path).release()


@pytest.mark.parametrize("signum,rc,stopped", [
    (signal.SIGINT, 130, "interrupted"),                   # Ctrl-C
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),         # as separate and evaluate say it
])
def test_ctrl_c_or_sigterm_stops_with_one_line_that_says_how_to_continue(
        tmp_path, cache, cli, signum, rc, stopped):
    """While it trains, the run is its own (a second process is refused, naming it); stopped,
    it says how to continue, and its folder is free again."""
    args = [*training_overrides(cache, "trainer.max_epochs=1000", "trainer.steps_per_epoch=50"),
            f"runs_root={tmp_path}"]
    proc = start_waveunet("train", *args)
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob("*/*/last.pt")):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
            time.sleep(0.1)
        run_dir = the_run(tmp_path)
        second = cli("train", *args, f"trainer.resume={run_dir}")
        assert second.returncode == 2, second.stdout + second.stderr
        (line,) = error_lines(second)
        assert f"in use by process {proc.pid}" in line, line
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == rc, out
    assert "Traceback" not in out
    assert out.strip().splitlines()[-1] == (
        f"waveunet train: {stopped}; continue from its last checkpoint with "
        f"trainer.resume={run_dir}")
    load_checkpoint(run_dir / "last.pt")
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    FolderLock.acquire(run_dir).release()  # free again


def test_two_new_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    stamp = tmp_path / "demo" / "2026-01-01_00-00-00"
    assert claim_new_run_dir(stamp) == stamp
    assert claim_new_run_dir(stamp) == stamp.with_name(stamp.name + "_1")
    assert claim_new_run_dir(stamp) == stamp.with_name(stamp.name + "_2")


def test_temporaries_carry_the_writer_pid_and_stale_ones_are_removed(tmp_path):
    tmp = temporary_next_to(tmp_path / "last.pt")
    assert f".pid{os.getpid()}." in tmp.name and tmp.name.startswith(".last.")
    stale = tmp_path / f".last.pid{dead_pid()}.k2j3.tmp.pt"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.tmp.txt"  # not ours
    other.write_text("keep")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert tmp.exists() and other.exists() and not stale.exists()  # a live writer's stays


def test_training_removes_the_temporaries_a_killed_run_left(finished_run, tmp_path, cli):
    run_dir, args = finished_run
    run = copy_of(run_dir, tmp_path)
    stale = run / f".last.pid{dead_pid()}.x8a1.tmp.pt"
    stale.write_bytes(b"x" * 1000)
    proc = cli("train", *args, "trainer.max_epochs=2", f"trainer.resume={run}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not stale.exists()
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]


class Interrupt(BaseException):
    """Stands for the kill in the middle of a step (a BaseException, as KeyboardInterrupt)."""


def interrupted_at(monkeypatch, step: int):
    real = Solver.train_step
    calls = {"n": 0}

    def train_step(self, mixture, targets):
        calls["n"] += 1
        if calls["n"] == step:
            raise Interrupt
        return real(self, mixture, targets)

    monkeypatch.setattr(Solver, "train_step", train_step)
    return lambda: monkeypatch.setattr(Solver, "train_step", real)


@pytest.mark.parametrize("on_device", ["false", "true"])
def test_a_resumed_run_repeats_no_step_in_metrics_and_equals_an_uninterrupted_one(
        tmp_path, cache, monkeypatch, on_device):
    args = training_overrides(cache, "trainer.max_epochs=2", f"data.on_device={on_device}",
                     "data.augmentations=[gain,channelswap,signflip]")
    reference = tmp_path / "reference"
    Solver(compose("train", args), reference).train()

    run = tmp_path / "run"
    restore = interrupted_at(monkeypatch, 11)  # step 11: after the checkpoint at step 9
    with pytest.raises(Interrupt):
        Solver(compose("train", args), run).train()
    restore()
    steps = [r["step"] for r in read_metrics(run) if r["kind"] == "train"]
    assert steps == list(range(1, 11))  # steps 10 was logged after the last checkpoint (9)
    assert load_checkpoint(run / "last.pt")["training"]["state"]["global_step"] == 9

    Solver(compose("train", [*args, f"trainer.resume={run}"]), run).train()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(read_metrics(run)) == len(lines)  # the line cut by the kill went too
    got = {r["step"]: r["loss"] for r in read_metrics(run) if r["kind"] == "train"}
    steps = [r["step"] for r in read_metrics(run) if r["kind"] == "train"]
    assert steps == list(range(1, 13))  # each step once
    expected = {r["step"]: r["loss"] for r in read_metrics(reference) if r["kind"] == "train"}
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # TensorBoard drops what the first attempt logged after the checkpoint, too
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]


def test_truncating_metrics_keeps_the_steps_up_to_the_checkpoint_and_drops_a_cut_line(
        tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "train", "step": s, "loss": 1.0}) for s in range(1, 6)]
    path.write_text("\n".join(lines) + '\n{"kind": "train", "st')
    assert truncate_metrics(path, 3) == 3
    assert path.read_text() == "\n".join(lines[:3]) + "\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "metrics.jsonl"]


# --------------------------------------------------------------------------------------------
# A full disk
# --------------------------------------------------------------------------------------------


def file_size_limit(n_bytes: int):
    """A preexec_fn: writes beyond ``n_bytes`` in one file fail (EFBIG), where a full disk
    fails (ENOSPC): in the write itself, not in a mock."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))


def test_a_checkpoint_that_does_not_fit_leaves_the_old_one_intact(tmp_path):
    script = (
        "import sys, torch; from pathlib import Path; from waveunet.model.checkpoint import "
        "save_checkpoint; from waveunet.model.network import build_model; "
        "from waveunet.errors import DiskFullError\n"
        "small = build_model({'levels': 2, 'initial_filters': 2}, {})\n"
        "big = build_model({'levels': 3, 'initial_filters': 24}, {})\n"
        "save_checkpoint(Path(sys.argv[1]) / 'last.pt', small)\n"
        "try:\n"
        "    save_checkpoint(Path(sys.argv[1]) / 'last.pt', big)\n"
        "except DiskFullError as exc:\n"
        "    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=file_size_limit(200_000),
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (f"cannot write {tmp_path / 'last.pt'}: no space "
                                   "(the file-size limit is reached)")
    small = build_model({"levels": 2, "initial_filters": 2}, {})
    payload = load_checkpoint(tmp_path / "last.pt")
    assert payload["model"]["initial_filters"] == small.config.initial_filters
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left


def check_stopped_on_a_full_disk(proc: subprocess.CompletedProcess, runs_root: Path,
                                 reason: str, named_root: Path | None = None) -> None:
    """One line naming the file (under ``named_root``: where the run was, default
    ``runs_root``) and the reason; the last complete checkpoint is there, no temporary is."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = error_lines(proc)
    run_dir = the_run(runs_root)
    named = (named_root or runs_root) / run_dir.relative_to(runs_root)
    assert line.startswith(f"waveunet train: error: cannot write {named}"), line
    assert f"no space ({reason})" in line and f"trainer.resume={named}" in line, line
    last = load_checkpoint(run_dir / "last.pt")  # the last complete checkpoint
    assert last["training"]["state"]["global_step"] > 0
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]


# Each validation adds its audio to the TensorBoard file (no figures: they take time to draw).
FILLS_THE_DISK = ("trainer.max_epochs=1000", "trainer.steps_per_epoch=2",
                  "trainer.validation.audio_examples=1", "trainer.validation.audio_seconds=3",
                  "trainer.validation.figures=false")


def test_training_on_a_full_disk_stops_with_one_line_and_keeps_last_pt(tmp_path, cache):
    # The audio logged at each validation grows the TensorBoard file past the limit (the data
    # is decoded into the cache beforehand, under no limit).
    Solver(compose("train", training_overrides(cache)), None)
    proc = run_waveunet("train", *training_overrides(cache, *FILLS_THE_DISK),
                        f"runs_root={tmp_path}", preexec_fn=file_size_limit(800_000))
    check_stopped_on_a_full_disk(proc, tmp_path, "the file-size limit is reached")


def test_training_on_a_full_tmpfs_stops_with_one_line_and_keeps_last_pt(tmp_path, cache):
    """The same on a real full file system: a 2 MiB tmpfs in a private mount namespace (needs
    root or user namespaces; skipped where mounting is not allowed)."""
    unshare = shutil.which("unshare")
    probe = unshare and subprocess.run(
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {tmp_path}"],
        capture_output=True)
    if not probe or probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    full, kept = tmp_path / "full", tmp_path / "kept"
    full.mkdir()
    train = " ".join([sys.executable, "-m", "waveunet.cli", "train",
                      *training_overrides(cache, *FILLS_THE_DISK), f"runs_root={full}"])
    # The tmpfs lives as long as the namespace: copy the run out before it goes.
    script = (f"mount -t tmpfs -o size=2m tmpfs {full} || exit 99; {train}; rc=$?; "
              f"cp -a {full} {kept}; exit $rc")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([unshare, "-rm", "sh", "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    check_stopped_on_a_full_disk(proc, kept, "the disk is full", named_root=full)


# --------------------------------------------------------------------------------------------
# Tiny data, threads, progress
# --------------------------------------------------------------------------------------------


def shorten(track_dir: Path, samples: int) -> None:
    for wav in track_dir.glob("*.wav"):
        audio, rate = sf.read(wav, always_2d=True)
        sf.write(wav, audio[:samples], rate, subtype="FLOAT")


def test_a_track_shorter_than_the_input_is_named_and_a_split_of_them_refused(tmp_path,
                                                                           caplog):
    root = generate_dataset(tmp_path / "data", tracks=3, seconds=1.0, seed=1, test_tracks=1)
    cfg = compose("train", musdb_hq_overrides(tmp_path / "cache", root))
    model = build_model(cfg.model, cfg.output)
    per_model_sample = 44100 // model.sample_rate_hz  # the generated data is at 44.1 kHz
    short = root / "train" / "track_000"
    shorten(short, (model.input_samples - 100) * per_model_sample)
    with caplog.at_level("WARNING"):
        Solver(cfg, None)
    (warning,) = [r.getMessage() for r in caplog.records if "zero-padded" in r.getMessage()]
    assert "1 of 2 training tracks" in warning and "'track_000'" in warning
    assert f"{model.input_samples} samples" in warning

    shorten(root / "train" / "track_002", (model.input_samples - 100) * per_model_sample)
    with pytest.raises(DataError, match="no training track is as long as the model's input"):
        Solver(compose("train", musdb_hq_overrides(tmp_path / "cache", root)), None)


def test_data_seconds_too_short_for_the_model_is_an_error(tmp_path, cache, cli):
    proc = cli("train", *training_overrides(cache, "data.seconds=0.001"),
               f"runs_root={tmp_path / 'runs'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = error_lines(proc)
    assert "as long as the model's input" in line and "data.seconds" in line
    assert not (tmp_path / "runs").exists()


def test_trainer_threads_sets_torch_threads_while_training(tmp_path, cache, monkeypatch):
    seen = []
    real = Solver.train_step

    def train_step(self, mixture, targets):
        seen.append(torch.get_num_threads())
        return real(self, mixture, targets)

    monkeypatch.setattr(Solver, "train_step", train_step)
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    cfg = compose("train", training_overrides(cache, f"trainer.threads={target}"))
    Solver(cfg, tmp_path).train()
    assert set(seen) == {target}
    assert torch.get_num_threads() == before


def test_progress_false_hides_the_decoding_bars(tmp_path, capfd):
    cfg = compose("train", training_overrides(tmp_path / "fresh-cache", "trainer.progress=false"))
    Solver(cfg, None)
    err = capfd.readouterr().err
    assert "decoding" not in err
    cfg = compose("train", training_overrides(tmp_path / "fresh-cache-2", "trainer.progress=true"))
    Solver(cfg, None)
    assert "decoding synthetic train" in capfd.readouterr().err  # the bar does exist


# --------------------------------------------------------------------------------------------
# Timing in metrics.jsonl
# --------------------------------------------------------------------------------------------


def test_each_epoch_records_its_training_and_validation_time(tmp_path, cache, monkeypatch):
    real = Solver.validate

    def slow_validate(self):
        time.sleep(0.6)
        return real(self)

    monkeypatch.setattr(Solver, "validate", slow_validate)
    t0 = time.perf_counter()
    Solver(compose("train", training_overrides(cache, "trainer.max_epochs=2")), tmp_path).train()
    wall = time.perf_counter() - t0
    epochs = [r for r in read_metrics(tmp_path) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1] and [r["step"] for r in epochs] == [6, 12]
    for r in epochs:
        assert r["valid_seconds"] >= 0.6 and 0 < r["train_seconds"] < 0.6
        assert r["examples"] == 6 * 4
        assert r["examples_per_s"] == pytest.approx(r["examples"] / r["train_seconds"])
    assert sum(r["train_seconds"] + r["valid_seconds"] for r in epochs) < wall
    # the examples/s in the log never spans a validation
    for r in read_metrics(tmp_path):
        if r["kind"] == "health":
            assert 2 * 4 / r["train/examples_per_s"] < 0.6
