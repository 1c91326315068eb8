"""The command line: --version, python -m, help with examples, Hydra's flags for every key=value
command through the compose API (no run folders, one-line errors, exit 2), no shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from waveunet import __version__
from waveunet.cli import COMMANDS
from waveunet.cli import main as cli_main
from waveunet.settings.compose import compose

REPO = Path(__file__).resolve().parents[1]
# The commands that take key=value overrides, and the config each composes.
HYDRA_COMMANDS = {"evaluate": "evaluate", "compare": "compare", "saturation": "saturation",
                  "info": "config", "train": "train"}


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_version_and_python_dash_m(tmp_path: Path, capsys) -> None:
    """``python -m waveunet`` and ``python -m waveunet.cli`` are the command (neither loads
    torch for these answers, so the subprocesses cost little)."""
    for args in (["-m", "waveunet", "--version"], ["-m", "waveunet.cli", "-V"]):
        proc = run(*args, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout.strip() == f"waveunet {__version__}", proc
    assert cli_main(["info", "model=m4"]) == 0
    assert '"parameters": 10263390' in capsys.readouterr().out
    proc = run("-m", "waveunet", "nonsense", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown command 'nonsense'" in proc.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_commands_help_shows_examples(command: str, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = cli_main([command, "--help"])
    except SystemExit as exc:  # the argparse commands' --help
        code = exc.code
    assert code == 0
    out = capsys.readouterr().out
    examples = [line for line in out.splitlines()
                if line.strip().startswith(f"waveunet {command} ")]
    assert len(examples) >= 2, out
    assert list(tmp_path.iterdir()) == []  # help writes nothing


def test_train_help_puts_the_commonest_runs_above_hydras_part(capsys) -> None:
    assert cli_main(["train", "--help", "model=m4"]) == 0
    out = capsys.readouterr().out
    usage, hydra_part = out.split("== Configuration groups ==")
    runs = [line for line in usage.splitlines() if line.startswith("  waveunet train ")]
    assert runs[0].split("#")[0].split() == ["waveunet", "train", "experiment=demo"]
    assert len(runs) == 3 and "data.root" in usage  # the default data needs a root
    assert "model: m1, m2, m3, m4, m5, m5_highsr, m6, tiny (now: m4)" in hydra_part
    config = yaml.safe_load(hydra_part.split("== Config ==")[1].split("Powered by Hydra")[0]
                            .split("\n", 2)[2])
    assert config["model"]["name"] == "m4" and config["data"]["name"] == "musdb"


def test_a_bare_preset_name_gets_did_you_mean(capsys) -> None:
    assert cli_main(["info", "m4"]) == 2
    assert capsys.readouterr().err.strip() == (
        "waveunet info: error: 'm4' is not a key=value override; did you mean model=m4?")
    assert cli_main(["train", "linear_direct"]) == 2
    assert "did you mean output=linear_direct?" in capsys.readouterr().err
    assert cli_main(["evaluate", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "'bogus' is not a key=value override" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["evaluate", "compare", "saturation", "info"])
def test_cfg_job_prints_the_composed_config_and_creates_nothing(
        command: str, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = {"evaluate": ["estimates=sep", "data=musdb_hq", "data.root=/d"],
                 "compare": ["experiment=compare_quick"], "saturation": ["saturation.steps=7"],
                 "info": ["model=m6"]}[command]
    assert cli_main([command, "--cfg", "job", *overrides]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = OmegaConf.to_container(compose(HYDRA_COMMANDS[command], overrides))
    assert printed == expected
    package = "data" if command == "evaluate" else "model"
    assert cli_main([command, "--cfg", "job", "--resolve", "-p", package, *overrides]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == OmegaConf.to_container(
        compose(HYDRA_COMMANDS[command], overrides)[package], resolve=True)
    assert cli_main([command, "--cfg", "job", "-p", "nope", *overrides]) == 2
    assert capsys.readouterr().err.strip() == (
        f"waveunet {command}: error: --package nope: no such key in the composed config")
    assert cli_main([command, "--cfg", "hydra", *overrides]) == 0
    assert "hydra" in yaml.safe_load(capsys.readouterr().out)
    assert list(tmp_path.iterdir()) == []  # no run folder, no outputs


@pytest.mark.parametrize("command", ["evaluate", "compare", "saturation", "info"])
def test_help_is_hydras_style_through_the_compose_api(command, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert cli_main([command, "--help"]) == 0
    out = capsys.readouterr().out
    head, rest = out.split("== Configuration groups ==")
    assert head.startswith(f"usage: waveunet {command}")
    groups, config = rest.split("== Config ==")
    assert "(now: " in groups
    assert yaml.safe_load(config.split("Powered by Hydra")[0].split("\n", 3)[3]) == (
        OmegaConf.to_container(compose(HYDRA_COMMANDS[command])))
    assert cli_main([command, "--hydra-help"]) == 0
    assert "--cfg,-c job|hydra|all" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--cfg"], ["--cfg", "jobs"], ["--frobnicate"],
                                  ["model.levels=x"], ["--package", "model"]])
@pytest.mark.parametrize("command", ["evaluate", "info", "saturation"])
def test_flag_errors_are_one_line_with_exit_2(command, args, capsys) -> None:
    assert cli_main([command, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"waveunet {command}: error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("command", sorted(HYDRA_COMMANDS))
def test_shell_completion_is_not_offered(command: str, capsys, monkeypatch, tmp_path) -> None:
    """Hydra's installed helper called `waveunet -sc` and failed; every command now refuses
    to install it, in one line, and its help does not offer it."""
    monkeypatch.chdir(tmp_path)
    for flag in ("--shell-completion", "-sc"):
        assert cli_main([command, flag, "install=bash"]) == 2
        err = capsys.readouterr().err
        assert "shell completion is not offered" in err and err.count("\n") == 1
    assert cli_main([command, "--hydra-help"]) == 0
    assert "--shell-completion" not in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
