"""The saturation experiment: all targets at the bound, on a small Wave-U-Net, real training."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest
import torch

from waveunet.cli import main as cli_main
from waveunet.errors import ConfigError
from waveunet.experiments.saturation import Saturation
from waveunet.settings.compose import compose

SMALL = ["model.levels=3", "model.initial_filters=6", "model.output_samples=256"]
MODES = ("saturation.modes=[{name:tanh_mse,output:tanh_direct},{name:clip_mse,output:clip_direct},"
         "{name:linear_mse,output:linear_direct},"
         "{name:tanh_ce,output:tanh_direct,loss:cross_entropy}]")
MODE_NAMES = ["tanh_mse", "clip_mse", "linear_mse", "tanh_ce"]
STEPS, RECOVERY = 40, 20
LINEAR_ONLY = ["saturation.modes=[{name:lin,output:linear_direct}]", "saturation.progress=false"]


def run(out, *extra: str) -> dict:
    args = [*SMALL, *extra, f"saturation.out_dir={out}"]
    return Saturation(compose("saturation", args), args).execute()


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run(
        tmp_path_factory.mktemp("saturation"),
        MODES,
        "saturation.optimisers=[{name:adam,lr:1e-2}]",
        f"saturation.steps={STEPS}",
        f"saturation.recovery_steps={RECOVERY}",
        "saturation.recovery_target=0.0",
        "saturation.batch_size=2",
        "saturation.seed=0",
        "saturation.threads=1",
        "saturation.progress=false",
    )


def runs(result) -> dict[str, dict]:
    return {r["mode"]["name"]: r for r in result["runs"]}


def test_every_step_is_recorded_and_the_files_are_written(result):
    for run_ in result["runs"]:
        for key, values in run_["records"].items():
            assert len(values) == STEPS + RECOVERY, key
    out = result["out_dir"]
    saved = json.loads(open(f"{out}/saturation.json").read())
    assert [r["mode"]["name"] for r in saved["runs"]] == MODE_NAMES
    assert mpimg.imread(f"{out}/saturation_adam.png").shape[1] > 800
    text = open(f"{out}/saturation.md").read()
    assert "| tanh_mse | mse | 1 |" in text and "recovery starts" in text


def test_same_start_for_every_head(result):
    """Same seed and inputs: the hidden layers see the same first forward pass."""
    first = {name: r["records"]["hidden_max_abs"][0] for name, r in runs(result).items()}
    assert len(set(first.values())) == 1
    pre = {name: r["records"]["pre_activation_mean_abs"][0] for name, r in runs(result).items()}
    assert max(pre.values()) == pytest.approx(min(pre.values()))


def test_tanh_saturates_its_gradient_vanishes_and_it_cannot_recover(result):
    tanh = runs(result)["tanh_mse"]["records"]
    assert tanh["pre_activation_mean_abs"][STEPS - 1] > 100 * tanh["pre_activation_mean_abs"][0]
    assert tanh["hidden_max_abs"][STEPS - 1] > 100 * tanh["hidden_max_abs"][0]
    assert tanh["first_layer_grad_norm"][STEPS - 1] < 1e-6 * max(
        tanh["first_layer_grad_norm"][:STEPS]
    )
    assert tanh["mse_to_target"][-1] > 0.5  # stuck at the old bound when the target moves to 0


def test_linear_reaches_the_bound_and_stays_trainable(result):
    linear = runs(result)["linear_mse"]["records"]
    assert linear["output_mean"][STEPS - 1] == pytest.approx(1.0, abs=0.05)
    assert linear["hidden_max_abs"][STEPS - 1] < 100
    assert linear["mse_to_target"][-1] < 0.2 * linear["mse_to_target"][STEPS]


def test_cross_entropy_keeps_a_gradient_when_the_target_moves(result):
    ce = runs(result)["tanh_ce"]["records"]
    assert ce["mse_to_target"][-1] < 0.5 * ce["mse_to_target"][STEPS]


def test_runs_check_the_loss_and_the_optimiser(tmp_path):
    with pytest.raises(ConfigError, match="cross"):
        run(tmp_path, "saturation.modes=[{name:x,output:linear_direct,loss:cross_entropy}]",
            "saturation.steps=2", "saturation.recovery_steps=0", "saturation.progress=false")
    with pytest.raises(ConfigError, match=r"saturation\.optimisers\[0\]\.name: unknown 'rmsprop'"):
        run(tmp_path, *LINEAR_ONLY, "saturation.optimisers=[{name:rmsprop,lr:1e-3}]")


def test_command_line(tmp_path):
    code = cli_main(["saturation", *SMALL, "saturation.steps=3", "saturation.recovery_steps=1",
                     "saturation.optimisers=[{name:sgd,lr:0.01}]", *LINEAR_ONLY,
                     f"saturation.out_dir={tmp_path}"])
    assert code == 0
    assert (tmp_path / "saturation_sgd.png").is_file() and (tmp_path / "saturation.md").is_file()
    # the run's own settings belong to the saturation block, and the old dispatch is gone
    assert cli_main(["saturation", *SMALL, "optim.lr=0.1", f"saturation.out_dir={tmp_path}"]) == 2
    assert cli_main(["compare", "experiment=saturation"]) == 2


def test_outputs_are_guarded_and_names_must_be_distinct(tmp_path):
    base = ["saturation.steps=2", "saturation.recovery_steps=0", "saturation.batch_size=1"]
    sgd = "saturation.optimisers=[{name:sgd,lr:1e-2}]"
    with pytest.raises(ConfigError, match="names must be distinct"):
        run(tmp_path, *base, sgd, "saturation.progress=false",
            "saturation.modes=[{name:lin,output:linear_direct},{name:lin,output:linear_direct}]")
    with pytest.raises(ConfigError, match="names must be distinct"):
        run(tmp_path, *base, *LINEAR_ONLY,
            "saturation.optimisers=[{name:sgd,lr:1e-2},{name:sgd,lr:1e-3}]")
    run(tmp_path / "ours", *base, *LINEAR_ONLY, sgd)
    run(tmp_path / "ours", *base, *LINEAR_ONLY, sgd)  # ours: replaced
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "saturation.md").write_text("my notes")
    with pytest.raises(ConfigError, match="not written by"):
        run(tmp_path / "foreign", *base, *LINEAR_ONLY, sgd)
    assert (tmp_path / "foreign" / "saturation.md").read_text() == "my notes"


def test_command_line_restores_the_thread_count(tmp_path):
    before = torch.get_num_threads()
    code = cli_main(["saturation", *SMALL, "saturation.steps=2", "saturation.recovery_steps=0",
                     "saturation.optimisers=[{name:sgd,lr:0.01}]", *LINEAR_ONLY,
                     f"saturation.threads={before + 1}", f"saturation.out_dir={tmp_path}"])
    assert code == 0 and torch.get_num_threads() == before


def test_a_mode_without_an_upper_bound_is_refused_before_anything_is_trained(tmp_path,
                                                                              monkeypatch):
    import waveunet.experiments.saturation as saturation

    trained, real = [], saturation.run_mode
    monkeypatch.setattr(saturation, "run_mode",
                        lambda cfg, mode, *a: trained.append(mode.name) or real(cfg, mode, *a))
    out = tmp_path / "new" / "saturation"
    with pytest.raises(ConfigError, match="'relu_direct'.* has no upper bound to aim at"):
        run(out, "saturation.steps=2", "saturation.recovery_steps=0", "saturation.progress=false",
            "saturation.optimisers=[{name:sgd,lr:1e-2}]",
            "saturation.modes=[{name:t,output:tanh_direct},{name:r,output:relu_direct}]")
    assert trained == []  # the tanh mode before it was not trained either
    assert not (tmp_path / "new").exists()
