"""What the tests share, in one place: tiny models and checkpoints, made-up songs, the training
overrides that make a run take seconds, and the one way to start ``waveunet`` in a subprocess.

Fixtures (generated datasets, caches) are in ``conftest.py``; these are plain functions, imported
as ``from helpers import ...`` (``tests/`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from waveunet.cli import main as cli_main
from waveunet.model.checkpoint import save_checkpoint
from waveunet.model.network import WaveUNet, build_model

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def tiny_model(*, levels: int = 3, filters: int = 4, channels: int = 2,
               output: str = "difference", activation: str = "tanh", context: bool = True,
               upsampling: str = "linear", rate: int = 22050, output_samples: int = 256,
               sources: tuple[str, ...] | None = None, seed: int | None = 0,
               **output_settings) -> WaveUNet:
    """A small untrained Wave-U-Net (3 levels, 4 filters by default), in eval mode: what a test
    of shapes, tiling, heads or files needs. ``seed`` None: torch's generator as it is."""
    if seed is not None:
        torch.manual_seed(seed)
    model = {"levels": levels, "initial_filters": filters, "channels": channels,
             "context": context, "upsampling": upsampling, "sample_rate_hz": rate,
             "output_samples": output_samples}
    if sources is not None:
        model["sources"] = list(sources)
    return build_model(model, {"type": output, "activation": activation,
                               **output_settings}).eval()


def tiny_checkpoint(path: Path, *, config: dict | None = None, **model) -> Path:
    """:func:`tiny_model` saved as a checkpoint at ``path`` (with a training ``config``)."""
    return save_checkpoint(path, tiny_model(**model), config=config)


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def tone(channels: int = 2, seconds: float = 0.3, rate: int = 22050, *, seed: int = 0,
         freqs: tuple[float, ...] | None = None, amplitude: float = 0.4,
         noise: float = 0.05) -> np.ndarray:
    """A made-up song, float32 ``(channels, samples)``: a sine per channel (220, 330, 440 Hz ...
    unless ``freqs``) plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    freqs = freqs or tuple(220 + 110 * c for c in range(channels))
    audio = [amplitude * np.sin(2 * np.pi * freqs[c % len(freqs)] * t)
             + noise * rng.standard_normal(t.size) for c in range(channels)]
    return np.asarray(audio, dtype=np.float32)


def write_song(path: Path, audio: np.ndarray | None = None, rate: int = 22050,
               **kwargs) -> Path:
    """``audio`` ``(channels, samples)`` (default :func:`tone`) written with soundfile, its
    folders made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (tone() if audio is None else audio).T, rate, **kwargs)
    return path


def write_stem_mp4(path: Path, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A MUSDB18-style .stem.mp4 (mixture, drums, bass, other, vocals); returns what was
    written (5, T, 2)."""
    import stempeg

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 44100)) / 44100
    stems = [0.15 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
             * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
             for f in (200.0, 110.0, 660.0, 440.0)]
    stems = np.stack([np.stack([s, 0.8 * s], axis=-1) for s in stems])  # (4, T, 2)
    data = np.concatenate([stems.sum(0, keepdims=True), stems]).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    stempeg.write_stems(str(path), data, sample_rate=44100,
                        writer=stempeg.StreamsWriter(codec="aac", bitrate=256000))
    return data


def snr_db(reference, estimate) -> float:
    """How close ``estimate`` is to ``reference`` (tensors or arrays), in dB."""
    reference, estimate = (x.double() if torch.is_tensor(x) else torch.tensor(np.array(x),
                                                                          dtype=torch.float64)
                           for x in (reference, estimate))
    noise = (reference - estimate).square().sum().clamp_min(1e-30)
    return float(10 * torch.log10(reference.square().sum() / noise))


def files_under(folder: Path) -> list[str]:
    """The files below ``folder``, as sorted relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*")
                  if p.is_file())


# --------------------------------------------------------------------------------------------
# Training runs that take seconds
# --------------------------------------------------------------------------------------------


def tiny_training_overrides(cache: Path) -> list[str]:
    """Model and data overrides that make a training run take seconds."""
    return [
        "model.levels=3",
        "model.initial_filters=6",
        "model.output_samples=1024",
        "data.tracks=3",
        "data.test_tracks=1",
        "data.seconds=3",
        "data.valid_fraction=0.34",
        f"data.cache_dir={cache}",
        "optim.batch_size=4",
    ]


def training_overrides(cache: Path, *extra: str) -> list[str]:
    """A whole tiny ``waveunet train`` run: the demo on :func:`tiny_training_overrides`, one
    epoch of 6 steps, checkpoints every 3, no progress bars, no audio in TensorBoard."""
    return ["experiment=demo", *tiny_training_overrides(cache), "data.workers=0",
            "trainer.steps_per_epoch=6", "trainer.max_epochs=1", "trainer.log_every_steps=2",
            "trainer.checkpoint_every_steps=3", "trainer.progress=false",
            "trainer.validation.audio_examples=0", *extra]


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def waveunet(*args) -> int:
    """``waveunet ARGS`` in this process; its exit status. Where a subprocess adds nothing."""
    return cli_main([str(a) for a in args])


def separate(*args) -> int:
    """``waveunet separate ARGS`` in this process; its exit status."""
    return waveunet("separate", *args)


def environment(**extra: str) -> dict[str, str]:
    """The environment of a ``waveunet`` subprocess: this checkout's package first, one torch
    thread, unbuffered output."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            **extra}


def ctrl_c_as_in_a_terminal() -> None:
    """A ``preexec_fn``: SIGINT back to its default. A job started in the background (``cmd &``,
    as some CI runners start the tests) inherits SIGINT ignored, and Python then never turns
    Ctrl-C into KeyboardInterrupt: a test of Ctrl-C would see it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_waveunet(*args, env: dict | None = None, **popen) -> subprocess.Popen:
    """``waveunet ARGS`` as a subprocess (output merged into ``stdout``, text): for signals, a
    second process, a killed run or a closed pipe, where the process is the thing tested."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True,
             "preexec_fn": ctrl_c_as_in_a_terminal, **popen}
    return subprocess.Popen([sys.executable, "-m", "waveunet", *map(str, args)], cwd=REPO,
                            env=env or environment(), **popen)


def run_waveunet(*args, env: dict | None = None, timeout: float = 300,
                 **kwargs) -> subprocess.CompletedProcess:
    """``waveunet ARGS`` as a subprocess, to its end: stdout and stderr apart, text."""
    return subprocess.run([sys.executable, "-m", "waveunet", *map(str, args)], cwd=REPO,
                          env=env or environment(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def run_python(code: str, *args, env: dict | None = None, timeout: float = 300,
               **kwargs) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` with :func:`environment`: code that must run in a fresh process
    (a module blocked from import, a resource limit)."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=REPO,
                          env=env or environment(), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def dead_pid() -> int:
    """The PID of a process that has ended (what a SIGKILL'd writer's temporaries carry)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
