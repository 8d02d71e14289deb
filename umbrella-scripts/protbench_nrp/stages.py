"""The stages of a campaign as one table: what each runs, reads, writes, needs, and when it is done.

A campaign is setup, then steered MD of each replica, then that replica's
umbrella windows. :data:`STAGE_TABLE` holds one :class:`Stage` per kind of
Job, in that order, and each Stage answers every per-stage question the
launcher, ``--local``, ``--status`` and preflight ask:

* ``script``: what its pods run (the launcher's ``SCRIPT_PATH`` replaces the
  window's);
* ``inputs`` / ``outputs``: paths below the results root, from
  :mod:`protbench_nrp.layout`, each input with the Job that writes it;
* ``needs``: the stage that must have finished first;
* ``is_complete``: the one definition of "done", asked of a
  :class:`~protbench_nrp.store.ResultsStore`, so a workstation's results and
  the bucket are judged alike.

What "done" means, per stage:

setup
    Its three outputs (native contacts, minimized PDB, the System XML) are in
    the setup directory, none of them empty.
steered
    The replica's equilibrated state and the starting structure of *every*
    window are in the replica directory, none empty (one listing, not one
    request per window). The equilibrated state alone means the pull may still be
    running, or failed midway.
window
    Its progress record reads, says ``finished``, and counted at least as
    many production steps as the window's settings ask for now. A window whose
    settings were lengthened since (``--extend``) is not done: it runs on; one
    whose production was shortened since is done (its script sees itself
    finished and keeps its record).
    A record that does not read, and settings that do not, mean "not done";
    the window's own script says what is wrong when it runs.

A store that cannot be read at all raises
:class:`~protbench_nrp.store.StoreError`: "cannot tell" is not "not done".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable, Mapping

from . import products
from .errors import ProtbenchError
from .layout import STAGES, Campaign, JobId, stage_identity, window_tag
from .records import Progress
from .store import ResultsStore

__all__ = ["Stage", "Input", "Completion", "STAGE_TABLE", "stage_of", "is_complete", "prerequisites",
           "production_steps", "window_record_complete", "JobId", "FINISHED_PHASE"]

#: The phase of a progress record whose Job has nothing left to run.
FINISHED_PHASE = "finished"


@dataclass(frozen=True)
class Completion:
    """Whether a Job is done, and why (or why not), in words for a status line.

    True in a boolean context exactly when ``done``. ``settings_read`` is
    False when a window's check could not read the settings its script would
    run with (here: not done); ``--status`` shows such a window unfinished
    too, and says its record calls it finished.
    """

    done: bool
    reason: str
    settings_read: bool = True

    def __bool__(self) -> bool:
        return self.done


@dataclass(frozen=True)
class Input:
    """One path a Job reads that an earlier Job writes."""

    #: Relative to the results root; a directory ends in ``/``.
    path: str
    #: The Job that writes it.
    producer: JobId


@dataclass(frozen=True)
class Stage:
    """One kind of Job of a campaign: a row of :data:`STAGE_TABLE`.

    Attributes
    ----------
    name : str
        ``"setup"``, ``"steered"`` or ``"window"``.
    script : str
        The script its pods run, relative to the repository root.
    script_setting : str or None
        The launcher constant that chooses another script (``SCRIPT_PATH`` for windows).
    needs : str or None
        The stage whose Job must be done first.
    summary : str
        What the stage does, in one line.
    """

    name: str
    script: str
    script_setting: str | None
    needs: str | None
    summary: str
    _check: Callable[[ResultsStore, Campaign, JobId, Mapping[str, str]], Completion] = field(repr=False)

    @property
    def identity(self) -> tuple[str, ...]:
        """Which of ``replica`` and ``window`` a Job of this stage has."""
        return stage_identity(self.name)

    def script_for(self, script_path: str | None = None) -> str:
        """The script a Job of this stage runs, given the launcher's ``SCRIPT_PATH``."""
        return script_path if self.script_setting and script_path else self.script

    def inputs(self, campaign: Campaign, job: JobId) -> list[Input]:
        """What ``job`` reads from earlier Jobs; preflight checks these are in the bucket."""
        job = self._own(job)
        return [Input(path, _producer(producer, job)) for path, producer in campaign.stage_inputs(job)]

    def outputs(self, campaign: Campaign, job: JobId, n_windows: int) -> list[str]:
        """What ``job``'s pods upload: its own outputs and nothing else."""
        return campaign.output_files(self._own(job), n_windows=n_windows)

    def required_files(self, campaign: Campaign, job: JobId, n_windows: int) -> list[str]:
        """What ``job``'s pods copy in: its inputs, then its own outputs to resume from."""
        return campaign.required_files(self._own(job), n_windows=n_windows)

    def progress_file(self, campaign: Campaign, job: JobId) -> PurePosixPath | None:
        """The progress record ``job``'s script keeps, or ``None`` (setup keeps none)."""
        return campaign.progress_file(self._own(job))

    def is_complete(self, store: ResultsStore, campaign: Campaign, job: JobId,
                    env: Mapping[str, str]) -> Completion:
        """Whether ``job`` has nothing left to do, judged from ``store`` alone.

        Parameters
        ----------
        store : ResultsStore
            The results tree: a local root or the bucket.
        campaign : Campaign
        job : JobId
            A Job of this stage.
        env : mapping
            The Job's environment (``JobSpec.env``): the settings its script reads.

        Raises
        ------
        StoreError
            When the store cannot be read.
        """
        return self._check(store, campaign, self._own(job), env)

    def _own(self, job: JobId) -> JobId:
        if not isinstance(job, JobId) or job.stage != self.name:
            raise ValueError(f"{job!r} is not a Job of the {self.name} stage; pass a JobId with stage={self.name!r}")
        return job


def _producer(stage: str, job: JobId) -> JobId:
    """The Job of ``stage`` that writes an input of ``job``: setup, or steered MD of ``job``'s replica."""
    return JobId(stage, job.replica if "replica" in stage_identity(stage) else None)


# -- the completion checks ---------------------------------------------------------------------

def _lacks(job: JobId, store: ResultsStore, directory: PurePosixPath, missing: list[str]) -> Completion:
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return Completion(False, f"{job.describe()} is not done: {store.describe(directory)} lacks {shown} "
                             f"(or has it empty)")


def _setup_complete(store: ResultsStore, campaign: Campaign, job: JobId, env: Mapping[str, str]) -> Completion:
    missing = products.missing_setup(store, campaign)
    if missing:
        return _lacks(job, store, campaign.setup_dir, missing)
    return Completion(True, "setup is done: contacts, minimized structure and System are in place")


def _steered_complete(store: ResultsStore, campaign: Campaign, job: JobId, env: Mapping[str, str]) -> Completion:
    n_windows = _n_windows(env)
    if isinstance(n_windows, str):
        return Completion(False, f"{job.describe()}: cannot tell which window structures it saves: {n_windows}")
    missing = products.missing_steered(store, campaign, job.replica, n_windows)
    if missing:
        return _lacks(job, store, campaign.replica_dir(job.replica), missing)
    return Completion(True, f"{job.describe()} is done: equilibrated state and all {n_windows} window "
                            f"structures are in place")


def _window_complete(store: ResultsStore, campaign: Campaign, job: JobId, env: Mapping[str, str]) -> Completion:
    where = store.describe(campaign.progress_file(job))
    text = store.read_text(campaign.progress_file(job))
    if text is None:
        return Completion(False, f"{job.describe()} has not started: no progress record at {where}")
    try:
        record = Progress.parse(text, where)
    except ValueError as error:
        return Completion(False, f"{job.describe()}: its progress record does not read ({error})")
    return window_record_complete(campaign, job, env, record)


def window_record_complete(campaign: Campaign, job: JobId, env: Mapping[str, str],
                           record: Progress) -> Completion:
    """The window check once its progress record is read: for a caller that has read it already.

    ``--status`` reads every window's record for its progress and ETA, and
    asks this instead of reading the record a second time.
    """
    job = stage_of("window")._own(job)
    if record.phase != FINISHED_PHASE:
        return Completion(False, f"{job.describe()} is in {record.phase}, step {record.step} of "
                                 f"{record.total_steps}")
    wanted = production_steps(campaign, job, env)
    if isinstance(wanted, str):
        return Completion(False, f"{job.describe()}: its settings do not read ({wanted}); its script will "
                                 f"say so when it runs", settings_read=False)
    if record.total_steps < wanted:
        return Completion(False, f"{job.describe()} finished {record.total_steps} production steps, but its "
                                 f"settings now ask for {wanted}: it runs on from its last checkpoint")
    if record.total_steps > wanted:
        # A production shortened since: the script sees itself finished and keeps its record.
        return Completion(True, f"{job.describe()} is done: {record.total_steps} production steps, more "
                                f"than the {wanted} its settings now ask for")
    return Completion(True, f"{job.describe()} is done: all {wanted} production steps")


def production_steps(campaign: Campaign, job: JobId, env: Mapping[str, str]) -> int | str:
    """Production steps window ``job`` runs under ``env`` (its script's own settings, catalog included).

    ``job`` and ``campaign`` say which window, whatever ``env`` says. Returns
    the reason instead of a number when the settings cannot be read.
    """
    import click

    from . import variables

    if "window" not in stage_identity(job.stage):
        raise ValueError(f"{job} is not a window Job; only windows have a production")
    env = {**env, "PROTBENCH_TARGET": campaign.target, "PROTBENCH_FF": campaign.ff,
           "PROTBENCH_REPLICA": str(job.replica), "PROTBENCH_WINDOW": window_tag(job.window)}
    try:
        settings = variables.stage_settings("window", variables.env_values("window", env),
                                            check_availability=False)
        return settings.production_schedule().total_steps
    except (click.ClickException, ProtbenchError) as error:
        return getattr(error, "message", None) or str(error)


def _n_windows(env: Mapping[str, str]) -> int | str:
    """``PROTBENCH_N_WINDOWS`` of a steered-MD Job's environment, or why it does not read."""
    import click

    from . import variables

    variable = variables.BY_NAME["PROTBENCH_N_WINDOWS"]
    text = env.get(variable.name)
    if text is None:
        return variable.default
    try:
        value = variable.convert(text, variables.SCRIPT_NAMES["steered"])
    except click.ClickException as error:
        return error.message
    if value < 1:
        return f"{variable.name} is {value}; it must be at least 1"
    return value


# -- the table --------------------------------------------------------------------------------

STAGE_TABLE: tuple[Stage, ...] = (
    Stage("setup", "umbrella-scripts/setup-umbrella-system.py", None, None,
          "Builds the System with its umbrella force, minimizes it and finds the native contacts.",
          _setup_complete),
    Stage("steered", "umbrella-scripts/run-steered-md.py", None, "setup",
          "Equilibrates one replica and pulls it along Q, saving each window's starting structure.",
          _steered_complete),
    Stage("window", "umbrella-scripts/run-umbrella-window.py", "SCRIPT_PATH", "steered",
          "Equilibrates one window at its centre and runs its biased production.",
          _window_complete),
)

_BY_NAME = {stage.name: stage for stage in STAGE_TABLE}
assert tuple(_BY_NAME) == STAGES, "STAGE_TABLE must list layout.STAGES, in order"


def stage_of(job: JobId | str) -> Stage:
    """The :class:`Stage` of a Job (or of a stage name)."""
    name = job.stage if isinstance(job, JobId) else job
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}") from None


def is_complete(store: ResultsStore, campaign: Campaign, job: JobId, env: Mapping[str, str]) -> Completion:
    """``stage_of(job).is_complete(...)``: the one answer to "is this Job done?"."""
    return stage_of(job).is_complete(store, campaign, job, env)


def prerequisites(job: JobId) -> tuple[JobId, ...]:
    """Every earlier Job ``job`` needs done, earliest first (a window: setup, then its replica's steered MD)."""
    needed = []
    stage = stage_of(job)
    while stage.needs is not None:
        stage = _BY_NAME[stage.needs]
        needed.append(_producer(stage.name, job))
    return tuple(reversed(needed))
