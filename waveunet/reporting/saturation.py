"""The saturation experiment's ``saturation.md``, rendered from what ``saturation.json`` holds."""

from __future__ import annotations

from typing import Any

from .format import machine_text, number, table


def _g(value: float | None) -> str:
    """Saturation values span decades: three significant digits."""
    return number(value, 3, kind="g")


RECORD_COLUMNS = ("loss", "mse_to_target", "output_mean", "pre_activation_mean_abs",
                  "pre_activation_max_abs", "hidden_max_abs", "first_layer_grad_norm")


def _phase_rows(run: dict[str, Any]) -> list[list[str]]:
    s = run["summary"]
    phases = [("1", s["first_step"]), (str(run["steps"]), s["end_of_bound_phase"])]
    if run["recovery_steps"]:
        phases += [(f"{run['steps'] + 1} (recovery starts)", s["start_of_recovery"]),
                   (str(run["steps"] + run["recovery_steps"]), s["end_of_recovery"])]
    return [[run["mode"]["name"], run["mode"]["loss"], step, *(_g(v[k]) for k in RECORD_COLUMNS)]
            for step, v in phases]


def saturation_markdown(result: dict[str, Any]) -> str:
    """``saturation.md``: per optimiser, its figure, the phases of every mode, and the trends."""
    lines = ["# Saturation experiment: every target at the bound (1.0)", "",
             f"Command: `{result['command']}`", "",
             f"Model `{result['model']['name']}` ({number(result['parameters'], 0, grouping=True)} "
             "parameters), random "
             f"inputs N(0, {result['input_std']}^2), batch {result['batch_size']}, seed "
             f"{result['seed']}, {result['steps']} steps at target 1.0, then "
             f"{result['recovery_steps']} steps at target {result['recovery_target']} (recovery). "
             f"Machine: {machine_text(result['machine'])}, device {result['device']} "
             f"({result['precision']}); wall time {number(result['wall_s'], 0)} s.", ""]
    for opt in result["optimisers"]:
        runs = [r for r in result["runs"] if r["optimiser"]["name"] == opt["name"]]
        lines += [f"## {opt['name']} (lr {number(opt['lr'], 6, kind='g')})", "",
                  f"![{opt['name']}]({result['figures'][opt['name']]})", ""]
        lines += table(["mode", "loss", "step", "loss value", "MSE to target", "mean output",
                        "mean \\|a\\|", "max \\|a\\|", "max \\|hidden\\|",
                        "first-layer grad norm"],
                       [row for run in runs for row in _phase_rows(run)])
        lines.append("")
        lines += table(["mode", "max \\|a\\| growth over the 2nd half of the bound phase",
                        "first-layer grad, end / start of the bound phase",
                        "recovery: MSE end / start"],
                       [[r["mode"]["name"],
                         f"{_g(r['summary']['pre_activation_growth_second_half'])}x",
                         _g(r["summary"]["first_layer_grad_ratio_end_to_start"]),
                         _g(r["summary"].get("recovery_mse_ratio"))] for r in runs])
        lines.append("")
    return "\n".join(lines)
