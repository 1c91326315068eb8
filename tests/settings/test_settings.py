"""Typed settings: registered schemas, one-line errors that name the setting, one rule for
"same run", and one home for evaluation settings."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from waveunet.cli import main as cli_main
from waveunet.errors import ConfigError
from waveunet.settings.compose import compose, meaning_changes
from waveunet.settings.schema import (
    CompareConfig,
    EvalConfig,
    EvaluateConfig,
    ModelConfig,
    TrainerConfig,
    typed,
)


def test_composed_configs_are_typed_by_the_registered_schemas():
    train = compose("train", ["experiment=demo"])
    assert OmegaConf.get_type(train.trainer) is TrainerConfig
    assert OmegaConf.get_type(train.model) is ModelConfig
    assert OmegaConf.get_type(compose("evaluate", [])) is EvaluateConfig
    cmp = compose("compare", ["experiment=compare_quick"])
    assert OmegaConf.get_type(cmp.compare) is CompareConfig
    assert OmegaConf.get_type(cmp.compare.eval) is EvalConfig


def test_compare_scores_with_evaluates_settings():
    """compare.eval is configs/eval/default.yaml, the block evaluate composes at its top level."""
    evaluate = compose("evaluate", [])
    shared = compose("compare", []).compare.eval
    assert set(shared) == {f.name for f in __import__("dataclasses").fields(EvalConfig)}
    assert {k: shared[k] for k in shared} == {k: evaluate[k] for k in shared}
    assert shared.sample_rate_hz == 44100  # the papers' protocol: MUSDB18's native rate
    # a preset may still choose otherwise for its comparison
    assert compose("compare", ["experiment=compare_quick"]).compare.eval.sample_rate_hz is None


@pytest.mark.parametrize(
    "config,overrides,named",
    [
        ("train", ["trainer.max_epochs=abc"], "trainer.max_epochs"),
        ("train", ["trainer.validation.batch_size=x"], "trainer.validation.batch_size"),
        ("train", ["model.levelz=3"], "model.levelz"),
        ("train", ["optim.foo=1"], "optim.foo"),
        ("evaluate", ["waveform_seconds=abc"], "waveform_seconds"),
        ("compare", ["compare.eval.max_tracks=x"], "compare.eval.max_tracks"),
        ("compare", ["compare.threads=many"], "compare.threads"),
        ("saturation", ["saturation.steps=x"], "saturation.steps"),
    ],
)
def test_wrong_types_and_unknown_keys_fail_while_composing(config, overrides, named):
    with pytest.raises(ConfigError) as error:
        compose(config, overrides)
    message = str(error.value)
    assert named in message and "\n" not in message, message


@pytest.mark.parametrize(
    "schema,values,prefix,expected",
    [
        (TrainerConfig, {"max_epochs": 0}, "trainer.", "trainer.max_epochs must be null or an "
                                                      "integer >= 1, got 0"),
        (TrainerConfig, {"divergence": {"policy": "retry"}}, "trainer.",
         "trainer.divergence.policy: unknown 'retry' (choose from stop, rollback)"),
        (TrainerConfig, {"device": "tpu"}, "trainer.", "trainer.device: unknown 'tpu'"),
        (EvalConfig, {"memory_gib": 0}, "compare.eval.", "compare.eval.memory_gib must be null "
                                                         "or a finite number > 0, got 0"),
        (EvalConfig, {"split": "dev"}, "", "split: unknown 'dev'"),
        (ModelConfig, {"up_kernel": 4}, "model.", "model.up_kernel must be odd"),
    ],
)
def test_ranges_and_choices_are_checked_in_one_place(schema, values, prefix, expected):
    composed = {TrainerConfig: compose("train", []).trainer,
                EvalConfig: compose("compare", []).compare.eval}.get(schema, {})
    node = OmegaConf.merge(composed, values)
    with pytest.raises(ConfigError) as error:
        typed(schema, node, prefix)
    assert str(error.value).startswith(expected), str(error.value)


def test_plain_dicts_are_checked_like_composed_configs():
    model = typed(ModelConfig, {"levels": 3, "sources": ["a", "b"]}, "model.")
    assert model.levels == 3 and model.sources == ("a", "b") and model.down_kernel == 15
    with pytest.raises(ConfigError, match="unknown setting 'model.level'"):
        typed(ModelConfig, {"level": 3}, "model.")
    with pytest.raises(ConfigError, match=r"trainer\.precision is missing"):
        typed(TrainerConfig, {"device": "cpu"}, "trainer.")


def test_bad_settings_exit_2_with_one_line(capsys):
    assert cli_main(["info", "model.levels=abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("waveunet info: error: model.levels") and "\n" not in err
    assert cli_main(["evaluate", "estimates=.", "waveform_seconds=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "waveform_seconds must be a finite number > 0" in err and "\n" not in err


def test_meaning_changes_is_one_rule_with_an_allowed_list():
    saved = {"trainer": {"max_epochs": 10, "progress": True, "device": "cpu"},
             "optim": {"lr": 1e-3}, "data": {"workers": 2}}
    now = {"trainer": {"max_epochs": 20, "progress": False, "device": "cuda"},
           "optim": {"lr": 1e-3}, "data": {"workers": 8}}
    assert meaning_changes(saved, now) == ["data.workers", "trainer.device", "trainer.max_epochs",
                                           "trainer.progress"]
    allowed = ("trainer.max_epochs", "trainer.progress", "trainer.device", "data.workers")
    assert meaning_changes(saved, now, allowed) == []
    assert meaning_changes(saved, {**now, "optim": {"lr": 1e-2}}, allowed) == ["optim.lr"]
    assert meaning_changes({"a": {"b": 1}}, {"a": {}}, ("a.c",)) == ["a.b"]  # a key gone counts
