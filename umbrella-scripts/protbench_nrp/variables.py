"""Every ``PROTBENCH_*`` environment variable, once: what it means, its unit, default and check.

A Job is configured only through its environment, so a misspelt name or an
unusable value would otherwise be found days later, in a pod. This table is
the one place each variable is described. From it come

* every stage script's click options (:func:`option`), so a variable has one
  flag, type, default and help in every script that reads it;
* the launcher's checks of ``EXTRA_ENV`` (:func:`extra_env_problems`): an
  unknown ``PROTBENCH_*`` name is refused with the closest known names, and a
  value a stage would refuse is refused at launch with the stage's own
  message, because :func:`stage_settings` is what the scripts call too;
* the demo's settings (:func:`settings_env`) and the README's settings table
  (:func:`markdown_table`; a test keeps the two equal).

``set_by`` tells who sets a variable: ``None`` for the scientist (through
``EXTRA_ENV``), ``"launcher"`` for what the launcher writes into every Job, and
``"template"`` for the mount points ``k8s_template.yaml`` gives the pod's
commands. ``stages`` are the programs that read it: the Job stages
``setup``, ``steered`` and ``window`` (their Python scripts), ``pod`` (the
shell scripts of ``umbrella-scripts/pod/``), and ``analysis``, ``status`` and
``follow``, which run on your machine and never in a Job.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import click

from . import runrecord, science

PREFIX = "PROTBENCH_"

#: The stages whose Python script reads its settings from its options.
JOB_STAGES = ("setup", "steered", "window")


class SyncMinutes(click.ParamType):
    """Minutes as run-job.sh accepts them: digits with an optional decimal point, no sign or exponent."""

    name = "minutes"
    #: run-job.sh tests PROTBENCH_SYNC_MINUTES against this very pattern (a test compares them).
    PATTERN = r"^([0-9]+([.][0-9]*)?|[.][0-9]+)$"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        if not re.match(self.PATTERN, str(value)):
            self.fail(f"'{value}' is not a number of minutes (e.g. 30 or 0.5; 0 = only the final upload)",
                      param, ctx)
        return float(value)


class ShellSeconds(SyncMinutes):
    """Seconds as the pod's scripts accept them: the same pattern as :class:`SyncMinutes`."""

    name = "seconds"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        if not re.match(self.PATTERN, str(value)):
            self.fail(f"'{value}' is not a number of seconds (e.g. 10 or 2.5)", param, ctx)
        return float(value)


@dataclass(frozen=True)
class Variable:
    """One ``PROTBENCH_*`` variable.

    Attributes
    ----------
    name : str
    kind : click type
        How its text is read (and refused): ``float``, ``int``, ``str`` or a click type.
    unit : str
        ``""`` for a plain number, a name or a path.
    default : optional
        What a reader uses when it is unset; ``None`` when there is none, or
        when ``default_text`` says where it comes from instead.
    default_text : str
        The default as the help and the README show it.
    stages : tuple of str
        The programs that read it (see the module docstring).
    meaning : str
        One line; the help text of its option.
    check : str
        What a reader refuses, in words; the code doing it is the reader's.
    set_by : str or None
        ``"launcher"``, ``"template"`` or ``None`` (yours, through EXTRA_ENV).
    flag : str
        The option of the stage scripts that reads it, when they have one.
    field : str
        The settings field (and click parameter) it feeds.
    required : bool
        The stage scripts refuse to start without it.
    """

    name: str
    kind: object
    unit: str
    default: object
    stages: tuple[str, ...]
    meaning: str
    check: str
    set_by: str | None = None
    flag: str = ""
    field: str = ""
    default_text: str = ""
    required: bool = False

    @property
    def shown_default(self) -> str:
        if self.default_text:
            return self.default_text
        return "" if self.default is None else str(self.default)

    @property
    def settable(self) -> bool:
        """Whether EXTRA_ENV may set it: read by a Job and set by nobody else."""
        return self.set_by is None and any(stage in JOB_STAGES + ("pod",) for stage in self.stages)

    @property
    def click_type(self) -> click.ParamType:
        return self.kind if isinstance(self.kind, click.ParamType) else click.types.convert_type(self.kind)

    def convert(self, text: str, script: str = ""):
        """The value a reader gets from ``text``; :class:`click.BadParameter` names the variable."""
        try:
            return self.click_type.convert(text, None, None)
        except click.BadParameter as error:
            where = f" ({self.flag} of {script})" if self.flag and script else ""
            raise click.BadParameter(f"Invalid value for {self.name}{where}: {error.message}") from None


_POSITIVE = "a number > 0"
_DIVIDES_FRAME = "a number > 0 that divides the frame interval into whole steps"
_DIVIDES_LENGTH = "a number > 0 that divides the length into whole frames"
_MD = ("steered", "window")

VARIABLES: tuple[Variable, ...] = (
    # -- set by the launcher in every Job ------------------------------------------------------
    Variable("PROTBENCH_STAGE", str, "", None, ("pod",), "The Job's stage: setup, steered or window.",
             "one of setup, steered, window", set_by="launcher"),
    Variable("PROTBENCH_TARGET", str, "", None, JOB_STAGES + ("analysis",),
             "Benchmark target, e.g. villin or gb3.", "a target of proteinbenchmark's catalog or science.py's",
             set_by="launcher", flag="--target", field="target", required=True),
    Variable("PROTBENCH_FF", str, "", None, JOB_STAGES + ("analysis",), "Force field name.",
             "letters, digits and . _ + -", set_by="launcher", flag="--ff", field="ff", required=True),
    Variable("PROTBENCH_REPLICA", int, "", None, _MD, "Replica, from 1.", "a whole number >= 1",
             set_by="launcher", flag="--replica", field="replica", required=True),
    Variable("PROTBENCH_WINDOW", int, "", None, ("window",), "Window index, e.g. 07.",
             "0 .. PROTBENCH_N_WINDOWS - 1", set_by="launcher", flag="--window", field="window",
             required=True),
    Variable("PROTBENCH_N_WINDOWS", int, "", science.N_WINDOWS, _MD, "Number of windows.",
             "a whole number >= 1 (>= 2 for steered MD)", set_by="launcher", flag="--n-windows",
             field="n_windows"),
    Variable("PROTBENCH_SCRIPT_COMMIT", str, "", None, ("pod",), "Commit of this repository the pod checks out.",
             "a commit pushed to PROTBENCH_REPO_URL", set_by="launcher"),
    Variable("PROTBENCH_SCRIPT_PATH", str, "", None, ("pod",), "The stage's script, relative to the repository.",
             "an executable file at that commit", set_by="launcher"),
    Variable("PROTBENCH_REPO_URL", str, "", None, ("pod",), "Repository the pod clones.", "a git URL",
             set_by="launcher"),
    Variable("PROTBENCH_REQUIRED_FILES", str, "", None, ("pod",),
             "What the pod copies in from the bucket (newline-separated, directories end in /).",
             "relative paths inside results/", set_by="launcher"),
    Variable("PROTBENCH_OUTPUT_FILES", str, "", None, ("pod",), "What the pod uploads to the bucket.",
             "relative paths inside results/", set_by="launcher"),
    Variable("PROTBENCH_BUCKET", str, "", None, ("pod", "analysis"), "S3 bucket of the results.",
             "an S3 bucket name", set_by="launcher"),
    Variable("PROTBENCH_RCLONE_REMOTE", str, "", None, ("pod", "analysis"),
             "Remote of the rclone config that reaches the bucket.", "a remote name, without ':'",
             set_by="launcher"),
    Variable("PROTBENCH_PROTEINBENCHMARK_REF", str, "", None, ("pod",),
             "Git ref (or pip requirement) of proteinbenchmark the pod installs; empty: the image's.",
             "no spaces", set_by="launcher"),
    Variable("PROTBENCH_PROTEINBENCHMARK_REPO", str, "", None, ("pod",),
             "Repository of proteinbenchmark that PROTBENCH_PROTEINBENCHMARK_REF is a commit of.",
             "a git URL", set_by="launcher"),
    Variable("PROTBENCH_IMAGE", str, "", None, ("pod",),
             "The image the Job runs, pinned by digest (written into the pod's run record).",
             "an image reference", set_by="launcher"),
    # -- set by the Job template -----------------------------------------------------------------
    Variable("PROTBENCH_RESULTS_DIR", click.Path(file_okay=False, path_type=Path), "", "/results",
             JOB_STAGES + ("pod", "analysis"), "Results root, where the pod mounts its volume.",
             "a directory", set_by="template", default_text="/results (analysis: results)"),
    Variable("PROTBENCH_REPO_DIR", click.Path(file_okay=False, path_type=Path), "", "/opt/repo", ("pod",),
             "Where the pod's checkout of this repository lies.", "a directory", set_by="template"),
    # -- yours, through EXTRA_ENV: where the windows lie -------------------------------------------------
    Variable("PROTBENCH_CV_START", float, "", science.CV_START, _MD, "Centre of window 0.",
             "a fraction of native contacts in (0, 1]", flag="--cv-start", field="cv_start"),
    Variable("PROTBENCH_CV_END", float, "", science.CV_END, _MD, "Centre of the last window.",
             "a fraction of native contacts in (0, 1], not PROTBENCH_CV_START", flag="--cv-end",
             field="cv_end"),
    Variable("PROTBENCH_UMBRELLA_K", float, "kcal/mol", science.UMBRELLA_K_KCAL_PER_MOL, _MD,
             "Force constant k of the windows' k*(Q-Q0)^2.", _POSITIVE, flag="--umbrella-k",
             field="k_kcal_per_mol"),
    # -- conditions and equilibration (steered MD and every window) ------------------------------------
    Variable("PROTBENCH_TEMPERATURE", float, "K", None, _MD, "Temperature.", _POSITIVE,
             flag="--temperature", field="temperature_kelvin", default_text="target's"),
    Variable("PROTBENCH_PRESSURE", float, "atm", None, _MD, "Pressure; 0 = no barostat.", "a number >= 0",
             flag="--pressure", field="pressure_atm", default_text="target's"),
    Variable("PROTBENCH_EQUIL_LENGTH", float, "ns", None, _MD, "Equilibration length.",
             _POSITIVE, flag="--equil-length", field="equil_length_ns",
             default_text=f"target's, else {science.EQUIL_LENGTH_NS}"),
    Variable("PROTBENCH_EQUIL_TIMESTEP", float, "fs", None, _MD, "Equilibration timestep.",
             _DIVIDES_FRAME, flag="--equil-timestep",
             field="equil_timestep_fs", default_text=f"target's, else {science.EQUIL_TIMESTEP_FS}"),
    Variable("PROTBENCH_EQUIL_FRAME", float, "ps", None, _MD, "Equilibration frame interval.",
             _DIVIDES_LENGTH, flag="--equil-frame", field="equil_frame_ps",
             default_text=f"target's, else {science.EQUIL_FRAME_PS}"),
    # -- production of a window -----------------------------------------------------------------------
    Variable("PROTBENCH_PRODUCTION_LENGTH", float, "ns", science.PRODUCTION_LENGTH_NS, ("window",),
             "Production length.", _POSITIVE, flag="--production-length",
             field="production_length_ns"),
    Variable("PROTBENCH_TIMESTEP", float, "fs", science.TIMESTEP_FS, ("window",), "Production timestep.",
             _DIVIDES_FRAME, flag="--timestep", field="timestep_fs"),
    Variable("PROTBENCH_FRAME", float, "ps", science.FRAME_PS, ("window",), "Production frame interval.",
             _DIVIDES_LENGTH, flag="--frame", field="frame_ps"),
    Variable("PROTBENCH_CHECKPOINT", float, "ps", science.CHECKPOINT_PS, ("window",),
             "Checkpoint (and trajectory segment) interval.", "a whole multiple of the frame interval",
             flag="--checkpoint", field="checkpoint_ps"),
    Variable("PROTBENCH_SAVE_STATE", float, "ps", science.SAVE_STATE_PS, ("window",),
             "Interval of kept State XML files.", "a whole multiple of the frame interval", flag="--save-state",
             field="save_state_ps"),
    # -- steered MD ---------------------------------------------------------------------------------------
    Variable("PROTBENCH_STEERED_K", float, "kcal/mol", None, ("steered",),
             "Force constant k of k*(Q-Q0)^2 while pulling.", _POSITIVE, flag="--steered-k",
             field="steered_k", default_text="PROTBENCH_UMBRELLA_K"),
    Variable("PROTBENCH_PULL_LENGTH", float, "ns", science.PULL_LENGTH_NS, ("steered",),
             "Time over which Q0 moves past the last centre.", _POSITIVE,
             flag="--pull-length", field="pull_length_ns"),
    Variable("PROTBENCH_PULL_TIMESTEP", float, "fs", science.PULL_TIMESTEP_FS, ("steered",),
             "Pulling timestep.", _DIVIDES_FRAME,
             flag="--pull-timestep", field="pull_timestep_fs"),
    Variable("PROTBENCH_PULL_FRAME", float, "ps", science.PULL_FRAME_PS, ("steered",),
             "Interval at which Q is checked against the centres and recorded.",
             _DIVIDES_LENGTH, flag="--pull-frame", field="pull_frame_ps"),
    # -- running ------------------------------------------------------------------------------------------
    Variable("PROTBENCH_CHECKPOINT_MINUTES", float, "min", science.CHECKPOINT_MINUTES, _MD,
             "Wall-clock time between extra checkpoints.", _POSITIVE, flag="--checkpoint-minutes",
             field="checkpoint_minutes"),
    Variable("PROTBENCH_MAX_BLOWUPS", click.IntRange(min=0), "", science.MAX_BLOWUPS, _MD,
             "Attempts to recover from a blow-up at the same point before giving up.",
             "a whole number >= 0", flag="--max-blowups", field="max_blowups"),
    Variable("PROTBENCH_SEED", click.IntRange(min=0, max=science.MAX_SEED), "", 0, _MD,
             "Seed of the random forces, initial velocities, blow-up recoveries and barostat; each replica, "
             "window and phase draws its own stream from it; 0 = new random seeds each run.",
             f"a whole number from 0 to {science.MAX_SEED}", flag="--seed", field="seed"),
    Variable("PROTBENCH_PLATFORM", str, "", science.PLATFORM, JOB_STAGES, "CUDA, OpenCL, CPU or Reference.",
             "one of CUDA, OpenCL, CPU, Reference (any case), present on the node", flag="--platform",
             field="platform"),
    Variable("PROTBENCH_PRECISION", str, "", science.PRECISION, JOB_STAGES,
             "single, mixed or double (CUDA and OpenCL only).", "one of single, mixed, double",
             flag="--precision", field="precision"),
    Variable("PROTBENCH_DETERMINISTIC_FORCES", bool, "", False, _MD,
             "Sum forces in a fixed order (OpenMM's DeterministicForces), so that a resumed run can "
             "repeat an uninterrupted one; CUDA and CPU set it, Reference needs nothing.",
             "true or false; true refused on OpenCL, which lacks the property", flag="--deterministic-forces",
             field="deterministic_forces"),
    Variable("PROTBENCH_INITIAL_PDB", click.Path(dir_okay=False), "", None, ("setup",),
             "Structure to build the local target from.", "an existing PDB file of a protein",
             flag="--initial-pdb", field="initial_pdb", default_text="OpenMM's test.pdb"),
    Variable("PROTBENCH_SOLVENT_PADDING", float, "nm", None, ("setup",),
             "Local target in explicit water (amber14-tip3p): replace the structure's water by a "
             "new box with this much water around the protein.", "a number > 0",
             flag="--solvent-padding", field="padding_nm", default_text="keep the structure's water and box"),
    Variable("PROTBENCH_SYNC_MINUTES", SyncMinutes(), "min", 30, ("pod",),
             "Time between a pod's uploads; 0 = only the final upload.",
             "digits with an optional decimal point"),
    Variable("PROTBENCH_TRANSFER_TRIES", click.IntRange(min=1), "", 5, ("pod",),
             "Tries of each transfer (clone, copy-in, final upload) before the pod exits 75.",
             "a whole number >= 1"),
    Variable("PROTBENCH_TRANSFER_RETRY_SECONDS", ShellSeconds(), "s", 10.0, ("pod",),
             "Delay before a transfer's first retry; it doubles at each further one.",
             "digits with an optional decimal point"),
    Variable("PROTBENCH_MONITOR_SECONDS", float, "s", runrecord.MONITOR_SECONDS, ("pod",),
             "Interval at which a pod samples its GPU utilisation for its run record.", "a number > 0"),
    Variable("PROTBENCH_MONITOR_POLL_SECONDS", float, "s", runrecord.FIRST_STEP_POLL_S, ("pod",),
             "Interval at which a pod looks for its first progress record.", "a number > 0"),
    Variable("PROTBENCH_CGROUP_ROOT", str, "", str(runrecord.CGROUP_ROOT), ("pod",),
             "Where the container's cgroup files (its peak memory) lie; tests point it elsewhere.",
             "a directory"),
    # -- on your machine, never in a Job ---------------------------------------------------------------
    Variable("PROTBENCH_STATUS_SOURCE", click.Choice(["local", "bucket"]), "", "local", ("status",),
             "Where --status reads progress: LOCAL_RESULT_DIR or the bucket.", "local or bucket"),
    Variable("PROTBENCH_FOLLOW_POLL", click.FloatRange(min=0, min_open=True), "s", 120.0, ("follow",),
             "With --follow: seconds between looks at the cluster and the results.", "a number > 0"),
    Variable("PROTBENCH_FOLLOW_MAX_ATTEMPTS", click.IntRange(min=1), "", 4, ("follow",),
             "With --follow: launches a Job gets, its first included, before it is given up.",
             "a whole number >= 1"),
    Variable("PROTBENCH_FOLLOW_MAX_GPU_HOURS", click.FloatRange(min=0, min_open=True), "h", None, ("follow",),
             "With --follow: submit nothing that would take the run records' GPU-hours past this.",
             "a number > 0", default_text="no budget"),
    Variable("PROTBENCH_ANALYSIS_REPLICAS", click.IntRange(min=1), "", None, ("analysis",),
             "Replicas to analyse.", "whole numbers >= 1", default_text="all found"),
    Variable("PROTBENCH_BUCKET_PREFIX", str, "", "results", ("analysis",),
             "Key prefix of the results root in the bucket.", "a key prefix"),
    Variable("PROTBENCH_DISCARD_FRAMES", click.IntRange(min=0), "", None, ("analysis",),
             "Leading production frames of every window dropped as equilibration.", "a whole number >= 0",
             default_text="detected per window"),
    Variable("PROTBENCH_PMF_BINS", click.IntRange(min=2), "", None, ("analysis",),
             "Histogram bins along the CV.", "a whole number >= 2", default_text="two per window spacing"),
    Variable("PROTBENCH_BOOTSTRAP", click.IntRange(min=0), "", 100, ("analysis",),
             "Bootstrap resamples for the uncertainties (whole replicas as blocks); 0 = MBAR's analytical "
             "ones.", "a whole number >= 0"),
    Variable("PROTBENCH_BOOTSTRAP_SEED", int, "", 0, ("analysis",), "Seed of the bootstrap.",
             "a whole number"),
    Variable("PROTBENCH_PMF_METHOD", click.Choice(["histogram", "kde"]), "", "kde", ("analysis",),
             "PMF estimator, both pymbar's FES: a Gaussian kernel density or a histogram.",
             "histogram or kde"),
    Variable("PROTBENCH_PMF_BIN_WIDTH", click.FloatRange(min=0, min_open=True), "", None, ("analysis",),
             "Histogram bin width, or the KDE's grid spacing, along the CV.", "a number > 0",
             default_text="histogram: two bins per window spacing; KDE: one kernel width"),
    Variable("PROTBENCH_KDE_BANDWIDTH", click.FloatRange(min=0, min_open=True), "", None, ("analysis",),
             "Width of the KDE's Gaussian kernel along the CV.", "a number > 0",
             default_text="0.125 x the window spacing"),
    Variable("PROTBENCH_FOLD_BOUNDARY", float, "", None, ("analysis",),
             "Folded means the CV above this.", "a number",
             default_text="the barrier top between the folded and unfolded minima"),
    Variable("PROTBENCH_STATES", str, "", None, ("analysis",),
             "Two states NAME=LO:HI (whitespace between them): the free-energy difference G(second) - G(first) "
             "between these ranges of the CV.", "two NAME=LO:HI ranges that do not overlap, each holding samples",
             default_text="along Q: dG_fold"),
    Variable("PROTBENCH_METADATA", str, "", None, ("analysis",),
             "WHAM metadata file of windows from any engine: 'path centre K [correlation_time [temperature]]' "
             "per line, K of ½K(x−c)² in kcal/mol per CV unit².", "a readable file of such lines",
             default_text="none: analyse a campaign"),
    Variable("PROTBENCH_CV_COLUMN", str, "", "2", ("analysis",),
             "With a metadata file: the CV's column in each time series, or its PLUMED field name.",
             "a column number >= 2 or a '#! FIELDS' name"),
    Variable("PROTBENCH_ANALYSIS_TEMPERATURE", click.FloatRange(min=0, min_open=True), "K", None, ("analysis",),
             "With a metadata file: the temperature of windows whose line gives none.", _POSITIVE),
    Variable("PROTBENCH_CV_PERIOD", click.FloatRange(min=0, min_open=True), "CV unit", None, ("analysis",),
             "With a metadata file: the CV's period (360 for degrees, 2π for radians).", _POSITIVE,
             default_text="not periodic"),
    Variable("PROTBENCH_CV_MIN", float, "CV unit", None, ("analysis",),
             "With a period: where one period of the CV begins.", "a number", default_text="-period/2"),
    Variable("PROTBENCH_ANALYSIS_NAME", str, "", None, ("analysis",),
             "With a metadata file: prefix of the files written.", "a name without '/'",
             default_text="the metadata file's stem"),
    Variable("PROTBENCH_REPORT", bool, "", False, ("analysis",),
             "Also write the self-contained HTML report.", "true or false"),
    Variable("PROTBENCH_OVERLAP_THRESHOLD", click.FloatRange(min=0, max=1), "", 0.03, ("analysis",),
             "Warn about neighbouring windows whose MBAR overlap is below this.", "a number in [0, 1]"),
)

BY_NAME: dict[str, Variable] = {variable.name: variable for variable in VARIABLES}

#: The options of each stage script, in the order its ``--help`` lists them (after
#: ``-o``).
SCRIPT_VARIABLES: dict[str, tuple[str, ...]] = {
    "setup": ("PROTBENCH_TARGET", "PROTBENCH_FF", "PROTBENCH_PLATFORM", "PROTBENCH_PRECISION",
              "PROTBENCH_INITIAL_PDB", "PROTBENCH_SOLVENT_PADDING"),
    "steered": ("PROTBENCH_TARGET", "PROTBENCH_FF", "PROTBENCH_REPLICA", "PROTBENCH_N_WINDOWS",
                "PROTBENCH_CV_START", "PROTBENCH_CV_END", "PROTBENCH_UMBRELLA_K", "PROTBENCH_STEERED_K",
                "PROTBENCH_PULL_LENGTH", "PROTBENCH_PULL_FRAME", "PROTBENCH_TEMPERATURE",
                "PROTBENCH_PRESSURE", "PROTBENCH_EQUIL_LENGTH", "PROTBENCH_EQUIL_TIMESTEP",
                "PROTBENCH_EQUIL_FRAME", "PROTBENCH_PULL_TIMESTEP", "PROTBENCH_CHECKPOINT_MINUTES",
                "PROTBENCH_PLATFORM", "PROTBENCH_PRECISION", "PROTBENCH_DETERMINISTIC_FORCES",
                "PROTBENCH_MAX_BLOWUPS", "PROTBENCH_SEED"),
    "window": ("PROTBENCH_TARGET", "PROTBENCH_FF", "PROTBENCH_REPLICA", "PROTBENCH_WINDOW",
               "PROTBENCH_N_WINDOWS", "PROTBENCH_CV_START", "PROTBENCH_CV_END", "PROTBENCH_UMBRELLA_K",
               "PROTBENCH_TEMPERATURE", "PROTBENCH_PRESSURE", "PROTBENCH_EQUIL_LENGTH",
               "PROTBENCH_EQUIL_TIMESTEP", "PROTBENCH_EQUIL_FRAME", "PROTBENCH_PRODUCTION_LENGTH",
               "PROTBENCH_TIMESTEP", "PROTBENCH_FRAME", "PROTBENCH_CHECKPOINT", "PROTBENCH_SAVE_STATE",
               "PROTBENCH_CHECKPOINT_MINUTES", "PROTBENCH_PLATFORM", "PROTBENCH_PRECISION",
               "PROTBENCH_DETERMINISTIC_FORCES", "PROTBENCH_MAX_BLOWUPS", "PROTBENCH_SEED"),
}

#: The script of each stage, as its messages name it.
SCRIPT_NAMES = {"setup": "setup-umbrella-system.py", "steered": "run-steered-md.py",
                "window": "run-umbrella-window.py"}


def names(set_by: str | None = None) -> tuple[str, ...]:
    """The variables set by ``set_by`` (``"launcher"``, ``"template"``; ``None``: yours)."""
    return tuple(variable.name for variable in VARIABLES if variable.set_by == set_by)


# -- click options -----------------------------------------------------------------------------------

def option(name: str):
    """The click option reading ``name``; ``--help`` shows the variable, the unit and the default."""
    variable = BY_NAME[name]
    head, semicolon, rest = variable.meaning.rstrip(".").partition(";")
    unit = f", {variable.unit}" if variable.unit else ""
    shown = f" [default: {variable.shown_default}]" if variable.shown_default else ""
    extra = {"required": True} if variable.required else {}
    if variable.default is not None:
        extra["default"] = variable.default  # an explicit default=None would make click drop required=True
    return click.option(variable.flag, variable.field, envvar=name, type=variable.click_type, show_envvar=True,
                        help=f"{head}{unit}{semicolon}{rest}.{shown}", **extra)


def options(*variable_names: str):
    """One decorator adding the options of ``variable_names``, listed in that order."""
    def apply(command):
        for name in reversed(variable_names):
            command = option(name)(command)
        return command
    return apply


# -- settings of a stage ----------------------------------------------------------------------------------

def stage_settings(stage: str, values: Mapping[str, object], *, check_availability: bool = True):
    """The checked settings of ``stage`` from its script's option values (``field -> value``).

    The scripts call this with what click gives them; the launcher calls it
    with the values of a Job's environment, ``check_availability=False``
    (this machine need not have the pod's GPU platform).

    Raises
    ------
    protbench_nrp.engine.EngineError
        The stage's own error, naming the variable and the fix.
    """
    values = dict(values)
    values.pop("initial_pdb", None)
    padding_nm = values.pop("padding_nm", None)
    if stage == "setup":
        from .engine import EngineError, check_platform_name
        from .layout import Campaign
        from .systems import SetupError, check_solvent_padding

        try:
            Campaign(values["target"], values["ff"])
        except ValueError as error:
            raise EngineError(f"{error} (PROTBENCH_TARGET / PROTBENCH_FF)") from None
        check_platform_name(values["platform"], values["precision"])
        try:
            check_solvent_padding(values["target"], values["ff"], padding_nm)
        except SetupError as error:
            raise EngineError(str(error)) from None
        return values
    from .settings import platform_availability

    if stage == "steered":
        from .steered import SteeredSettings as settings_class

        steered_k = values.pop("steered_k", None)
        if steered_k is not None:
            values["k_kcal_per_mol"] = steered_k
    else:
        from .window import WindowSettings as settings_class
    with platform_availability(check_availability):
        return settings_class.resolve(**values)


def env_values(stage: str, env: Mapping[str, str]) -> dict[str, object]:
    """What the options of ``stage``'s script would hold, given a Job's environment ``env``.

    Raises
    ------
    click.BadParameter
        For a value its option refuses, naming the variable.
    """
    values = {}
    for name in SCRIPT_VARIABLES[stage]:
        variable = BY_NAME[name]
        text = env.get(name)
        values[variable.field] = variable.default if text is None else variable.convert(text, SCRIPT_NAMES[stage])
    return values


def unknown_name_problem(name: str) -> str | None:
    """Why EXTRA_ENV may not set the ``PROTBENCH_*`` variable ``name`` (no Job reads it), or ``None``."""
    variable = BY_NAME.get(name)
    if variable is not None:
        if variable.stages and not variable.settable and variable.set_by is None:
            return (f"EXTRA_ENV sets {name}, which no Job reads ({', '.join(variable.stages)} reads it on "
                    f"your machine); set it in your shell instead")
        return None
    # Compared without the common prefix, which would make every name look close.
    settable = {v.name.removeprefix(PREFIX): v.name for v in VARIABLES if v.settable}
    close = [settable[match] for match in
             difflib.get_close_matches(name.removeprefix(PREFIX), list(settable), n=2, cutoff=0.6)]
    hint = (f"did you mean {' or '.join(close)}?" if close
            else "see the settings table in docs/settings.md for the variables the stages read")
    return f"EXTRA_ENV sets {name}, which no stage reads; {hint}"


def value_problems(env: Mapping[str, str], stages: tuple[str, ...]) -> list[str]:
    """What the scripts of ``stages`` would refuse in a Job environment ``env``, in their words.

    Each variable is read as its option reads it, then the stage's settings
    are built and checked exactly as its script does, except that the
    platform need not be present on this machine, and that a target this
    machine's catalogs lack (proteinbenchmark's is in the image) gets
    placeholder conditions: the pod's catalog supplies them.
    """
    from .engine import EngineError

    problems = []
    read = {name for stage in stages for name in SCRIPT_VARIABLES[stage]}
    for name, text in env.items():
        variable = BY_NAME.get(name)
        if variable is not None and variable.settable and name not in read:
            try:
                variable.convert(text)
            except click.BadParameter as error:
                problems.append(error.message)
    for stage in stages:
        try:
            values = env_values(stage, env)
            if stage != "setup":
                values = _placeholder_conditions(values)
            stage_settings(stage, values, check_availability=False)
        except click.BadParameter as error:
            problems.append(error.message)
        except EngineError as error:
            problems.append(f"{SCRIPT_NAMES[stage]} would refuse this: {error}")
    return list(dict.fromkeys(problems))


def _placeholder_conditions(values: dict) -> dict:
    try:
        science.target_conditions(values["target"], values.get("ff"))
    except science.ProteinbenchmarkImportError:
        pass  # no placeholders: the stage's own check reports the failed import
    except science.UnknownTargetError:
        values = {"temperature_kelvin": 300.0, "pressure_atm": 1.0,
                  **{k: v for k, v in values.items() if v is not None}}
    return values


# -- what the README and the demo show -------------------------------------------------------------

def settings_env(**values) -> dict[str, str]:
    """An EXTRA_ENV of ``variable name -> value`` as text, refusing a name no Job reads."""
    env = {}
    for name, value in values.items():
        variable = BY_NAME.get(name)
        if variable is None or not variable.settable:
            raise KeyError(f"{name} is not a variable EXTRA_ENV may set")
        env[name] = str(value)
    return env


def who(variable: Variable) -> str:
    """Who sets ``variable``, as the README's table says it."""
    if variable.set_by:
        return variable.set_by
    return "you (EXTRA_ENV)" if variable.settable else "you (your shell)"


def markdown_table() -> str:
    """The README's table of every variable (between its ``settings-table`` markers)."""
    lines = ["| Variable | Unit | Default | Read by | Set by | Meaning | Refused unless |",
             "|---|---|---|---|---|---|---|"]
    for variable in VARIABLES:
        lines.append(f"| `{variable.name}` | {variable.unit or '-'} | {variable.shown_default or '-'} | "
                     f"{', '.join(variable.stages)} | {who(variable)} | "
                     f"{variable.meaning} | {variable.check} |")
    return "\n".join(lines) + "\n"


__all__ = ["Variable", "VARIABLES", "BY_NAME", "SCRIPT_VARIABLES", "JOB_STAGES", "names", "option", "options",
           "stage_settings", "env_values", "unknown_name_problem", "value_problems", "settings_env",
           "markdown_table", "SyncMinutes"]
