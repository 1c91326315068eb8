"""The round trip of README: ``waveunet separate DATA/test/*/mixture.wav -c CKPT -o OUT`` then
``waveunet evaluate estimates=OUT/<model name> data=... data.root=DATA`` scores what
``waveunet evaluate checkpoint=CKPT`` scores, with no renaming in between."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from waveunet.cli import main as cli_main
from waveunet.data.synth import generate_dataset
from waveunet.evaluation.evaluate import evaluate
from waveunet.model.checkpoint import save_checkpoint
from waveunet.model.network import build_model
from waveunet.settings.compose import compose


def test_separate_then_evaluate_estimates_equals_evaluate_checkpoint(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path / "data", tracks=1, seconds=2.0, seed=7, test_tracks=2)
    torch.manual_seed(0)
    cfg = compose("config", ["model=tiny"])
    model = build_model(cfg.model, cfg.output)
    run = tmp_path / "runs" / "tiny-tanh_difference" / "stamp"
    checkpoint = save_checkpoint(run / "best.pt", model, config={"name": "tiny-tanh_difference"})
    mixtures = sorted(data.glob("test/*/mixture.wav"))
    assert len(mixtures) == 2
    out = tmp_path / "separated"
    assert cli_main(["separate", *map(str, mixtures), "-c", str(checkpoint), "-o", str(out),
                     "-q", "--bits", "32f"]) == 0
    common = ["data=musdb_hq", f"data.root={data}", f"data.cache_dir={tmp_path / 'cache'}",
              "progress=false"]
    from_disk = evaluate(compose("evaluate", [*common, f"estimates={out / 'tiny-tanh_difference'}",
                                              f"out_dir={tmp_path / 'eval-estimates'}"]))
    direct = evaluate(compose("evaluate", [*common, f"checkpoint={checkpoint}",
                                           f"out_dir={tmp_path / 'eval-checkpoint'}"]))
    names = [t["name"] for t in direct["tracks"]]
    assert names == [t["name"] for t in from_disk["tracks"]] == [m.parent.name for m in mixtures]
    for a, b in zip(direct["tracks"], from_disk["tracks"], strict=True):
        for source in ("accompaniment", "vocals"):
            ours = np.array(a["metrics"]["SDR"][source]["frames"], float)
            theirs = np.array(b["metrics"]["SDR"][source]["frames"], float)
            assert ours.size == theirs.size > 0
            np.testing.assert_allclose(theirs, ours, atol=1e-6)  # 0.0 here: the same numbers
