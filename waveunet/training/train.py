"""``waveunet train [key=value overrides]``: train one run, or a Hydra sweep of runs.

Examples::

    waveunet train experiment=demo
    waveunet train model=m5_highsr output=linear_direct data=musdb_hq data.root=/data/musdb18hq
    waveunet train -m output=tanh_difference,linear_direct seed=1,2,3       # Hydra multirun
    torchrun --nproc_per_node=4 scripts/train.py model=m5_highsr trainer.precision=bf16

A single run goes the way of every ``key=value`` command
(:func:`waveunet.settings.flags.run_command`): the config is composed, the whole run is built
and checked (settings, data decoded and checked, a resumed run's checkpoint and config checked
and its folder locked), and only then is its folder made, its config recorded in ``.hydra/``
(where Hydra records it) and its log file ``train.log`` opened. So a run that cannot start
leaves nothing behind, and a resumed run's recorded config is never rewritten. A folder given
for a new run (``hydra.run.dir=``) that already holds a run is refused. Every error is one line
with exit 2.

A multirun (``-m``) is Hydra's own (``@hydra.main``), for its sweepers and launchers: the
composition and settings of every job are checked first, then each job builds its run in the
folder Hydra made for it.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..commands import report_stop
from ..errors import ConfigError, WaveUNetError, space_checked
from ..files import atomic_write_text, dumps_json
from ..settings.compose import compose, config_dir
from ..settings.flags import parse, run_command
from .builder import run_settings
from .distributed import DistInfo, destroy_distributed, init_distributed, shared_run_dir
from .run_folder import check_new_run_dir, claim_new_run_dir, resume_mode, run_dir_for
from .solver import Solver

log = logging.getLogger("waveunet.train")  # the command's name: its log lines say what ran

USAGE = """usage: waveunet train [key=value overrides] [-m] [--cfg job, --help, ...]

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
Sweeps, one run per combination through Hydra's launcher (-m, --multirun):
waveunet train -m output=tanh_difference,linear_direct seed=1,2,3"""

# Hydra's console and log-file format (hydra/job_logging/default.yaml): a single run logs as a
# multirun's jobs do.
_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
_MULTIRUN = ("-m", "--multirun")

if not OmegaConf.has_resolver("waveunet_run_dir"):  # train.yaml's hydra.run.dir (multirun jobs)
    OmegaConf.register_new_resolver("waveunet_run_dir", run_dir_for, use_cache=True)


def main(argv: list[str]) -> int:
    """Entry point for ``waveunet train``."""
    argv = list(argv)
    if any(a in _MULTIRUN for a in argv):
        return _multirun(argv)
    return run_command("train", USAGE, "train", argv, _single_run)


# --------------------------------------------------------------------------------------------
# One run: compose, build and check, then make its folder and train
# --------------------------------------------------------------------------------------------


def _single_run(cfg: DictConfig, overrides: list[str]) -> int:
    info = DistInfo.from_env()
    log_lines = _RunLog() if info.is_main else None
    solver = None
    try:
        solver = _build(cfg, overrides, info)
        if log_lines is not None:
            log_lines.into_file(solver.run_dir / "train.log")
        train(solver, info)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (cli turns it into one)
        last = None if solver is None else solver.run_dir / "last.pt"
        resume = (f"; continue from its last checkpoint with trainer.resume={solver.run_dir}"
                  if last is not None and last.is_file() else "")
        return report_stop("train", exc, resume)
    finally:
        destroy_distributed()
        if log_lines is not None:
            log_lines.close()
    return 0


def _build(cfg: DictConfig, overrides: list[str], info: DistInfo) -> Solver:
    """The run's Solver, built and checked before anything is written; then a new run's folder
    is made and its config recorded (a resumed run keeps its folder and its record)."""
    settings = run_settings(cfg, info.world_size)
    given = _given_run_dir(overrides)
    if given and info.is_main and resume_mode(settings.trainer.resume) is None:
        check_new_run_dir(Path(given))  # before anything is built
    init_distributed(cfg.trainer.device, info)
    run_dir = Path(given or run_dir_for(cfg.runs_root, cfg.name, settings.trainer.resume))
    solver = Solver(cfg, shared_run_dir(run_dir, info))
    if solver.resumed_from is not None:
        return solver
    claimed = None
    if info.is_main:
        if given:  # also where trainer.resume=true found no run to continue
            check_new_run_dir(Path(given))
        # Another run started in the same second may have taken the name: the next free one.
        claimed = Path(given) if given else claim_new_run_dir(run_dir)
    solver.use_folder(shared_run_dir(claimed, info))
    if info.is_main:
        _record_config(solver.run_dir, cfg, overrides)
    return solver


def _record_config(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """``.hydra/config.yaml`` and ``.hydra/overrides.yaml``, as Hydra records a run's config."""
    folder = run_dir / ".hydra"
    with space_checked(folder):
        folder.mkdir(exist_ok=True)
        atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
        atomic_write_text(folder / "overrides.yaml", OmegaConf.to_yaml(list(overrides)))


def _given_run_dir(overrides: list[str]) -> str | None:
    """A ``hydra.run.dir=`` given on the command line (its value, unquoted)."""
    for o in overrides:
        if o.startswith("hydra.run.dir="):
            return o.split("=", 1)[1].strip().strip("'\"")
    return None


class _RunLog:
    """waveunet's log lines of a run: on the console in Hydra's format (where nothing else
    configured logging: the command line), and in the run's ``train.log`` once its folder
    exists, the lines logged while the run was built included (kept until then)."""

    def __init__(self):
        self.logger = logging.getLogger("waveunet")
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.added: list[tuple[logging.Logger, logging.Handler]] = []
        root = logging.getLogger()
        if not root.handlers:
            console = logging.StreamHandler(sys.stdout)
            console.setFormatter(logging.Formatter(_LOG_FORMAT))
            self._add(root, console)
        self.kept = logging.handlers.MemoryHandler(capacity=10**6,
                                                   flushLevel=logging.CRITICAL + 1)
        self._add(self.logger, self.kept)

    def _add(self, logger: logging.Logger, handler: logging.Handler) -> None:
        logger.addHandler(handler)
        self.added.append((logger, handler))

    def into_file(self, path: Path) -> None:
        """``path`` from now on, with the lines kept so far."""
        with space_checked(path):
            file = logging.FileHandler(path, encoding="utf-8")
        file.setFormatter(logging.Formatter(_LOG_FORMAT))
        self.kept.setTarget(file)
        self.kept.flush()
        self.logger.removeHandler(self.kept)
        self._add(self.logger, file)

    def close(self) -> None:
        for logger, handler in self.added:
            logger.removeHandler(handler)
            handler.close()
        self.logger.setLevel(self.level)


def train(solver: Solver, info: DistInfo) -> dict:
    """Train a built run; write ``summary.json`` and print where everything is."""
    # A full disk is reported once by the run, not again by every line the log file loses.
    logging.raiseExceptions = False
    summary = solver.train()
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


# --------------------------------------------------------------------------------------------
# A sweep: Hydra's multirun, every job checked first
# --------------------------------------------------------------------------------------------


def _multirun(argv: list[str]) -> int:
    flags = parse([a for a in argv if a not in _MULTIRUN], "train")
    if flags.help or flags.hydra_help or flags.cfg or flags.package or flags.resolve:
        raise ConfigError("-m runs a sweep; --help, --hydra-help and --cfg show one run's "
                          "config: give them without -m")
    info = DistInfo.from_env()
    check_sweep(flags.overrides, info)
    import hydra

    @hydra.main(config_path=str(config_dir()), config_name="train", version_base=None)
    def job(cfg: DictConfig) -> None:
        _sweep_job(cfg, info)

    # Only rank 0 writes the sweep's folders and Hydra's logs.
    quiet = [] if info.is_main else ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    sys.argv = ["waveunet train", "--multirun", *flags.overrides, *quiet]
    job()
    return 0


def _sweep_job(cfg: DictConfig, info: DistInfo) -> None:
    """One job of a sweep: its run, built in the folder Hydra made for it."""
    from hydra.core.hydra_config import HydraConfig

    try:
        init_distributed(cfg.trainer.device, info)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        train(Solver(cfg, shared_run_dir(run_dir, info)), info)
    except WaveUNetError as exc:
        # SystemExit passes through Hydra's handler: one clear line, exit 2.
        print(f"waveunet train: error: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        destroy_distributed()


def check_sweep(overrides: list[str], info: DistInfo) -> None:
    """A multirun: compose every value of every swept key (the other keys at their first
    value) and check its settings, before Hydra starts the first job."""
    for variant in _sweep_variants(overrides):
        cfg = compose("train", variant)
        settings = run_settings(cfg, info.world_size)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
