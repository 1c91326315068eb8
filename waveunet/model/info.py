"""``waveunet info [overrides]``: a preset's shapes and parameter count as one JSON object."""

from __future__ import annotations

import json

from omegaconf import DictConfig

from ..settings.flags import run_command
from .network import build_model

HELP = """usage: waveunet info [key=value overrides] [--help | --cfg job]

Prints one JSON object describing the composed model: its sample rate, channels, sources,
output head, input and output samples of one chunk, and parameter count.

  waveunet info model=m4
  waveunet info model=m5_highsr output=linear_direct model.output_samples=44100
  waveunet info model=tiny --cfg job"""


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
    def run(cfg: DictConfig, overrides: list[str]) -> int:
        print(json.dumps(model_info(cfg)))
        return 0

    return run_command("info", HELP, "config", argv, run)
