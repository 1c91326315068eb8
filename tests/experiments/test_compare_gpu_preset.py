"""The GPU-scale comparison preset stays valid: composed and run on the CPU with tiny overrides.

The real run (M5-HighSR, bf16, 3 seeds) needs a lent GPU; this only keeps the preset composable
and runnable end to end, so a GPU session spends its minutes on the experiment, not on the config.
"""

from __future__ import annotations

import json

from helpers import tiny_training_overrides

from waveunet.experiments.compare import JSON_NAME, compare
from waveunet.settings.compose import compose


def test_compare_gpu_preset_composes_with_the_paper_model():
    cfg = compose("compare", ["experiment=compare_gpu"])
    assert cfg.model.name == "m5_highsr" and cfg.model.upsampling == "learned"
    assert cfg.trainer.precision == "bf16" and cfg.optim.batch_size == 16
    assert [m.name for m in cfg.compare.modes] == ["tanh_difference", "linear_direct"]
    assert list(cfg.compare.seeds) == [0, 1, 2]
    assert cfg.trainer.steps_per_epoch * cfg.trainer.max_epochs == 3000


def test_compare_gpu_preset_runs_with_tiny_overrides(tmp_path):
    args = [
        "experiment=compare_gpu",
        "model=tiny",
        *tiny_training_overrides(tmp_path / "cache"),
        "data.workers=0",
        "trainer.device=cpu",
        "trainer.steps_per_epoch=2",
        "trainer.max_epochs=1",
        "compare.seeds=[0]",
        "compare.eval.device=cpu",
        "compare.eval.sample_rate_hz=null",
        "compare.figure.passage_seconds=0.5",
        "compare.progress=false",
        "compare.threads=1",
        "compare.eval.figures=false",
        f"compare.out_dir={tmp_path / 'out'}",
    ]
    compare(compose("compare", args), args)
    result = json.loads((tmp_path / "out" / JSON_NAME).read_text())
    runs = {run["mode"]: run for run in result["runs"]}
    assert sorted(runs) == ["linear_direct", "tanh_difference"]
    for run in runs.values():  # trained (bf16 autocast on the CPU) and evaluated
        assert run["status"] == "finished" and run["global_step"] == 2 and run["evaluated"]
        assert set(run["scores"]) == {"accompaniment", "vocals"}
    # the two runs differ in the head only
    assert set(result["config_differences"]) == {"name", "output.activation", "output.type"}
