"""waveunet compare: a shrunken comparison end to end, identical runs but for the head, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from helpers import tiny_training_overrides
from omegaconf import OmegaConf

from waveunet.cli import main as cli_main
from waveunet.errors import ConfigError
from waveunet.experiments.compare import (
    CURVES_NAME,
    JSON_NAME,
    RESULTS_NAME,
    SDR_FIGURE_NAME,
    WAVEFORM_NAME,
    Comparison,
    Settings,
    compare,
    config_differences,
    evaluate_run,
    run_config,
    spread,
)
from waveunet.reporting.figures import bound_marks, quiet_passage
from waveunet.settings.compose import compose
from waveunet.settings.schema import EvalConfig, FigureConfig
from waveunet.training.run_log import read_metrics


def shrunken(cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        "experiment=compare_quick",
        *tiny_training_overrides(cache),
        "trainer.steps_per_epoch=3",
        "trainer.max_epochs=2",
        "trainer.log_every_steps=2",
        "trainer.checkpoint_every_steps=2",
        "compare.seeds=[0,1]",
        f"compare.out_dir={out}",
        "compare.figure.passage_seconds=0.5",
        "compare.progress=false",
        "compare.eval.figures=false",  # each run's report figures: evaluate's tests draw them
        *extra,
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[dict, list[str], Path]:
    """One finished comparison, shared and read-only: tests that change it use ``own_copy``."""
    root = tmp_path_factory.mktemp("compare")
    args = shrunken(root / "cache", root / "out")
    result = compare(compose("compare", args), args)
    return result, args, root / "out"


@pytest.fixture
def own_copy(finished, tmp_path) -> tuple[list[str], Path]:
    """This test's own copy of the finished comparison: (its args, its out_dir)."""
    import shutil

    _, args, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return [a if not a.startswith("compare.out_dir=") else f"compare.out_dir={copy}"
            for a in args], copy


def test_runs_differ_only_in_the_head_and_seed(finished):
    result, args, out = finished
    runs = sorted(out.glob("runs/*/seed*/config.yaml"))
    assert len(runs) == 4
    configs = {
        f"{p.parent.parent.name}/{p.parent.name}": OmegaConf.to_container(OmegaConf.load(p))
        for p in runs
    }
    diff = config_differences(configs)
    assert set(diff) == {"output.activation", "output.type", "seed", "name"}, diff
    assert diff["output.activation"]["tanh_difference/seed0"] == "tanh"
    assert diff["output.activation"]["linear_direct/seed1"] == "linear"
    assert diff["seed"]["tanh_difference/seed1"] == diff["seed"]["linear_direct/seed1"] == 1
    # the config the checkpoint carries is the one compared
    import torch

    payload = torch.load(
        out / "runs/linear_direct/seed0/best.pt", map_location="cpu", weights_only=False
    )
    assert payload["config"]["output"]["activation"] == "linear"
    assert payload["config"]["optim"] == configs["tanh_difference/seed0"]["optim"]
    assert result["config_differences"].keys() == diff.keys()


def test_table_and_figures_are_written(finished):
    result, _, out = finished
    text = (out / RESULTS_NAME).read_text()
    for needle in [
        "## SDR per source",
        "## Clipping statistics",
        "median of track medians (SiSEC)",
        "pooled frames median (papers')",
        "| accompaniment | tanh_difference |",
        "| vocals | linear_direct |",
        "differ only in: `output.activation`, `output.type`",
        WAVEFORM_NAME,
        CURVES_NAME,
        "Machine:",
    ]:
        assert needle in text, needle
    for name in (WAVEFORM_NAME, CURVES_NAME, SDR_FIGURE_NAME):
        image = mpimg.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 400, name
    saved = json.loads((out / JSON_NAME).read_text())
    entry = saved["table"]["accompaniment"]["linear_direct"]
    assert entry["seeds"] == [0, 1]
    assert len(entry["sdr_median_of_track_medians_median"]["values"]) == 2
    assert entry["fraction_clipped"]["n"] == 2
    assert saved["waveform"]["source"] == "accompaniment"
    assert saved["waveform"]["other_sources_energy_ratio"] < 1e-4  # a passage without vocals
    assert {r["status"] for r in saved["runs"]} == {"finished"}
    for run in saved["runs"]:
        assert Path(run["evaluation"]).is_file()


def test_a_second_call_reuses_finished_runs(own_copy):
    args, out = own_copy
    stamp = (out / "runs/tanh_difference/seed0/best.pt").stat().st_mtime_ns
    again = compare(compose("compare", args), args)
    assert all(r["reused"] for r in again["runs"])
    assert (out / "runs/tanh_difference/seed0/best.pt").stat().st_mtime_ns == stamp


def test_an_interrupted_run_resumes_from_its_last_checkpoint(own_copy):
    import shutil

    args, out = own_copy
    run = out / "runs/linear_direct/seed1"
    steps = sum(r["kind"] == "train" for r in read_metrics(run))
    (run / "train_summary.json").unlink()  # as if killed after its last checkpoint
    shutil.rmtree(run / "eval")
    again = compare(compose("compare", args), args)
    (entry,) = [r for r in again["runs"] if r["mode"] == "linear_direct" and r["seed"] == 1]
    assert not entry["reused"] and entry["global_step"] == 6
    # resumed at the end, not retrained
    assert sum(r["kind"] == "train" for r in read_metrics(run)) == steps
    assert (run / "eval" / "summary.json").is_file()


def test_changed_eval_settings_are_evaluated_again_not_reused(own_copy):
    """One run's evaluation (what compare does for each run): settings that change the numbers
    evaluate it again, the same settings reuse it, and so do workers and figures."""
    args, out = own_copy
    run = out / "runs/tanh_difference/seed0"
    settings = Settings.from_config(compose("compare", args)).eval
    data = OmegaConf.to_container(OmegaConf.load(run / "config.yaml").data, resolve=True)

    def evaluated(eval_settings) -> bool:
        stamp = (run / "eval/summary.json").stat().st_mtime_ns
        evaluate_run(run, data, eval_settings)
        return (run / "eval/summary.json").stat().st_mtime_ns != stamp

    changed = dataclasses.replace(settings, max_tracks=1)
    assert evaluated(changed)
    assert json.loads((run / "eval_settings.json").read_text())["settings"]["max_tracks"] == 1
    assert not evaluated(changed)  # the same settings again: reused
    assert not evaluated(dataclasses.replace(changed, workers=3, figures=True))
    assert evaluated(settings)  # and back
    assert (
        json.loads((run / "eval_settings.json").read_text())["settings"].get("max_tracks") is None
    )


def test_bound_marks_of_a_one_sided_head():
    import numpy as np

    est = np.array([0.0, 0.5, 1.0, 3.0, -0.2])
    raw = np.array([0.0, 0.5, 1.0, 3.0, -0.5])
    assert bound_marks(est, raw, 0.0, None).tolist() == [True, False, False, False, True]
    assert bound_marks(est, None, -1.0, 1.0).tolist() == [False, False, True, True, False]


def test_changed_settings_are_refused_not_mixed_in(own_copy):
    args, _ = own_copy
    changed = [*args, "optim.lr=0.01"]
    with pytest.raises(ConfigError, match="trained with other settings"):
        compare(compose("compare", changed), changed)


def test_runs_are_reused_by_the_resume_rule(own_copy):
    """What trainer.resume may change (how visibly, how often it logs, where) does not make a
    finished run 'trained with other settings'; the comparison reuses it."""
    args, out = own_copy
    stamp = (out / "runs/tanh_difference/seed0/best.pt").stat().st_mtime_ns
    changed = [*args, "trainer.log_every_steps=3", "trainer.checkpoint_every_steps=3",
               "trainer.threads=2"]
    again = compare(compose("compare", changed), changed)
    assert all(r["reused"] for r in again["runs"])
    assert (out / "runs/tanh_difference/seed0/best.pt").stat().st_mtime_ns == stamp


def test_more_epochs_continue_finished_runs_and_evaluate_them_again(own_copy):
    args, out = own_copy
    run = out / "runs/linear_direct/seed0"
    evaluated = (run / "eval/summary.json").stat().st_mtime_ns
    longer = [*args, "trainer.max_epochs=3", "compare.seeds=[0]"]  # seed 1's runs left out
    again = compare(compose("compare", longer), longer)
    assert {(r["reused"], r["global_step"]) for r in again["runs"]} == {(False, 9)}
    assert (run / "eval/summary.json").stat().st_mtime_ns != evaluated
    assert OmegaConf.load(run / "config.yaml").trainer.max_epochs == 3
    resumes = [r for r in read_metrics(run) if r["kind"] == "resume"]
    assert resumes[-1]["changes"]["trainer.max_epochs"] == {"run": 2, "now": 3}
    # Asked again with the same settings: reused.
    assert all(r["reused"] for r in compare(compose("compare", longer), longer)["runs"])


def test_a_users_own_results_file_is_not_replaced(tmp_path):
    (tmp_path / "results.md").write_text("my notes")
    args = ["experiment=compare_quick", f"compare.out_dir={tmp_path}"]
    with pytest.raises(ConfigError, match="not written by"):
        compare(compose("compare", args), args)
    assert (tmp_path / "results.md").read_text() == "my notes"


def test_three_modes_with_cross_entropy_and_one_seed(tmp_path):
    args = shrunken(
        tmp_path / "cache",
        tmp_path / "out",
        "compare.seeds=[3]",
        "trainer.max_epochs=1",
        "compare.modes=[{name:tanh,output:tanh_difference},"
        "{name:tanh_ce,output:tanh_difference,loss:cross_entropy},{name:clip,output:clip_direct}]",
    )
    result = compare(compose("compare", args), args)
    assert [m["name"] for m in result["modes"]] == ["tanh", "tanh_ce", "clip"]
    assert set(result["config_differences"]) == {
        "output.activation",
        "output.type",
        "loss.name",
        "name",
    }
    text = (tmp_path / "out" / RESULTS_NAME).read_text()
    assert "one seed: no spread" in text and "| vocals | tanh_ce |" in text


def test_settings_errors_name_the_key(tmp_path):
    base = ["experiment=compare_quick", f"compare.out_dir={tmp_path}"]
    with pytest.raises(
        ConfigError, match="compare.modes\\[0\\].output: unknown preset 'tanh_sideways'"
    ):
        Settings.from_config(compose("compare", [*base, "compare.modes=[{output:tanh_sideways}]"]))
    with pytest.raises(ConfigError, match="names must be distinct"):
        Settings.from_config(compose("compare", [*base, "compare.modes=[tanh_direct,tanh_direct]"]))
    with pytest.raises(ConfigError, match="compare.seeds"):
        Settings.from_config(compose("compare", [*base, "compare.seeds=[]"]))
    with pytest.raises(ConfigError, match="set per run"):
        Comparison(compose("compare", base), [*base, "output=linear_direct"])
    assert cli_main(["compare", *base, "seed=3"]) == 2


def test_run_config_is_the_train_config_plus_the_head():
    from waveunet.experiments.compare import Mode

    cfg = run_config(["experiment=compare_quick"], Mode("lin", "linear_direct", "mse"), 7)
    train = compose(
        "train", ["experiment=compare_quick", "output=linear_direct", "seed=7", "name=lin"]
    )
    expected = OmegaConf.to_container(train, resolve=True)
    expected.pop("compare", None)
    assert OmegaConf.to_container(cfg) == expected
    assert "compare" not in cfg


def test_quiet_passage_finds_the_loudest_solo():
    import numpy as np

    refs = np.zeros((2, 1, 1000), dtype=np.float32)
    refs[0, 0, :] = 0.1
    refs[0, 0, 600:800] = 0.9  # loud accompaniment ...
    refs[1, 0, :500] = 0.3     # ... after the vocals stop
    start, peak, ratio = quiet_passage(refs, 0, 200)
    assert start >= 500 and peak == pytest.approx(0.9) and ratio == 0.0


def test_spread_over_seeds():
    s = spread([1.0, 2.0, None, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["n"] == 3
    assert spread([None])["mean"] is None


def test_the_eval_and_figure_settings_are_read_from_their_typed_blocks(tmp_path):
    """One place for each default (configs/eval/default.yaml, configs/compare.yaml): the
    comparison reads the checked dataclasses, not dicts with defaults written again."""
    base = ["experiment=compare_quick", f"compare.out_dir={tmp_path}"]
    s = Settings.from_config(compose("compare", base))
    assert isinstance(s.eval, EvalConfig) and isinstance(s.figure, FigureConfig)
    given = Settings.from_config(compose("compare", [
        *base, "compare.eval.device=cpu", "compare.eval.precision=fp32",
        "compare.figure.passage_seconds=1.5", "compare.figure.track=song"]))
    assert (given.eval.device, given.eval.precision) == ("cpu", "fp32")
    assert (given.figure.passage_seconds, given.figure.track) == (1.5, "song")
