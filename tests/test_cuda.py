"""The GPU path end to end: training in bf16/fp16 with the data on the device, separation on
CUDA, the CUDA random state of a resume, validation's memory plan. Tests marked ``cuda`` skip
on the CPU and run in ``make gpu-check`` (where a skip is a failure); the CPU tests here check
the CPU side of the same rules."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import snr_db, training_overrides

from waveunet.model.network import build_model
from waveunet.separation.inference import Separator
from waveunet.settings.compose import compose
from waveunet.training import validation
from waveunet.training.solver import Solver, rng_state, set_rng_state


def overrides(cache, *extra: str) -> list[str]:
    return training_overrides(cache, "trainer.max_epochs=2", "trainer.log_every_steps=3",
                              "trainer.validation.audio_examples=1",
                              "trainer.validation.audio_seconds=1", *extra)


# -- CPU side ---------------------------------------------------------------------------------
def test_the_random_state_round_trips_and_names_no_cuda_on_the_cpu():
    cpu = torch.device("cpu")
    state = rng_state(cpu)
    assert state["cuda"] is None
    first = torch.rand(4)
    set_rng_state(state, cpu)
    assert torch.equal(torch.rand(4), first)


def test_a_checkpoint_with_every_devices_cuda_state_still_resumes_on_the_cpu():
    cpu = torch.device("cpu")
    state = rng_state(cpu)
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 2  # the format before the rule
    first = torch.rand(4)
    set_rng_state(state, cpu)
    assert torch.equal(torch.rand(4), first)


def test_validation_plans_for_half_of_the_free_gpu_memory(monkeypatch):
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 6 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 4 * gib)
    # free 10 GiB + 2 GiB cached but unused, half of it
    assert validation.validation_memory_budget_bytes(torch.device("cuda:0")) == 6 * gib
    assert validation.validation_memory_budget_bytes(torch.device("cpu")) is None


# -- GPU --------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ("bf16", "fp16"))
def test_cuda_training_with_the_data_on_the_device(tmp_path, precision):
    cfg = compose("train", overrides(tmp_path / "cache", "trainer.device=cuda",
                                     f"trainer.precision={precision}", "data.on_device=true"))
    solver = Solver(cfg, tmp_path / "run")
    assert solver.device.type == "cuda" and solver.data.on_device is not None
    before = solver.validate()["loss"]
    summary = solver.train()
    assert math.isfinite(summary["best_valid_loss"]) and summary["best_valid_loss"] < before
    assert (tmp_path / "run" / "best.pt").exists()
    payload = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    rng = payload["training"]["rng"]["cuda"]
    assert isinstance(rng, torch.Tensor)  # the training device's generator, not a list
    scaler = payload["training"]["scaler"]
    assert bool(scaler) == (precision == "fp16")  # the grad scaler only for fp16


@pytest.mark.cuda
def test_the_cuda_random_state_round_trips():
    device = torch.device("cuda:0")
    state = rng_state(device)
    first = torch.rand(8, device=device)
    set_rng_state(state, device)
    assert torch.equal(torch.rand(8, device=device), first)


@pytest.mark.cuda
def test_separation_on_cuda_matches_the_cpu():
    cfg = compose("train", ["experiment=demo"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.output).eval()
    song = 0.3 * torch.randn(model.config.channels, 3 * model.sample_rate_hz)
    on_cpu = Separator(model, device="cpu", precision="fp32").separate_tensor(song).stems
    auto = Separator(model, device="cuda", precision="auto")
    assert auto.precision == "bf16"
    on_cuda = auto.separate_tensor(song).stems
    assert on_cuda.device.type == "cpu" and on_cuda.dtype == torch.float32
    assert on_cuda.shape == on_cpu.shape
    assert snr_db(on_cpu, on_cuda) > 25.0
    fp32 = Separator(model, device="cuda", precision="fp32").separate_tensor(song).stems
    assert snr_db(on_cpu, fp32) > 40.0  # TF32 convolutions at most


@pytest.mark.cuda
def test_validation_during_cuda_training_fits_beside_it():
    device = torch.device("cuda:0")
    budget = validation.validation_memory_budget_bytes(device)
    free_bytes, total_bytes = torch.cuda.mem_get_info(device)
    assert 0 < budget <= total_bytes // 2
