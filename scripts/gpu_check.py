#!/usr/bin/env python
"""`make gpu-check`: everything the project must show on a lent GPU, in one prepared run.

A lent GPU machine is bare, its time is short (15 minutes a session, 1-2 of them to start
it), and nothing can be installed there from the network. So this one script runs every
GPU check in sequence, each step in its own subprocess under its own time limit, and
writes what it measured to ``--out`` (``$OUT`` on the device machine):

* ``gpu-check.json``: every step's status, wall time and figures, and the device;
* ``gpu-check.log``: the steps' full output, with the device named at the top;
* ``bench-cuda.json``: the training benchmark (``scripts/bench.py``).

Steps (``--steps`` picks some):

``env``        device, driver, torch/CUDA versions, CPU count.
``tests``      the tests marked ``cuda``; fails if any of them is skipped.
``bench``      m5_highsr training step, batch 16, 16,389-sample outputs: fp32 and bf16,
               eager and ``torch.compile``, against a large conv1d in the same precision.
``profile``    torch.profiler's table of the bf16 step (``profile.txt``): where the time goes.
``train``      a real ``waveunet train`` (m5_highsr, bf16) on generated data: one 2,000 x 16
               epoch, its training and validation (14 tracks) times from ``metrics.jsonl``,
               end-to-end steps/s against the bare step's, projected training lengths.
``quality``    ``scripts/precision_quality.py`` on that checkpoint and the generated test
               songs, on the GPU: bf16 and fp16 stems' SNR against fp32, the SDR change.
``separate``   ``waveunet separate`` of a 3-minute song with that checkpoint: seconds from the
               end of ``import torch`` to stems on disk (import time reported beside it), and
               the peak GPU memory against ``--memory-gib``.
``folder``     ``waveunet separate`` of a folder of 20 three-minute songs: whole process,
               start-up included, as a multiple of real time.
``torchrun``   ``torchrun --nproc_per_node=1`` training with the NCCL backend.

The steps after ``train`` use its checkpoint; if training failed they use an untrained
m5_highsr checkpoint instead (speed does not depend on the weights; ``quality`` is then
recorded as not measured). Each figure with a target in the issues is checked against it
(``targets`` in ``gpu-check.json``; a missed target is listed at the end, beside failed steps).

Before the run, on the development machine: ``make gpu-wheels`` puts wheels of what the
GPU image lacks into ``.whl/`` (REFERENCE.md section 5); ``scripts/gpu_check.sh``
installs them there and starts this script. ``--smoke`` runs the same steps on the CPU
with a tiny model and seconds of audio, to try the script before spending GPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Seconds for the whole check: under the device tool's 600-s command limit, with room to
# write the results and hand them back.
DEFAULT_BUDGET_S = 540.0
MIN_COMMAND_S = 5.0  # a command given less than this is not started (recorded "not run")
STEPS = ("env", "tests", "bench", "profile", "train", "quality", "separate", "folder",
         "torchrun")
# The issues' targets, checked on a GPU run (not in --smoke): (step, figure) -> (rule, value).
TARGETS = {
    ("bench", "bf16_over_fp32_eager"): ("<=", 0.5),
    ("bench", "fastest_step_ms"): ("<=", 8.0),
    ("train", "loop_over_bare"): (">=", 0.9),
    ("train", "epoch_train_s"): ("<=", 20.0),
    ("train", "published_236118_steps_projected_min"): ("<=", 45.0),
    ("quality", "bf16_snr_db_min"): (">=", 45.0),
    ("quality", "bf16_sdr_change_db_max_abs"): ("<=", 0.05),
    ("separate", "after_import_to_stems_s"): ("<=", 1.5),
    ("separate", "peak_over_memory_budget"): ("<=", 1.0),
    ("folder", "times_real_time"): (">=", 300.0),
}
SEPARATE_MEMORY_GIB = 4.0  # the --memory-gib the separate step gives


class Check:
    """Runs steps as subprocesses, logs their output and collects their figures."""

    def __init__(self, out: Path, smoke: bool, budget_s: float):
        self.out, self.smoke = out, smoke
        # One deadline for the whole check: a step gets min(its own limit, what is left), so
        # the run ends (and writes its results) before the device session's command limit.
        self.deadline = time.perf_counter() + budget_s
        self.work = out / "work" if smoke else Path("/tmp/waveunet-gpu-check")
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "gpu-check.log", "a", buffering=1)  # noqa: SIM115
        self.results: dict = {"smoke": smoke, "steps": {}}
        self.device = "cpu" if smoke else "cuda"

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")

    def run(self, name: str, argv: list[str], timeout_s: float, env: dict | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess | None:
        """One command under a time limit (its own, or what is left of the check's budget if
        that is less); its output goes to the log. None if it timed out or no time was left."""
        timeout_s = min(timeout_s, self.remaining_s())
        if timeout_s < MIN_COMMAND_S:
            self.say(f"\n[{name}] not run: the check's time budget is spent")
            return None
        self.say(f"\n$ {shlex.join(argv)}   # {name}, limit {timeout_s:.0f} s")
        start = time.perf_counter()
        try:
            done = subprocess.run(argv, cwd=cwd or REPO, env={**os.environ, **(env or {})},
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            self.log.write(_text(exc.stdout) + _text(exc.stderr))
            self.say(f"[{name}] TIMED OUT after {timeout_s:.0f} s")
            return None
        self.log.write(done.stdout + done.stderr)
        self.say(f"[{name}] exit {done.returncode} in {time.perf_counter() - start:.1f} s")
        return done

    def remaining_s(self) -> float:
        return self.deadline - time.perf_counter()

    def record(self, step: str, ok: bool, seconds: float, **figures) -> None:
        self.results["steps"][step] = {"ok": ok, "wall_s": round(seconds, 2), **figures}
        if not self.smoke:
            for (target_step, name), (rule, bound) in TARGETS.items():
                if target_step == step and figures.get(name) is not None:
                    value = figures[name]
                    met = value <= bound if rule == "<=" else value >= bound
                    self.results.setdefault("targets", {})[f"{step}.{name}"] = {
                        "value": value, "target": f"{rule} {bound}", "met": met}
        self.say(f"== {step}: {'ok' if ok else 'FAILED'} ({seconds:.1f} s) {json.dumps(figures)}")

    def save(self) -> None:
        path = self.out / "gpu-check.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.results, indent=2) + "\n")
        os.replace(tmp, path)


def _text(x) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")


def waveunet(*args: str) -> list[str]:
    return [sys.executable, "-m", "waveunet", *args]


# -- steps ----------------------------------------------------------------------------------
def step_env(c: Check) -> None:
    t0 = time.perf_counter()
    probe = ("import json, os, platform, torch; d = torch.cuda.is_available(); print(json.dumps({"
             "'python': platform.python_version(), 'torch': torch.__version__, "
             "'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), "
             "'device': torch.cuda.get_device_name(0) if d else platform.processor() or 'cpu', "
             "'gpu_memory_gib': round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)"
             " if d else None, 'cpus': os.cpu_count()}))")
    done = c.run("env", [sys.executable, "-c", probe], 120)
    ok = done is not None and done.returncode == 0
    info = json.loads(done.stdout.strip().splitlines()[-1]) if ok else {}
    if shutil.which("nvidia-smi"):
        smi = c.run("env", ["nvidia-smi", "-L"], 30)
        if smi is not None:
            info["nvidia_smi"] = smi.stdout.strip()
    c.results["machine"] = info
    c.say(f"# device: {info.get('device')} (torch {info.get('torch')}, CUDA {info.get('cuda')})")
    c.record("env", ok and (c.smoke or info.get("cuda") is not None), time.perf_counter() - t0)


def cuda_test_files() -> list[str]:
    """Test modules with CUDA-marked tests: the others may import what the GPU image lacks."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "pytest.mark.cuda" in p.read_text())


def step_tests(c: Check) -> None:
    t0 = time.perf_counter()
    argv = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-rs",
            *cuda_test_files()]
    if c.smoke:  # no CUDA here: what runs is that the marked tests are collected and skip
        done = c.run("tests", argv, 300)
        ok = done is not None and "skipped" in done.stdout and done.returncode in (0, 5)
        c.record("tests", ok, time.perf_counter() - t0, note="smoke: cuda tests collected, skipped")
        return
    done = c.run("tests", argv, 240, env={"WAVEUNET_REQUIRE_CUDA": "1"})
    summary = done.stdout.strip().splitlines()[-1] if done is not None and done.stdout else ""
    ok = done is not None and done.returncode == 0 and "skipped" not in summary
    c.record("tests", ok, time.perf_counter() - t0, summary=summary)


def step_bench(c: Check) -> None:
    t0 = time.perf_counter()
    out = c.out / "bench-cuda.json" if not c.smoke else c.out / "bench-smoke.json"
    argv = [sys.executable, "scripts/bench.py", "--device", c.device, "--sections", "train",
            "--json", str(out)]
    if c.smoke:
        argv += ["--presets", "tiny", "--precision", "fp32", "bf16", "--batch", "2",
                 "--repeats", "1"]
    else:
        argv += ["--presets", "m5_highsr", "--precision", "fp32", "bf16", "--compile",
                 "--batch", "16", "--repeats", "20"]
    done = c.run("bench", argv, 120 if c.smoke else 300)
    ok = done is not None and done.returncode == 0 and out.is_file()
    figures: dict = {}
    if ok:
        figures = bench_figures(json.loads(out.read_text()))
        c.results["bench"] = figures
    c.record("bench", ok, time.perf_counter() - t0, **figures)


def bench_figures(bench: dict) -> dict:
    """The issue's figures from a bench JSON: bf16/fp32 eager ratio, fastest step, shares."""
    steps = {(r["precision"], r["compile"]): r for r in bench["train"]}
    refs = {r["precision"]: r["flop_per_s"] for r in bench["reference"]}
    figures = {f"{p}{'_compiled' if comp else ''}_step_ms": round(1e3 * r["step_seconds"], 2)
               for (p, comp), r in steps.items()}
    for (p, comp), r in steps.items():
        figures[f"{p}{'_compiled' if comp else ''}_share_of_reference"] = round(
            r["flop_per_s"] / refs[p], 3)
    if ("fp32", False) in steps and ("bf16", False) in steps:
        figures["bf16_over_fp32_eager"] = round(
            steps[("bf16", False)]["step_seconds"] / steps[("fp32", False)]["step_seconds"], 3)
    fastest = min(steps.items(), key=lambda kv: kv[1]["step_seconds"])
    figures["fastest_setting"] = f"{fastest[0][0]}{' compiled' if fastest[0][1] else ''}"
    figures["fastest_step_ms"] = round(1e3 * fastest[1]["step_seconds"], 2)
    figures["reference_tflops"] = {p: round(v / 1e12, 2) for p, v in refs.items()}
    return figures


def _train_overrides(c: Check, run_root: Path) -> list[str]:
    common = [f"runs_root={run_root}", f"data.cache_dir={c.work / 'cache'}",
              f"data.root={c.work / 'data'}", "trainer.progress=false",
              f"trainer.device={c.device}", "trainer.validation.audio_examples=0",
              "trainer.second_round.enabled=false", "name=gpu-check"]
    if c.smoke:
        return ["experiment=demo", "model.levels=3", "model.initial_filters=6",
                "model.output_samples=1024", "data.tracks=3", "data.test_tracks=1",
                "data.seconds=3", "data.valid_fraction=0.34", "optim.batch_size=4",
                "data.workers=0", "trainer.max_epochs=1", "trainer.steps_per_epoch=20",
                "trainer.log_every_steps=5", *common]
    # One full M5-HighSR epoch (2,000 steps x 16), validated on 14 tracks (MUSDB18's
    # validation set has 14; generated ones are 12 s long here, so the validation time is
    # reported per second of audio as well).
    return ["model=m5_highsr", "data=synthetic", "data.tracks=28", "data.test_tracks=2",
            "data.seconds=12", "data.valid_fraction=0.5", "data.workers=8",
            "trainer.precision=bf16", "optim.batch_size=16", "trainer.max_epochs=1",
            "trainer.steps_per_epoch=2000", "trainer.log_every_steps=100",
            "trainer.checkpoint_every_steps=100000", *common]


def step_train(c: Check) -> None:
    t0 = time.perf_counter()
    run_root = c.work / "runs"
    shutil.rmtree(run_root, ignore_errors=True)
    done = c.run("train", waveunet("train", *_train_overrides(c, run_root)),
                 300 if c.smoke else 360)
    best = sorted(run_root.glob("gpu-check/*/best.pt"))
    ok = done is not None and done.returncode == 0 and bool(best)
    figures: dict = {}
    if ok:
        c.results["checkpoint"] = str(best[-1])
        batch = 4 if c.smoke else 16
        figures = train_figures(best[-1].parent, c.results.get("bench", {}), batch)
    c.record("train", ok, time.perf_counter() - t0, **figures)


def train_figures(run_dir: Path, bench: dict, batch: int) -> dict:
    """Steps/s of the training loop (examples/s logged by the trainer) against the bare step."""
    from waveunet.training.run_log import read_metrics

    records = read_metrics(run_dir)
    health = [r for r in records if r.get("kind") == "health" and "train/examples_per_s" in r]
    train_steps = [r for r in records if r.get("kind") == "train"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    figures: dict = {"train_steps": len(train_steps)}
    if epochs:  # the trainer's own timing: training and validation separately
        figures["epoch_train_s"] = round(epochs[0]["train_seconds"], 2)
        figures["epoch_valid_s"] = round(epochs[0]["valid_seconds"], 2)
        figures["epoch_examples_per_s"] = round(epochs[0]["examples_per_s"], 1)
    if len(health) > 1:
        rates = [r["train/examples_per_s"] for r in health[1:]]  # the first window holds start-up
        figures["examples_per_s"] = round(sum(rates) / len(rates), 1)
    bare_ms = bench.get("bf16_step_ms")
    if bare_ms and "examples_per_s" in figures:
        steps_per_s = figures["examples_per_s"] / batch
        figures["steps_per_s"] = round(steps_per_s, 2)
        figures["bare_steps_per_s"] = round(1e3 / bare_ms, 2)
        figures["loop_over_bare"] = round(steps_per_s * bare_ms / 1e3, 3)
        figures["epoch_2000x16_projected_s"] = round(2000 / steps_per_s, 1)
        # the step of the original's released M5-HighSR checkpoint
        figures["published_236118_steps_projected_min"] = round(236118 / steps_per_s / 60, 1)
    return figures


PROFILE = """
import sys, torch, torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from waveunet.settings.compose import compose
from waveunet.model.network import build_model
preset, device, batch = sys.argv[1], torch.device(sys.argv[2]), int(sys.argv[3])
cfg = compose("config", [f"model={preset}"])
model = build_model(cfg.model, cfg.output).to(device).train()
opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
mix = torch.rand(batch, model.config.channels, model.input_samples, device=device) * 2 - 1
tgt = torch.rand(batch, len(model.sources), model.config.channels, model.output_samples,
                 device=device) * 2 - 1
def step():
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = model(mix)
    loss = F.mse_loss(out.estimates.float(), tgt)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(3):
    step()
cuda = device.type == "cuda"
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
with profile(activities=acts) as prof:
    for _ in range(5):
        step()
    if cuda:
        torch.cuda.synchronize()
key = "cuda_time_total" if cuda else "cpu_time_total"
print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=60))
"""


def step_profile(c: Check) -> None:
    """Where the bf16 training step's time goes (torch.profiler, 5 steps): the evidence when a
    step-time target is missed."""
    t0 = time.perf_counter()
    preset, batch = ("tiny", 2) if c.smoke else ("m5_highsr", 16)
    done = c.run("profile", [sys.executable, "-c", PROFILE, preset, c.device, str(batch)], 180)
    ok = done is not None and done.returncode == 0
    if ok:
        (c.out / "profile.txt").write_text(done.stdout)
        c.say(done.stdout[-6000:])
    c.record("profile", ok, time.perf_counter() - t0, table="profile.txt" if ok else None)


def _song(c: Check, seconds: float) -> Path:
    """A generated stereo song at 44.1 kHz (a synth track repeated to length)."""
    path = c.work / "songs" / "song.wav"
    if path.is_file():
        return path
    make = ("import numpy as np, soundfile as sf, sys; "
            "from waveunet.data.synth import generate_track; "
            "t = generate_track([7, 0, 0], 20.0, 44100, loud=True)['mixture']; "
            f"n = int({seconds} * 44100); reps = -(-n // t.shape[1]); "
            "sf.write(sys.argv[1], np.tile(t, (1, reps))[:, :n].T, 44100, subtype='PCM_16')")
    path.parent.mkdir(parents=True, exist_ok=True)
    c.run("song", [sys.executable, "-c", make, str(path)], 120)
    return path


UNTRAINED = """
import sys
from waveunet.model.checkpoint import save_checkpoint
from waveunet.settings.compose import compose
from waveunet.model.network import build_model
from omegaconf import OmegaConf
cfg = compose("config", [f"model={sys.argv[1]}"])
save_checkpoint(sys.argv[2], build_model(cfg.model, cfg.output),
                config={"name": "untrained", **OmegaConf.to_container(cfg, resolve=True)})
"""


def _checkpoint(c: Check) -> tuple[str | None, bool]:
    """The train step's checkpoint, else an untrained one of the same preset (made once):
    (path or None, trained)."""
    if c.results.get("checkpoint"):
        return c.results["checkpoint"], True
    path = c.work / "untrained.pt"
    if not path.is_file():
        preset = "tiny" if c.smoke else "m5_highsr"
        c.run("untrained", [sys.executable, "-c", UNTRAINED, preset, str(path)], 120)
    return (str(path) if path.is_file() else None), False


def step_quality(c: Check) -> None:
    """bf16 / fp16 separation quality against fp32 on the GPU (issue 12's 45 dB and 0.05 dB),
    on the trained checkpoint and the generated test songs it was not trained on."""
    t0 = time.perf_counter()
    ckpt, trained = _checkpoint(c)
    test = c.work / "data" / "test"
    if not trained or not test.is_dir():
        c.record("quality", False, 0.0, error="no trained checkpoint from the train step")
        return
    out = c.out / "precision-quality.json"
    done = c.run("quality", [sys.executable, "scripts/precision_quality.py", ckpt, str(test),
                             "--device", c.device, "--precision", "bf16", "fp16",
                             "--json", str(out)], 180)
    ok = done is not None and done.returncode == 0 and out.is_file()
    figures: dict = {}
    if ok:
        q = json.loads(out.read_text())
        figures = {"tracks": q["tracks"], "fp32_sdr_db": q["fp32_sdr_db"]}
        for precision in ("bf16", "fp16"):
            figures[f"{precision}_snr_db_min"] = round(q[precision]["snr_db_min"], 2)
            figures[f"{precision}_sdr_change_db_max_abs"] = round(
                max(abs(v) for v in q[precision]["sdr_change_db"].values()), 4)
    c.record("quality", ok, time.perf_counter() - t0, **figures)


def step_separate(c: Check) -> None:
    t0 = time.perf_counter()
    ckpt, trained = _checkpoint(c)
    if ckpt is None:
        c.record("separate", False, 0.0, error="no checkpoint")
        return
    seconds = 20.0 if c.smoke else 180.0
    song = _song(c, seconds)
    out = c.work / "separated-one"
    shutil.rmtree(out, ignore_errors=True)
    # Times from the end of `import torch` to the stems on disk, in one fresh process.
    # and the peak GPU memory of the process against the --memory-gib it was given.
    driver = ("import time, json, sys; t0 = time.perf_counter(); import torch; "
              "t1 = time.perf_counter(); from waveunet.cli import main; "
              "rc = main(sys.argv[1:]); t2 = time.perf_counter(); "
              "peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None; "
              "print(json.dumps({'rc': rc, 'import_torch_s': t1 - t0, 'separate_s': t2 - t1, "
              "'peak_bytes': peak}))")
    argv = [sys.executable, "-c", driver, "separate", str(song), "-c", ckpt, "-o", str(out),
            "-d", c.device, "-q", "--memory-gib", str(SEPARATE_MEMORY_GIB)]
    done = c.run("separate", argv, 180)
    ok = done is not None and done.returncode == 0
    figures: dict = {"song_seconds": seconds, "trained_checkpoint": trained}
    if ok:
        timing = json.loads(done.stdout.strip().splitlines()[-1])
        stems = sorted(p.name for p in out.rglob("*.wav"))
        ok = timing["rc"] == 0 and len(stems) >= 2
        figures.update(import_torch_s=round(timing["import_torch_s"], 2),
                       after_import_to_stems_s=round(timing["separate_s"], 2), stems=stems)
        if timing["peak_bytes"] is not None:
            peak_gib = timing["peak_bytes"] / 2**30
            figures.update(memory_gib_given=SEPARATE_MEMORY_GIB, peak_gpu_gib=round(peak_gib, 3),
                           peak_over_memory_budget=round(peak_gib / SEPARATE_MEMORY_GIB, 3))
    c.record("separate", ok, time.perf_counter() - t0, **figures)


def step_folder(c: Check) -> None:
    t0 = time.perf_counter()
    ckpt, trained = _checkpoint(c)
    if ckpt is None:
        c.record("folder", False, 0.0, error="no checkpoint")
        return
    seconds, count = (20.0, 3) if c.smoke else (180.0, 20)
    song = _song(c, seconds)
    folder = c.work / "folder"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(count):
        os.link(song, folder / f"song_{i:02d}.wav")
    out = c.work / "separated-folder"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    # the folder itself as input: waveunet separate takes the audio files under it
    done = c.run("folder", waveunet("separate", str(folder), "-c", ckpt, "-o", str(out), "-d",
                                    c.device, "-q"), 300)
    wall = time.perf_counter() - start
    ok = done is not None and done.returncode == 0
    ok = ok and len(list(out.rglob("vocals.wav"))) == count
    c.record("folder", ok, time.perf_counter() - t0, trained_checkpoint=trained, songs=count,
             song_seconds=seconds,
             process_wall_s=round(wall, 2), times_real_time=round(count * seconds / wall, 1))


def step_torchrun(c: Check) -> None:
    t0 = time.perf_counter()
    run_root = c.work / "runs-torchrun"
    shutil.rmtree(run_root, ignore_errors=True)
    overrides = ["experiment=demo", "model.levels=3", "model.initial_filters=6",
                 "model.output_samples=1024", "data.tracks=3", "data.test_tracks=1",
                 "data.seconds=3", "data.valid_fraction=0.34", "optim.batch_size=4",
                 "data.workers=0", "trainer.max_epochs=1", "trainer.steps_per_epoch=10",
                 f"trainer.device={c.device}", f"runs_root={run_root}",
                 f"data.cache_dir={c.work / 'cache-torchrun'}",
                 f"data.root={c.work / 'data-torchrun'}", "trainer.progress=false"]
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
            "scripts/train.py", *overrides]
    done = c.run("torchrun", argv, 180, env={"TORCH_DISTRIBUTED_DEBUG": "INFO"})
    ok = done is not None and done.returncode == 0 and any(run_root.glob("*/*/best.pt"))
    backend = "gloo" if c.smoke else "nccl"
    c.record("torchrun", ok, time.perf_counter() - t0, backend=backend)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny model, seconds of audio: try the script, not the GPU")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="seconds for the whole check; a step gets what is left if that "
                        "is less than its own limit, later steps are recorded as not run "
                        "(default %(default)s)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    c = Check(args.out.resolve(), args.smoke, args.budget_s)
    os.environ.setdefault("PYTHONPATH", str(REPO))
    start = time.perf_counter()
    try:
        for name in args.steps:
            if c.remaining_s() < MIN_COMMAND_S:
                c.results["steps"][name] = {"ok": False, "not_run": True, "wall_s": 0.0}
                c.say(f"== {name}: NOT RUN (the check's {args.budget_s:.0f}-s budget is spent)")
            else:
                globals()[f"step_{name}"](c)
            c.save()
    finally:
        c.results["total_wall_s"] = round(time.perf_counter() - start, 1)
        c.save()
    failed = [s + (" (not run)" if r.get("not_run") else "")
              for s, r in c.results["steps"].items() if not r["ok"]]
    missed = [f"{name} = {t['value']} (target {t['target']})"
              for name, t in c.results.get("targets", {}).items() if not t["met"]]
    if missed:
        c.say("targets missed (see profile.txt): " + "; ".join(missed))
    c.say(f"\ngpu-check {'FAILED: ' + ', '.join(failed) if failed else 'passed'} "
          f"in {c.results['total_wall_s']:.0f} s; results in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
