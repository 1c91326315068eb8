"""The experiments layer's shared base: guard, thread scope, stamp, modes, results JSON."""

from __future__ import annotations

import json

import pytest
import torch

from waveunet.devices import thread_scope
from waveunet.errors import ConfigError
from waveunet.experiments.base import Experiment, Mode, parse_modes, shared_overrides


class Counting(Experiment):
    """A minimal experiment: one result, one markdown file rendered from the JSON read back."""

    command_name = "counting"
    json_name = "counting.json"
    generator = "waveunet counting"
    report_name = "counting.md"

    def __init__(self, out_dir, threads=None, fail=False):
        super().__init__(out_dir, threads, "waveunet counting")
        self.fail = fail
        self.threads_seen = None

    def files(self):
        return [self.json_name, self.report_name]

    def run(self):
        self.threads_seen = torch.get_num_threads()
        if self.fail:
            raise RuntimeError("a run failed")
        return {"value": float("nan"), "n": 3}

    def render(self, result):
        (self.out_dir / self.report_name).write_text(f"n = {result['n']}, value {result['value']}")


def test_results_json_is_strict_stamped_and_rendered_from_what_was_written(tmp_path):
    result = Counting(tmp_path / "out").execute()
    saved = json.loads((tmp_path / "out" / "counting.json").read_text())
    assert saved["value"] is None  # NaN as null: strict JSON
    assert saved["generator"] == "waveunet counting" and saved["command"] == "waveunet counting"
    assert {"platform", "torch", "cpu_count", "torch_threads", "cuda"} <= set(saved["machine"])
    assert saved["wall_s"] >= 0 and result["out_dir"] == str((tmp_path / "out").resolve())
    assert (tmp_path / "out" / "counting.md").read_text() == "n = 3, value None"


def test_the_guard_replaces_ours_and_refuses_anything_else(tmp_path):
    Counting(tmp_path / "ours").execute()
    Counting(tmp_path / "ours").execute()  # an earlier call's files: replaced
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "counting.md").write_text("my notes")
    with pytest.raises(ConfigError, match="counting.out_dir: .* holds counting.md not written by"):
        Counting(tmp_path / "foreign").execute()
    assert (tmp_path / "foreign" / "counting.md").read_text() == "my notes"
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        Counting(tmp_path / "file").execute()


def test_the_thread_scope_holds_while_running_and_is_restored_even_on_failure(tmp_path):
    before = torch.get_num_threads()
    experiment = Counting(tmp_path / "t", threads=before + 1)
    experiment.execute()
    assert experiment.threads_seen == before + 1 and torch.get_num_threads() == before
    with pytest.raises(RuntimeError), thread_scope(before + 2):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        Counting(tmp_path / "f", threads=before + 1, fail=True).execute()
    assert torch.get_num_threads() == before


def test_modes_are_checked_and_name_the_entry():
    modes = parse_modes(["tanh_direct", {"name": "lin", "output": "linear_direct",
                                         "overrides": "optim.lr=0.1"}], "x.modes", "l1")
    assert modes == [Mode("tanh_direct", "tanh_direct", "l1"),
                     Mode("lin", "linear_direct", "l1", ("optim.lr=0.1",))]
    assert modes[1].run_overrides() == ["output=linear_direct", "loss.name=l1", "optim.lr=0.1"]
    with pytest.raises(ConfigError, match=r"x.modes\[0\].output: unknown preset 'nope'"):
        parse_modes([{"output": "nope"}], "x.modes", "mse")
    with pytest.raises(ConfigError, match=r"x.modes\[0\]: unknown key\(s\) overrides"):
        parse_modes([{"output": "tanh_direct", "overrides": []}], "x.modes", "mse", extra=False)
    with pytest.raises(ConfigError, match=r"x.modes\[0\].name: 'a/b' must be a plain folder"):
        parse_modes([{"name": "a/b", "output": "tanh_direct"}], "x.modes", "mse")
    with pytest.raises(ConfigError, match="need at least one mode"):
        parse_modes([], "x.modes", "mse")
    with pytest.raises(ConfigError, match="seed=1: seed is set per run by the experiment; use"):
        shared_overrides(["optim.lr=1", "seed=1"], ("seed",), "use x.seeds")
