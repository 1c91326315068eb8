"""waveunet evaluate when things go wrong or meet: a full disk under the report, two evaluations
into one out_dir, progress=false, Ctrl-C during museval."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from waveunet.audio import write_audio
from waveunet.cli import main as cli_main

RATE = 44100


@pytest.fixture(scope="module")
def voice_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder dataset of 2 test tracks of 1.2 s: vocals, accompaniment and their mixture."""
    root = tmp_path_factory.mktemp("voice") / "dataset"
    rng = np.random.default_rng(11)
    n = int(1.2 * RATE)
    t = np.arange(n) / RATE
    for k, name in enumerate(["song_a", "song_b"]):
        vocals = np.stack([0.3 * np.sin(2 * np.pi * (300 + 40 * k) * t + c) for c in (0, 0.4)])
        accompaniment = 0.2 * rng.standard_normal((2, n))
        for stem, audio in (("vocals", vocals), ("accompaniment", accompaniment),
                            ("mixture", vocals + accompaniment)):
            write_audio(root / "test" / name / f"{stem}.wav", audio.astype(np.float32), RATE,
                        subtype="FLOAT")
    (root / "train").mkdir()
    return root


@pytest.fixture(scope="module")
def estimates(voice_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every source estimated as the mixture, in `waveunet separate`'s layout."""
    out = tmp_path_factory.mktemp("estimates")
    for track in sorted((voice_root / "test").iterdir()):
        (out / track.name).mkdir()
        for source in ("vocals", "accompaniment"):
            shutil.copy(track / "mixture.wav", out / track.name / f"{source}.wav")
    return out


def evaluate_args(voice_root: Path, estimates: Path, cache: Path, out_dir: Path,
                  *extra: str) -> list[str]:
    return ["evaluate", f"estimates={estimates}", "data=folder", f"data.root={voice_root}",
            "data.stems=[vocals,accompaniment]", f"data.cache_dir={cache}",
            f"out_dir={out_dir}", "progress=false", *extra]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# progress=false
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("progress", [False, True])
def test_progress_setting_reaches_the_decoding_bar(voice_root, estimates, tmp_path, capsys,
                                                    progress: bool) -> None:
    # a fresh cache: every track is decoded
    args = evaluate_args(voice_root, estimates, tmp_path / "cache", tmp_path / "report",
                         f"progress={str(progress).lower()}")
    assert cli_main(args) == 0
    err = capsys.readouterr().err
    assert ("decoding" in err) is progress, err
