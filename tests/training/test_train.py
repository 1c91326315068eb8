"""Training end to end on generated data: learning, checkpoints, resume, DDP, every mode, errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import start_waveunet, training_overrides, waveunet

from waveunet.errors import ConfigError
from waveunet.model.checkpoint import load_checkpoint, load_model
from waveunet.settings.compose import compose
from waveunet.training.run_log import read_metrics
from waveunet.training.solver import Solver, TrainingDiverged

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One decoded-audio cache (and generated dataset) shared by all training tests."""
    return tmp_path_factory.mktemp("train-cache")


def overrides(cache: Path, *extra: str) -> list[str]:
    return training_overrides(cache, "optim.lr=1e-3", "trainer.max_epochs=2",
                              "trainer.validation.audio_examples=1",
                              "trainer.validation.audio_seconds=1", *extra)


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}


def run_dir_of(runs_root: Path) -> Path:
    (last,) = [p.parent for p in runs_root.glob("*/*/.hydra")]
    return last


def test_training_lowers_validation_loss_and_writes_a_usable_checkpoint(tmp_path, cache_dir):
    cfg = compose("train", overrides(cache_dir, "trainer.max_epochs=4",
                                     "trainer.steps_per_epoch=10",
                                     "trainer.validation.figures=false"))  # run_outputs': figures
    solver = Solver(cfg, tmp_path / "run")
    before = solver.validate()["loss"]
    summary = solver.train()
    after = summary["best_valid_loss"]
    assert after < 0.7 * before, (before, after)

    model = load_model(tmp_path / "run" / "best.pt")
    assert model.output_mode.activation == "tanh" and not model.training
    payload = load_checkpoint(tmp_path / "run")
    assert payload["config"]["model"]["levels"] == 3
    assert payload["training"]["state"]["epoch"] == summary["best_epoch"] + 1

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"audio": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ["train/loss", "train/lr", "train/grad_norm", "train/examples_per_s", "valid/loss",
                "valid/sdr_vocals", "health/saturated", "health/pre_activation_mean_abs",
                "health/vanishing_gradient", "health/peak_ratio"]:
        assert tag in tags["scalars"], tag
    assert any(tag.endswith("/vocals/estimate") for tag in tags["audio"])
    valid = [e.value for e in events.Scalars("valid/loss")]
    assert min(valid) == pytest.approx(after, rel=1e-5)


def test_a_killed_run_resumes_with_identical_losses(tmp_path, cache_dir):
    """SIGKILL mid-epoch, then trainer.resume=true: the newest run of the name continues, in
    its own folder, with the losses of a run that was never killed."""
    args = overrides(
        cache_dir, "trainer.max_epochs=2", "data.augmentations=[gain,channelswap,signflip]"
    )
    reference_root, killed_root = tmp_path / "reference", tmp_path / "killed"
    killed = start_waveunet("train", *args, f"runs_root={killed_root}")
    deadline = time.time() + 300
    while time.time() < deadline:  # kill in epoch 1 after a mid-epoch checkpoint
        runs = list(killed_root.glob("*/*/metrics.jsonl"))
        if runs and max(train_losses(runs[0].parent), default=0) >= 10:
            break
        assert killed.poll() is None, killed.stdout.read()
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    run_dir = run_dir_of(killed_root)
    assert not (run_dir / "summary.json").exists()
    state = load_checkpoint(run_dir / "last.pt")["training"]["state"]
    assert state["epoch"] == 1 and 0 < state["step_in_epoch"] < 6  # stopped mid-epoch

    # The rest in this process: the demo trains with one thread, as the killed process did.
    assert waveunet("train", *args, f"runs_root={killed_root}", "trainer.resume=true") == 0
    assert waveunet("train", *args, f"runs_root={reference_root}") == 0

    assert run_dir_of(killed_root) == run_dir  # continued in place, no new folder
    expected = train_losses(run_dir_of(reference_root))
    got = train_losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(1, 13))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-9), step
    ref_valid = [
        r["loss"] for r in read_metrics(run_dir_of(reference_root)) if r["kind"] == "valid"
    ]
    got_valid = [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "valid"]
    assert got_valid[-1] == pytest.approx(ref_valid[-1], rel=1e-6)


def test_torchrun_two_processes_on_cpu(tmp_path, cache_dir):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun is installed with torch"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(REPO / "scripts" / "train.py"),
         *overrides(cache_dir, "trainer.max_epochs=1", "trainer.steps_per_epoch=2",
                    "trainer.validation.audio_examples=0"), f"runs_root={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = run_dir_of(tmp_path)  # only rank 0 made a folder
    model = load_model(run_dir / "best.pt")
    assert model.config.levels == 3
    assert sorted(train_losses(run_dir)) == [1, 2]


MODES = [
    f"{a}_{t}"
    for a in ("tanh", "linear", "clip", "sin", "sigmoid")
    for t in ("direct", "difference")
]


@pytest.mark.parametrize("mode,loss", [(m, "mse") for m in MODES] + [
    ("relu_direct", "mse"), ("softplus_direct", "mse"), ("tanh_difference", "cross_entropy"),
    ("sigmoid_direct", "cross_entropy"), ("linear_direct", "l1"),
])
def test_every_output_mode_trains_and_logs_its_health(tmp_path, cache_dir, mode, loss):
    cfg = compose("train", overrides(cache_dir, f"output={mode}", f"loss.name={loss}",
                                     "trainer.max_epochs=1", "trainer.steps_per_epoch=2",
                                     "trainer.validation.audio_examples=0"))
    summary = Solver(cfg, tmp_path).train()
    assert summary["epochs"] == 1 and torch.isfinite(torch.tensor(summary["best_valid_loss"]))
    health = [r for r in read_metrics(tmp_path) if r["kind"] == "health"]
    assert health and {"health/saturated", "health/vanishing_gradient"} <= set(health[0])
    assert 0.0 <= health[0]["health/saturated"] <= 1.0


def test_divergence_stops_with_a_clear_message_and_no_checkpoint(tmp_path, cache_dir):
    cfg = compose("train", overrides(cache_dir, "trainer.divergence.max_pre_activation=1e-9"))
    with pytest.raises(TrainingDiverged, match="diverged at step 1.*pre-activation"):
        Solver(cfg, tmp_path).train()
    assert not list(tmp_path.glob("*.pt"))


def test_divergence_rollback_restores_the_last_checkpoint_with_a_lower_lr(
    tmp_path, cache_dir, monkeypatch
):
    import waveunet.training.solver as solver_module

    calls = {"n": 0}
    real = solver_module.compute_loss

    def loss_with_a_nan_at_step_5(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] == 5 else value

    monkeypatch.setattr(solver_module, "compute_loss", loss_with_a_nan_at_step_5)
    cfg = compose(
        "train", overrides(cache_dir, "trainer.divergence.policy=rollback", "trainer.max_epochs=1")
    )
    solver = Solver(cfg, tmp_path)
    summary = solver.train()
    assert solver.state.rollbacks == 1
    assert solver.state.lr == pytest.approx(1e-3 * 0.5)
    assert summary["epochs"] == 1
    losses = [r for r in read_metrics(tmp_path) if r["kind"] == "train"]
    # step 5 diverged (not logged); training went back to the checkpoint at step 3
    assert [r["step"] for r in losses] == [1, 2, 3, 4, 4, 5, 6]


@pytest.mark.parametrize(
    "bad,named",
    [
        ("optim.batch_size=0", "optim.batch_size"),
        ("trainer.precision=fp8", "trainer.precision"),
        ("loss.name=hinge", "loss.name"),
        ("trainer.steps_per_epoch=-1", "trainer.steps_per_epoch"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, cache_dir, bad, named):
    cfg = compose("train", overrides(cache_dir, bad))
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        Solver(cfg, tmp_path)
    assert not list(tmp_path.iterdir())


def test_hydra_multirun_sweeps_output_modes(tmp_path, cache_dir):
    args = overrides(cache_dir, "trainer.max_epochs=1", "trainer.steps_per_epoch=2")
    proc = start_waveunet(
        "train", "-m", "output=tanh_difference,linear_direct", *args, f"runs_root={tmp_path}"
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    heads = sorted(load_model(p).output_mode.name for p in tmp_path.glob("multirun/*/*/*/best.pt"))
    assert heads == ["linear_direct", "tanh_difference"]
