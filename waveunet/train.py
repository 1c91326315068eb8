"""``waveunet train [hydra overrides]``: the Hydra app around :class:`waveunet.solver.Solver`.

Examples::

    waveunet train experiment=demo
    waveunet train model=m5_highsr output=linear_direct data=musdb_hq data.root=/data/musdb18hq
    waveunet train -m output=tanh_difference,linear_direct seed=1,2,3       # Hydra multirun
    torchrun --nproc_per_node=4 scripts/train.py model=m5_highsr trainer.precision=bf16

A run that cannot start leaves nothing behind. For a single run, :func:`main` composes the
config and builds the whole run (settings checked, data decoded and checked, a resumed run's
checkpoint and config checked and its folder locked) *before* Hydra makes the run folder and
writes ``.hydra/``; a resumed run's recorded ``.hydra/config.yaml`` is never rewritten, and a
folder given for a new run (``hydra.run.dir=``) that already holds a run is refused. Every
error is one line with exit 2, composition errors (an unknown key or preset) included. A
multirun checks the composition and settings of every job first; each job then builds its
run in the folder Hydra made for it. Hydra's own flags (``--cfg``, ``--help``, ...) go
straight to Hydra.
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .builder import on_device_settings, run_settings
from .cli import report_stop
from .config import compose, config_dir
from .errors import ConfigError, WaveUNetError, space_checked
from .files import atomic_write_text
from .metrics import dumps_json
from .run_folder import check_new_run_dir, claim_new_run_dir, resume_mode, run_dir_for
from .solver import DistInfo, Solver

log = logging.getLogger("waveunet.train")

USAGE = """usage: waveunet train [key=value overrides] [Hydra flags: -m, --cfg job, ...]

Train a Wave-U-Net. Every run writes runs/<name>/<timestamp>/: the resolved config, best.pt and
last.pt, TensorBoard logs, metrics.jsonl, train.log and summary.json. The default dataset is
MUSDB18 (data=musdb), which needs data.root=DIR (or $MUSDB_PATH); experiment=demo needs nothing.

The commonest runs:
  waveunet train experiment=demo                              # tiny model, generated data, CPU
  waveunet train data=musdb_hq_ccmixter data.root=/data/musdb18hq \\
      data.ccmixter_root=/data/ccmixter                       # M5-HighSR recipe, the paper's data
  waveunet train model=m4 output=linear_direct data=musdb data.root=/data/musdb18 \\
      trainer.precision=bf16                                  # M4 with linear outputs, on a GPU

Continue a killed run: trainer.resume=runs/<name>/<timestamp> (or trainer.resume=true; not
with -m).
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



if not OmegaConf.has_resolver("waveunet_run_dir"):
    OmegaConf.register_new_resolver("waveunet_run_dir", run_dir_for, use_cache=True)

# The single run main() built before Hydra made its folder, for hydra_main() to train.
_PREPARED: dict[str, Any] = {}
# Hydra's console and log-file format (hydra/job_logging/default.yaml), for the lines logged
# while the run is built, before Hydra has configured logging.
_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
_RUN_FLAGS = ("-m", "--multirun", "-r", "--run")


def run(cfg: DictConfig) -> dict:
    """Train the prepared run (or, in a multirun job, build and train one in the folder Hydra
    made); write ``summary.json`` and print where everything is."""
    info = DistInfo.from_env()
    _EarlyLog.replay_into_log_file()
    # A full disk is reported once by the run, not again by every line the log file loses.
    logging.raiseExceptions = False
    solver, own_group = _PREPARED.pop("solver", None), False
    if solver is None:
        if info.enabled and not _distributed_ready():
            _init_distributed(cfg, info)
            own_group = True
        solver = Solver(cfg, _shared_run_dir(Path(HydraConfig.get().runtime.output_dir), info))
    try:
        summary = solver.train()
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    run_dir = solver.run_dir
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
        with space_checked(run_dir / "summary.json"):
            atomic_write_text(run_dir / "summary.json", dumps_json(summary))
    return summary


def _distributed_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _init_distributed(cfg: DictConfig, info) -> None:
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() and str(cfg.trainer.device) != "cpu" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    # Rank 0 validates while the others wait: allow a long validation (MUSDB at 44.1 kHz).
    dist.init_process_group(backend=backend, timeout=_dt.timedelta(hours=2))


def _shared_run_dir(run_dir: Path, info) -> Path:
    """Rank 0's run folder in every process (it alone writes there)."""
    if not info.enabled:
        return run_dir
    import torch.distributed as dist

    shared = [str(run_dir)]
    dist.broadcast_object_list(shared, src=0)
    return Path(shared[0])


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


# --------------------------------------------------------------------------------------------
# Before Hydra: compose, check and build
# --------------------------------------------------------------------------------------------


def prepare(overrides: list[str], info: DistInfo) -> list[str]:
    """Compose and build the single run of ``overrides`` before anything is written; returns
    the Hydra overrides that make Hydra's output folder the run's folder."""
    cfg = compose("train", overrides)
    settings = run_settings(cfg, info.world_size)
    given = _given_run_dir(overrides)  # rank > 0: "." (main() adds it; nothing is written)
    if given and info.is_main and resume_mode(settings.trainer.resume) is None:
        check_new_run_dir(Path(given))  # before anything is built
    if info.enabled and not _distributed_ready():
        _init_distributed(cfg, info)
    run_dir = Path(given or run_dir_for(cfg.runs_root, cfg.name, settings.trainer.resume))
    solver = Solver(cfg, _shared_run_dir(run_dir, info))
    if solver.resumed_from is None:
        # Built and checked: now the new run's folder is made (another run started in the
        # same second may have taken the name meanwhile: then the next free one).
        claimed = None
        if info.is_main:
            if given:  # also where trainer.resume=true found no run to continue
                check_new_run_dir(Path(given))
            claimed = Path(given) if given else claim_new_run_dir(run_dir)
        solver.use_folder(_shared_run_dir(claimed, info))
    _PREPARED.update(solver=solver, run_dir=solver.run_dir)
    if info.rank > 0:  # main() already points Hydra at "." and writes nothing there
        return []
    extra = [] if given else [f"hydra.run.dir={_quoted(str(solver.run_dir))}"]
    if solver.resumed_from is not None:
        extra.append("hydra.output_subdir=null")  # keep the run's own .hydra/ as it is
    return extra


def check_sweep(overrides: list[str], info: DistInfo) -> None:
    """A multirun: compose every value of every swept key (the other keys at their first
    value) and check its settings, before Hydra starts the first job."""
    for variant in _sweep_variants(overrides):
        cfg = compose("train", variant)
        settings = run_settings(cfg, info.world_size)
        on_device_settings(cfg.data)
        resume = settings.trainer.resume
        if resume_mode(resume) is not None:
            # Each job trains in a new folder Hydra makes: nothing there to continue.
            shown = str(resume).lower() if isinstance(resume, bool) else resume
            raise ConfigError(
                f"trainer.resume={shown}: a multirun (-m) starts new runs and "
                "cannot continue one; continue each run on its own with waveunet train "
                "trainer.resume=runs/<name>/<timestamp> (no -m)")


def _sweep_variants(overrides: list[str]) -> Iterator[list[str]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    values: list[list[str]] = []
    for override, text in zip(parsed, overrides, strict=True):
        options = [text]
        if override.is_sweep_override():
            try:
                options = [f"{override.get_key_element()}={v}"
                           for v in override.sweep_string_iterator()]
            except Exception:  # a glob or interval sweep: left to Hydra and the job
                options = []
        values.append(options)
    yield [options[0] for options in values if options]  # a glob sweep's key left out
    for i, options in enumerate(values):
        for option in options[1:]:
            yield [option if j == i else other[0] for j, other in enumerate(values) if other]


def _given_run_dir(overrides: list[str]) -> str | None:
    """A ``hydra.run.dir=`` given on the command line (its value, unquoted)."""
    for o in overrides:
        if o.startswith("hydra.run.dir="):
            return o.split("=", 1)[1].strip().strip("'\"")
    return None


def _quoted(value: str) -> str:
    """A value for a Hydra override, quoted: any path goes through Hydra's parser unchanged."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _EarlyLog(logging.Handler):
    """The lines logged while the run is built (before Hydra configures logging): shown on
    the console as Hydra would, and written into the run's log file once it exists."""

    records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        _EarlyLog.records.append(record)

    @classmethod
    def start(cls) -> None:
        root = logging.getLogger()
        if root.handlers:  # logging is configured already (a test, an embedding program)
            return
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter(_LOG_FORMAT))
        root.addHandler(console)
        root.addHandler(cls())
        root.setLevel(logging.INFO)

    @classmethod
    def replay_into_log_file(cls) -> None:
        files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
        for record in cls.records:
            for handler in files:
                handler.handle(record)
        cls.records = []


def main(argv: list[str]) -> int:
    """Entry point for ``waveunet train``: checks and builds the run, then hands it to Hydra
    (``--help`` is ours: the commonest runs above Hydra's part)."""
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
    info = DistInfo.from_env()
    if info.rank > 0:
        # Only rank 0 writes the run folder and Hydra's logs.
        argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra.run.dir=."]
    flags = [a for a in argv if a.startswith("-")]
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        if all(f in _RUN_FLAGS for f in flags):  # not --cfg, --help, ...: Hydra's alone
            if any(f in ("-m", "--multirun") for f in flags):
                check_sweep(overrides, info)
            else:
                if info.is_main:
                    _EarlyLog.start()
                argv += prepare(overrides, info)
        sys.argv = ["waveunet train", *argv]
        hydra_main()
    except WaveUNetError as exc:
        print(f"waveunet train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM where the command turns it into one
        run_dir = _PREPARED.get("run_dir")
        resume = (f"; continue from its last checkpoint with trainer.resume={run_dir}"
                  if run_dir is not None and (Path(run_dir) / "last.pt").is_file() else "")
        return report_stop("train", exc, resume)
    finally:
        _PREPARED.clear()
        if _distributed_ready():
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
