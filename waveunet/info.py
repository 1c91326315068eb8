"""``waveunet info [overrides]``: a preset's shapes and parameter count as one JSON object."""

from __future__ import annotations

import json

from .config import compose
from .model import build_model

HELP = """usage: waveunet info [hydra overrides]

Prints one JSON object describing the composed model, e.g.
  waveunet info model=m4
  waveunet info model=m5_highsr output=linear_direct model.output_samples=44100
"""


def model_info(cfg) -> dict:
    model = build_model(cfg.model, cfg.output)
    return {
        "preset": cfg.model.get("name", "custom"),
        "sample_rate": model.sample_rate_hz,
        "channels": model.config.channels,
        "sources": list(model.sources),
        "output_type": model.output_mode.type,
        "output_activation": model.output_mode.activation,
        "input_samples": model.input_samples,
        "output_samples": model.output_samples,
        "parameters": model.num_parameters(),
    }


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    print(json.dumps(model_info(compose("config", argv))))
    return 0
