"""The saturation experiment: all targets at the bound, on a small Wave-U-Net, real training."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest
import torch

from waveunet.cli import main as cli_main
from waveunet.config import compose
from waveunet.errors import ConfigError
from waveunet.saturation import OptimiserSpec, SaturationMode, run_mode, run_saturation

SMALL = ["model=tiny", "model.levels=3", "model.initial_filters=6", "model.output_samples=256"]
MODES = [SaturationMode("tanh_mse", "tanh_direct"), SaturationMode("clip_mse", "clip_direct"),
         SaturationMode("linear_mse", "linear_direct"),
         SaturationMode("tanh_ce", "tanh_direct", "cross_entropy")]
STEPS, RECOVERY = 40, 20


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = compose("config", SMALL).model
        out = tmp_path_factory.mktemp("saturation")
        return run_saturation(model, MODES, [OptimiserSpec("adam", 1e-2)], out, steps=STEPS,
                              recovery_steps=RECOVERY, recovery_target=0.0, batch_size=2,
                              seed=0, progress=False)
    finally:
        torch.set_num_threads(threads)


def runs(result) -> dict[str, dict]:
    return {r["mode"]["name"]: r for r in result["runs"]}


def test_every_step_is_recorded_and_the_files_are_written(result):
    for run in result["runs"]:
        for key, values in run["records"].items():
            assert len(values) == STEPS + RECOVERY, key
    out = result["out_dir"]
    saved = json.loads(open(f"{out}/saturation.json").read())
    assert [r["mode"]["name"] for r in saved["runs"]] == [m.name for m in MODES]
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
    assert tanh["first_layer_grad_norm"][STEPS - 1] < 1e-6 * max(tanh["first_layer_grad_norm"][:STEPS])
    assert tanh["mse_to_target"][-1] > 0.5  # stuck at the old bound when the target moves to 0


def test_linear_reaches_the_bound_and_stays_trainable(result):
    linear = runs(result)["linear_mse"]["records"]
    assert linear["output_mean"][STEPS - 1] == pytest.approx(1.0, abs=0.05)
    assert linear["hidden_max_abs"][STEPS - 1] < 100
    assert linear["mse_to_target"][-1] < 0.2 * linear["mse_to_target"][STEPS]


def test_cross_entropy_keeps_a_gradient_when_the_target_moves(result):
    ce = runs(result)["tanh_ce"]["records"]
    assert ce["mse_to_target"][-1] < 0.5 * ce["mse_to_target"][STEPS]


def test_run_mode_checks_the_loss_and_the_optimiser():
    model = compose("config", SMALL).model
    with pytest.raises(ConfigError, match="cross"):
        run_mode(model, SaturationMode("x", "linear_direct", "cross_entropy"), OptimiserSpec("adam", 1e-3),
                 steps=2, recovery_steps=0, recovery_target=0.0, batch_size=1, input_std=0.3, seed=0)
    with pytest.raises(ConfigError, match="unknown optimiser"):
        run_mode(model, SaturationMode("x", "linear_direct"), OptimiserSpec("rmsprop", 1e-3),
                 steps=2, recovery_steps=0, recovery_target=0.0, batch_size=1, input_std=0.3, seed=0)


def test_command_line_dispatch(tmp_path):
    code = cli_main(["compare", "experiment=saturation", *SMALL[1:], "saturation.steps=3",
                     "saturation.recovery_steps=1", "saturation.optimisers=[{name:sgd,lr:0.01}]",
                     "saturation.modes=[{name:lin,output:linear_direct}]", "saturation.progress=false",
                     f"saturation.out_dir={tmp_path}"])
    assert code == 0
    assert (tmp_path / "saturation_sgd.png").is_file() and (tmp_path / "saturation.md").is_file()


def test_outputs_are_guarded_and_names_must_be_distinct(tmp_path):
    model = compose("config", SMALL).model
    lin = SaturationMode("lin", "linear_direct")
    kwargs = dict(steps=2, batch_size=1, progress=False)
    with pytest.raises(ConfigError, match="names must be distinct"):
        run_saturation(model, [lin, lin], [OptimiserSpec("sgd", 1e-2)], tmp_path, **kwargs)
    with pytest.raises(ConfigError, match="names must be distinct"):
        run_saturation(model, [lin], [OptimiserSpec("sgd", 1e-2), OptimiserSpec("sgd", 1e-3)], tmp_path, **kwargs)
    run_saturation(model, [lin], [OptimiserSpec("sgd", 1e-2)], tmp_path / "ours", **kwargs)
    run_saturation(model, [lin], [OptimiserSpec("sgd", 1e-2)], tmp_path / "ours", **kwargs)  # ours: replaced
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "saturation.md").write_text("my notes")
    with pytest.raises(ConfigError, match="not written by"):
        run_saturation(model, [lin], [OptimiserSpec("sgd", 1e-2)], tmp_path / "foreign", **kwargs)
    assert (tmp_path / "foreign" / "saturation.md").read_text() == "my notes"


def test_command_line_restores_the_thread_count(tmp_path):
    before = torch.get_num_threads()
    code = cli_main(["compare", "experiment=saturation", *SMALL[1:], "saturation.steps=2",
                     "saturation.recovery_steps=0", "saturation.optimisers=[{name:sgd,lr:0.01}]",
                     "saturation.modes=[{name:lin,output:linear_direct}]", "saturation.progress=false",
                     f"saturation.threads={before + 1}", f"saturation.out_dir={tmp_path}"])
    assert code == 0 and torch.get_num_threads() == before
