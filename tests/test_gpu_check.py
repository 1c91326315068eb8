"""scripts/gpu_check.py's time budget: every step fits in one device command's limit."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_command_gets_no_more_than_the_budget_left(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "MIN_COMMAND_S", 0.2)
    check = gpu_check.Check(tmp_path, smoke=True, budget_s=1.5)
    start = time.perf_counter()
    done = check.run("sleep", [sys.executable, "-c", "import time; time.sleep(60)"], 120)
    assert done is None  # timed out at the budget, not at its own 120 s
    assert time.perf_counter() - start < 10
    assert "TIMED OUT" in (tmp_path / "gpu-check.log").read_text()


def test_steps_past_the_budget_are_recorded_as_not_run(gpu_check, tmp_path):
    code = gpu_check.main(["--out", str(tmp_path), "--smoke", "--steps", "env", "tests",
                           "--budget-s", "0"])
    assert code == 1
    steps = json.loads((tmp_path / "gpu-check.json").read_text())["steps"]
    assert steps == {name: {"ok": False, "not_run": True, "wall_s": 0.0}
                     for name in ("env", "tests")}
    assert "FAILED: env (not run), tests (not run)" in (tmp_path / "gpu-check.log").read_text()


def test_figures_are_checked_against_the_issues_targets_on_a_gpu_run(gpu_check, tmp_path):
    check = gpu_check.Check(tmp_path, smoke=False, budget_s=60)
    check.record("separate", True, 3.0, after_import_to_stems_s=2.1, peak_over_memory_budget=0.4)
    check.record("folder", True, 60.0, times_real_time=412.0)
    targets = check.results["targets"]
    assert targets["separate.after_import_to_stems_s"] == {"value": 2.1, "target": "<= 1.5",
                                                          "met": False}
    assert targets["separate.peak_over_memory_budget"]["met"] is True
    assert targets["folder.times_real_time"]["met"] is True
    smoke = gpu_check.Check(tmp_path / "smoke", smoke=True, budget_s=60)
    smoke.record("separate", True, 3.0, after_import_to_stems_s=2.1)
    assert "targets" not in smoke.results  # a tiny CPU model says nothing about the targets
