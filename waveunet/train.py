"""``waveunet train [hydra overrides]``: the Hydra app around :class:`waveunet.solver.Solver`.

Examples::

    waveunet train experiment=demo
    waveunet train model=m5_highsr output=linear_direct data=musdb_hq data.root=/data/musdb18hq
    waveunet train -m output=tanh_difference,linear_direct seed=1,2,3       # Hydra multirun
    torchrun --nproc_per_node=4 scripts/train.py model=m5_highsr trainer.precision=bf16
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import compose, config_dir
from .errors import ConfigError, WaveUNetError
from .files import atomic_write_text
from .metrics import dumps_json
from .solver import DistInfo, Solver, resume_mode

log = logging.getLogger("waveunet.train")

USAGE = """usage: waveunet train [key=value overrides] [Hydra flags: -m, --cfg job, ...]

Train a Wave-U-Net. Every run writes runs/<name>/<timestamp>/: the resolved config, best.pt and
last.pt, TensorBoard logs, metrics.jsonl, train.log and summary.json. The default dataset is
MUSDB18 (data=musdb), which needs data.root=DIR (or $MUSDB_PATH); experiment=demo needs nothing.

The commonest runs:
  waveunet train experiment=demo                              # tiny model, generated data, CPU
  waveunet train data=musdb_hq data.root=/data/musdb18hq       # the M5-HighSR recipe
  waveunet train model=m4 output=linear_direct data=musdb data.root=/data/musdb18 \\
      trainer.precision=bf16                                  # M4 with linear outputs, on a GPU

Continue a killed run: trainer.resume=runs/<name>/<timestamp> (or trainer.resume=true).
Sweeps: waveunet train -m output=tanh_difference,linear_direct seed=1,2,3"""

HYDRA_FLAGS = """== Flags (Hydra's, for waveunet train) ==
--help,-h : the commonest runs, the config groups and the composed config
--hydra-help : these flags
--cfg,-c job|hydra|all : print the composed config (job), Hydra's node (hydra) or both, and exit
--resolve : resolve interpolations in what --cfg prints
--package,-p PACKAGE : print only this part of the config (e.g. -p trainer)
--multirun,-m : a sweep: one run per combination of comma-separated values
--info,-i [all|config|defaults|defaults-tree|plugins|searchpath] : Hydra's information
--config-dir,-cd DIR : another folder of configs added to the search path
Overrides: key=value (trainer.max_epochs=3), group=option (model=m4), +key=value, ~key.
Shell completion is not offered."""

# Hydra's flags that take a value (the next word is not an override).
_VALUE_FLAGS = ("-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn",
                "--config-name", "-cd", "--config-dir", "--experimental-rerun")
_INFO_VALUES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def run_dir_for(runs_root: str, name: str, resume) -> str:
    """Where a run writes: a new timestamped folder, or the run being resumed.

    ``resume`` false: ``<runs_root>/<name>/<timestamp>``; true: the newest run of
    that name that has a ``last.pt`` (a new folder if there is none); a path: that
    run directory.
    """
    mode = resume_mode(resume)
    if mode == "latest":
        base = Path(runs_root) / name
        candidates = sorted(p.parent for p in base.glob("*/last.pt")) if base.is_dir() else []
        if candidates:
            return str(candidates[-1])
    elif mode is not None:
        return str(mode)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    path = Path(runs_root) / name / stamp
    suffix = 1
    while path.exists():  # two runs started in the same second
        path = Path(runs_root) / name / f"{stamp}_{suffix}"
        suffix += 1
    return str(path)


if not OmegaConf.has_resolver("waveunet_run_dir"):
    OmegaConf.register_new_resolver("waveunet_run_dir", run_dir_for, use_cache=True)


def run(cfg: DictConfig) -> dict:
    """Train with a composed config; the run directory is Hydra's output directory."""

    info = DistInfo.from_env()
    if info.enabled:
        _init_distributed(cfg, info)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if info.enabled:
        import torch.distributed as dist

        shared = [str(run_dir)]
        dist.broadcast_object_list(shared, src=0)  # rank 0's folder holds everything
        run_dir = Path(shared[0])
    try:
        solver = Solver(cfg, run_dir)
        summary = solver.train()
    finally:
        if info.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()
    if info.is_main:
        best = summary["best_checkpoint"]
        log.info("done: %d epochs, best validation loss %s at epoch %s", summary["epochs"],
                 summary["best_valid_loss"], summary["best_epoch"])
        print(
            f"\nRun directory: {run_dir}\n"
            f"  best checkpoint: {best}\n"
            f"  TensorBoard:     tensorboard --logdir {summary['tensorboard']}\n"
            f"  separate a song: waveunet separate SONG.wav -c {best} -o separated\n"
            f"  evaluate:        waveunet evaluate checkpoint={best}"
        )
        atomic_write_text(run_dir / "summary.json", dumps_json(summary))
    return summary


def _init_distributed(cfg: DictConfig, info) -> None:
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() and str(cfg.trainer.device) != "cpu" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    # Rank 0 validates while the others wait: allow a long validation (MUSDB at 44.1 kHz).
    dist.init_process_group(backend=backend, timeout=_dt.timedelta(hours=2))


@hydra.main(config_path=str(config_dir()), config_name="train", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except WaveUNetError as exc:
        # SystemExit passes through Hydra's handler: one clear line, exit 2.
        print(f"waveunet train: error: {exc}", file=sys.stderr)
        sys.exit(2)


def check_argv(argv: list[str]) -> None:
    """What Hydra would misread: a bare word ("did you mean model=m4?"), or shell completion,
    which is not offered (:mod:`waveunet.hydra_flags`)."""
    from .hydra_flags import COMPLETION, NO_COMPLETION, not_an_override

    previous = None
    for arg in argv:
        if arg in COMPLETION:
            raise ConfigError(NO_COMPLETION)
        takes_value = previous in _VALUE_FLAGS or (previous == "--info" and arg in _INFO_VALUES)
        if not arg.startswith("-") and "=" not in arg and not takes_value:
            raise not_an_override(arg, "train")
        previous = arg


def main(argv: list[str]) -> int:
    """Entry point for ``waveunet train``: hands the overrides to Hydra (``--help`` is ours:
    the commonest runs above Hydra's part)."""
    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        from .hydra_flags import Flags, help_text

        overrides = [a for a in argv if "=" in a and not a.startswith("-")]
        print(help_text(USAGE, "train", Flags(help=True, overrides=overrides),
                        lambda o: compose("train", o)))
        return 0
    if "--hydra-help" in argv:
        print(HYDRA_FLAGS)
        return 0
    check_argv(argv)
    if int(os.environ.get("RANK", 0)) > 0:
        # Only rank 0 writes the run folder and Hydra's logs.
        argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra.run.dir=."]
    sys.argv = ["waveunet train", *argv]
    hydra_main()
    return 0
