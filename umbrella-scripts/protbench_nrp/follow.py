"""``run-umbrella-windows.py --follow``: one command takes a campaign from an empty bucket to its report.

The follower is a reconciler without state of its own. Every ``--poll``
seconds a pass reads the Jobs' states from the cluster (one ``kubectl get
jobs,pods`` through :class:`~protbench_nrp.backends.Backend`) and the
results (through a :class:`~protbench_nrp.store.ResultsStore`: the bucket, or
``LOCAL_RESULT_DIR`` with ``--skip-preflight``, as ``--relaunch`` reads them),
and decides per Job, in stage order:

* finished (the stage table's ``is_complete``): nothing to do;
* running or pending on the cluster: wait;
* never launched (no provenance, no Job): submitted once every input the
  stage table lists for it is in the results (an input directory: once the
  Job that writes it is finished), else it waits, or is blocked behind a
  failed Job it needs;
* failed by a ``FailJob`` rule (a blow-up, bad settings or inputs, rejected
  credentials): never relaunched; reported with the exit status's meaning
  and fix, once;
* failed for a reason a retry can fix (``BackoffLimitExceeded``), gone while
  its results are unfinished, Complete with unfinished results, or with a pod
  stuck on a lost node: relaunched as ``--relaunch`` does (old Job deleted,
  old provenance kept as ``NAME.attempt-K.yaml``, new one created), until it
  has had ``--max-attempts`` attempts. The attempts are counted from the
  provenance files, so a restarted follower counts the same.

Followers of one results tree take turns: a pass holds an exclusive lock
(:attr:`Campaign.follow_lock <protbench_nrp.layout.Campaign.follow_lock>`),
and a ``kubectl create`` answered AlreadyExists means another follower (of
another tree) got there first. Each action is printed on one line with its
time and reason, and appended as a JSON line to the campaign journal
(:attr:`Campaign.follow_journal <protbench_nrp.layout.Campaign.follow_journal>`),
which is uploaded after each pass that acted when the results are in the
bucket. The follower stops with status 0 once every Job is finished (after
running the analysis and writing the report), and with
:data:`~protbench_nrp.jobs.EXIT_STOPPED` and a summary once nothing more can
progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import click

from . import launcher
from .backends import Backend, ClusterBackend, Submitted
from .budget import GpuBudget
from .cluster import JobInfo, JobPhase, KubectlError, campaign_selector
from .files import write_new_file
from .jobs import (EXIT_OK, EXIT_STOPPED, CampaignConfig, ConfigError, JobSpec, LaunchSettings, build_jobs,
                   campaign_jobs)
from .layout import STAGES
from .manifest import to_yaml
from .stages import is_complete, prerequisites, stage_of
from .store import BucketStore, ResultsStore, StoreError

__all__ = ["follow", "Follower", "FollowSettings", "check_follow_options", "DEFAULT_POLL_S",
           "DEFAULT_MAX_ATTEMPTS"]

#: Seconds between passes unless ``--poll`` says otherwise.
DEFAULT_POLL_S = 120.0
#: Attempts a Job gets (its first launch included) unless ``--max-attempts`` says otherwise.
DEFAULT_MAX_ATTEMPTS = 4

#: Starts the note of a Job the GPU-hour budget holds back.
BUDGET_NOTE = "over the GPU-hour budget"

#: What a row of a pass can say of a Job; the summary counts them per stage in this order.
ROW_STATES = ("finished", "running", "pending", "waiting", "failed", "blocked")


@dataclass(frozen=True)
class FollowSettings:
    """``--poll``, ``--max-attempts`` and ``--max-gpu-hours`` (``None``: no budget)."""

    poll_s: float = DEFAULT_POLL_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_gpu_hours: float | None = None


@dataclass(frozen=True)
class Row:
    """What one pass made of one Job."""

    state: str
    note: str = ""


def check_follow_options(config: CampaignConfig, settings: FollowSettings, given: dict[str, bool]) -> None:
    """Refuse bad ``--follow`` input before anything is checked or submitted: a table of refusals.

    ``given`` says which of ``--replicas`` and ``--windows`` were given on the command line.
    """
    identity = stage_of(config.stage).identity if config.stage in STAGES else ()
    refusals = [
        (not settings.poll_s > 0, f"--poll {settings.poll_s:g} must be a number of seconds above 0 "
                                  f"(default {DEFAULT_POLL_S:g}); give e.g. --poll 120"),
        (not settings.max_attempts >= 1, f"--max-attempts {settings.max_attempts} must be at least 1 (default "
                                         f"{DEFAULT_MAX_ATTEMPTS}: the first launch and 3 relaunches)"),
        (settings.max_gpu_hours is not None and not settings.max_gpu_hours > 0,
         f"--max-gpu-hours {settings.max_gpu_hours or 0:g} must be a number of GPU-hours above 0; give e.g. "
         f"--max-gpu-hours 500, or leave it out for no budget"),
        (given.get("replicas", False) and "replica" not in identity,
         f"--replicas names no Job of stage {config.stage} (it has none); drop --replicas, or follow "
         f"--stage steered or window"),
        (given.get("windows", False) and "window" not in identity,
         f"--windows names no Job of stage {config.stage} (only the window stage has windows); drop "
         f"--windows, or follow --stage window"),
    ]
    problems = [message for failed, message in refusals if failed]
    if problems:
        raise ConfigError("--follow cannot start:\n  - " + "\n  - ".join(problems))


# -- the journal --------------------------------------------------------------------------

class Journal:
    """Each action on one line of the terminal and one JSON line of the campaign journal."""

    def __init__(self, path: Path, relative: PurePosixPath, store: ResultsStore, echo=click.echo):
        self.path = path
        self.relative = relative
        self.store = store
        self.echo = echo
        self.dirty = False

    def record(self, action: str, job: str, reason: str, **numbers) -> None:
        now = time.time()
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)), "action": action,
                 "job": job, "reason": reason, **numbers}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as journal:
            journal.write(json.dumps(entry) + "\n")  # one write per line: two followers' lines never mix
        self.dirty = True
        self.echo(f"{time.strftime('%H:%M:%S', time.localtime(now))} {action:<9} {job}: {reason}")

    def upload(self) -> None:
        """Copy the journal to the bucket, when the results are there (a failure is said, not fatal)."""
        if not self.dirty or not isinstance(self.store, BucketStore):
            return
        try:
            self.store.write_bytes(self.relative, self.path.read_bytes(), "application/x-ndjson")
            self.dirty = False
        except (StoreError, OSError) as error:
            self.echo(f"warning: the journal was not uploaded this pass ({error}); it is kept in {self.path}",
                      err=True)


# -- the reconciler ------------------------------------------------------------------------

class Follower:
    """Passes over a campaign's Jobs until all are finished or nothing more can progress.

    Parameters
    ----------
    config : CampaignConfig
        As pinned by the launch's checks; ``local_result_dir`` holds the provenance.
    jobs, manifests : list
        Every Job the selection needs, every stage, in stage order, and its manifest.
    backend : Backend
    store : ResultsStore
        Where the results are read (the bucket, or the local results tree).
    settings : FollowSettings
    """

    def __init__(self, config: CampaignConfig, jobs: list[JobSpec], manifests: list[dict], backend: Backend,
                 store: ResultsStore, settings: FollowSettings, echo=click.echo, sleep=time.sleep):
        self.config = config
        self.campaign = config.campaign
        self.jobs = jobs
        self.manifests = {job.name: manifest for job, manifest in zip(jobs, manifests)}
        self.by_id = {job.id: job for job in jobs}
        self.backend = backend
        self.store = store
        self.settings = settings
        self.echo = echo
        self.sleep = sleep
        self.root = Path(config.local_result_dir)
        self.journal = Journal(self.root / self.campaign.follow_journal, self.campaign.follow_journal, store, echo)
        # Finished stays finished while this process runs (its settings cannot change under it): a
        # memo, not state, so a pass asks the results only about Jobs not yet seen finished.
        self.finished: set[str] = set()
        self.reported: set[tuple[str, str]] = set()
        self.budget = (GpuBudget(settings.max_gpu_hours, store, self.campaign, jobs)
                       if settings.max_gpu_hours is not None else None)
        self.active: set[str] = set()

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> int:
        passes = 0
        try:
            while True:
                passes += 1
                with self._turn():
                    rows, acted = self.one_pass()
                self.journal.upload()
                if rows is None:  # the cluster or the results could not be read: try again later
                    self.sleep(self.settings.poll_s)
                    continue
                self.echo(f"pass {passes}: {summary_line(self.jobs, rows)}")
                if all(row.state == "finished" for row in rows.values()):
                    self.journal.record("done", self.campaign.name, f"all {len(rows)} Jobs finished")
                    self.journal.upload()
                    return self.analyse()
                if not acted and not any(row.state in ("running", "pending") for row in rows.values()):
                    return self.stop(rows)
                self.sleep(self.settings.poll_s)
        except KeyboardInterrupt:
            self.echo("--follow stopped (Ctrl-C); the Jobs on the cluster run on. Run it again to pick up "
                      "where it is: everything it needs is on the cluster and in the results.", err=True)
            return 130

    @contextlib.contextmanager
    def _turn(self):
        """Hold the campaign's follow lock for one pass: followers of one results tree take turns."""
        path = self.root / self.campaign.follow_lock
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def one_pass(self) -> tuple[dict[str, Row] | None, bool]:
        """Read the states once, judge every Job in stage order, act; ``(rows, whether it acted)``."""
        try:
            states = self.backend.read_states()
        except KubectlError as error:
            self.echo(f"{time.strftime('%H:%M:%S')} cannot read the cluster this pass ({error}); trying again "
                      f"in {self.settings.poll_s:g} s", err=True)
            return None, False
        rows: dict[str, Row] = {}
        acted = False
        listings: dict[PurePosixPath, dict[str, int]] = {}
        self.active = {name for name, info in states.items() if info.phase in (JobPhase.RUNNING, JobPhase.PENDING)}
        if self.budget is not None:
            self.budget.new_pass()
        try:
            for job in self.jobs:
                row, did = self.judge(job, states.get(job.name), rows, listings)
                rows[job.name] = row
                acted = acted or did
        except StoreError as error:
            self.echo(f"{time.strftime('%H:%M:%S')} cannot read the results this pass ({error}); trying again "
                      f"in {self.settings.poll_s:g} s", err=True)
            return None, acted
        return rows, acted

    # -- one Job -------------------------------------------------------------------------
    def judge(self, job: JobSpec, info: JobInfo | None, rows: dict[str, Row],
              listings: dict) -> tuple[Row, bool]:
        phase = info.phase if info is not None else JobPhase.GONE
        if job.name in self.finished:
            return Row("finished"), False
        if phase in (JobPhase.RUNNING, JobPhase.PENDING):
            return Row(phase.value), False
        completion = is_complete(self.store, self.campaign, job.id, job.env)
        if completion.done:
            self.finished.add(job.name)
            return Row("finished"), False
        attempts = self.attempts(job)
        if phase is JobPhase.GONE and attempts == 0:
            blockers = [self.by_id[p].name for p in prerequisites(job.id)
                        if p in self.by_id and rows[self.by_id[p].name].state in ("failed", "blocked")]
            if blockers:
                return Row("blocked", f"behind {', '.join(blockers)}"), False
            missing = self.missing_inputs(job, rows, listings)
            if missing:
                return Row("waiting", f"needs {missing}"), False
            held, why = self.within_budget(job)
            if held is not None:
                return held, False
            return self.submit(job, f"its inputs are in the results{why}"), True
        if phase is JobPhase.FAILED_FATAL:
            self.report_once(job, "failed", f"{info.failure}; a FailJob failure is never relaunched by "
                                            f"--follow: fix the cause, --relaunch it, and --follow again")
            return Row("failed", info.failure), False
        reason = {
            JobPhase.FAILED_RETRYABLE: f"its Job failed ({info.failure if info else ''})",
            JobPhase.GONE: "its Job is gone (deleted, TTL or lost) while its results are unfinished",
            JobPhase.SUCCEEDED: f"its Job is Complete but its results are not: {completion.reason}",
            JobPhase.NODE_LOST: "its pod is stuck on a lost node: " + ", ".join(
                f"{pod.name} on {pod.node}, terminating for {pod.pending_s / 60:.0f} min"
                for pod in (info.lost_pods if info else ())),
        }[phase]
        if attempts >= self.settings.max_attempts:
            self.report_once(job, "gave-up", f"{reason}; it has had {attempts} attempts, the cap "
                                             f"(--max-attempts {self.settings.max_attempts})")
            return Row("failed", f"{attempts} attempts; {reason}"), False
        held, why = self.within_budget(job)
        if held is not None:
            return held, False
        return self.relaunch(job, info, phase, reason + why, attempts), True

    def within_budget(self, job: JobSpec) -> tuple[Row | None, str]:
        """``(None, the budget's numbers)`` when ``--max-gpu-hours`` lets ``job`` go (or there is no
        budget), else the Row that holds it back; the journal says each hold once, with its numbers."""
        if self.budget is None:
            return None, ""
        decision = self.budget.decide(job, self.finished, self.active)
        if decision.allowed:
            return None, f"; budget: {decision.reason}"
        self.report_once(job, "budget", f"not submitted: {decision.reason}")
        return Row("waiting", f"{BUDGET_NOTE}: {decision.reason}"), ""

    def attempts(self, job: JobSpec) -> int:
        """Launches of ``job`` so far, from its provenance: the current file and the archived attempts."""
        current = (self.root / job.provenance_path).exists()
        return len(launcher.attempt_paths(job, self.config)) + int(current)

    def missing_inputs(self, job: JobSpec, rows: dict[str, Row], listings: dict) -> str:
        """The first of the stage table's inputs of ``job`` not in the results yet, or ``""``.

        A directory input is there once the Job that writes it is finished; a
        file, once its directory's listing (one per directory and pass) has it
        not empty.
        """
        for needed in stage_of(job.id).inputs(self.campaign, job.id):
            if needed.path.endswith("/"):
                producer = self.by_id.get(needed.producer)
                done = (rows.get(producer.name, Row("")).state == "finished" if producer is not None else
                        is_complete(self.store, self.campaign, needed.producer, job.env).done)
                if not done:
                    return f"{needed.path} ({needed.producer.describe()})"
                continue
            path = PurePosixPath(needed.path)
            if path.parent not in listings:
                listings[path.parent] = self.store.sizes(path.parent)
            if not listings[path.parent].get(path.name):
                return f"{needed.path} ({needed.producer.describe()})"
        return ""

    # -- actions -----------------------------------------------------------------------
    def submit(self, job: JobSpec, reason: str) -> Row:
        path = self.root / job.provenance_path
        try:
            write_new_file(path, to_yaml(self.manifests[job.name]))
        except FileExistsError:  # another follower of this tree wrote it between our passes
            return Row("pending", "submitted by another follower")
        except OSError as error:
            self.journal.record("error", job.name, f"could not write {path}: {error}")
            return Row("waiting", str(error))
        return self._create(job, path, "submit", reason, attempt=1)

    def relaunch(self, job: JobSpec, info: JobInfo | None, phase: JobPhase, reason: str, attempts: int) -> Row:
        path = self.root / job.provenance_path
        failure = launcher.replace_old(job, phase.state, path, self.config,
                                       lambda: self.backend.delete(info))
        if failure:
            self.journal.record("error", job.name, f"relaunch failed: {failure}")
            return Row("waiting", failure)
        try:
            write_new_file(path, to_yaml(self.manifests[job.name]))
        except OSError as error:
            self.journal.record("error", job.name, f"could not write {path}: {error}")
            return Row("waiting", str(error))
        return self._create(job, path, "relaunch", reason, attempt=attempts + 1)

    def _create(self, job: JobSpec, path: Path, action: str, reason: str, attempt: int) -> Row:
        try:
            outcome = self.backend.submit(path, job.name)
        except KubectlError as error:
            kept = launcher._mark_failed(path, str(error))
            self.journal.record("error", job.name, f"kubectl create failed: {error}; manifest kept as {kept}")
            return Row("waiting", str(error))
        if outcome is Submitted.EXISTS:
            kept = launcher._mark_failed(path, "AlreadyExists: another follower created this Job first")
            self.journal.record("exists", job.name, f"another follower created it first (its manifest here is "
                                                    f"kept as {kept.name})")
            return Row("pending", "submitted by another follower")
        self.journal.record(action, job.name, f"{reason} (attempt {attempt} of {self.settings.max_attempts})",
                            attempt=attempt)
        return Row("pending")

    def report_once(self, job: JobSpec, action: str, reason: str) -> None:
        if (job.name, action) not in self.reported:
            self.reported.add((job.name, action))
            self.journal.record(action, job.name, reason)

    # -- the end -----------------------------------------------------------------------
    def stop(self, rows: dict[str, Row]) -> int:
        held = sum(row.note.startswith(BUDGET_NOTE) for row in rows.values())
        if held:
            self.echo(f"--follow stops: the GPU-hour budget (--max-gpu-hours {self.settings.max_gpu_hours:g}) "
                      f"is spent: {held} Jobs not submitted. Raise it and --follow again to go on.", err=True)
        self.echo(f"--follow stops: nothing more can progress. {summary_line(self.jobs, rows)}", err=True)
        for job in self.jobs:
            row = rows[job.name]
            if row.state in ("failed", "blocked", "waiting"):
                self.echo(f"  {row.state:<8} {job.id.describe()} ({job.name}): {row.note}", err=True)
        failed = sum(row.state == "failed" for row in rows.values())
        blocked = sum(row.state in ("blocked", "waiting") for row in rows.values())
        budget = f" ({held} held back by --max-gpu-hours {self.settings.max_gpu_hours:g})" if held else ""
        self.journal.record("stop", self.campaign.name, f"nothing more can progress: {failed} failed, "
                                                        f"{blocked} blocked or waiting{budget}")
        self.journal.upload()
        return EXIT_STOPPED

    def analyse(self) -> int:
        """Run ``analyze-umbrella-windows.py --report`` on the finished campaign, reading where the
        follower read; its status is the follower's."""
        if not any(job.stage == "window" for job in self.jobs):
            return EXIT_OK
        script = Path(__file__).resolve().parents[1] / "analyze-umbrella-windows.py"
        replicas = sorted({job.replica for job in self.jobs if job.stage == "window"})
        command = [sys.executable, str(script), "--target", self.config.target, "--ff", self.config.ff,
                   "-o", str(self.root), "--report", *[arg for r in replicas for arg in ("-r", str(r))]]
        if isinstance(self.store, BucketStore):
            command += ["--bucket", self.config.bucket, "--rclone-remote", self.config.rclone_remote]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROTBENCH_")}
        self.echo(f"all Jobs finished; analysing: {' '.join(command[1:])}")
        done = subprocess.run(command, env=env, check=False)
        if done.returncode != 0:
            self.echo(f"the analysis failed (exit {done.returncode}); run it again with the command above",
                      err=True)
        return done.returncode


def summary_line(jobs: list[JobSpec], rows: dict[str, Row]) -> str:
    """``setup: 1 finished | steered: 1 running | window: 2 waiting, 1 pending``."""
    parts = []
    for stage in STAGES:
        states = [rows[job.name].state for job in jobs if job.stage == stage and job.name in rows]
        if states:
            counts = ", ".join(f"{states.count(s)} {s}" for s in ROW_STATES if states.count(s))
            parts.append(f"{stage}: {counts}")
    return " | ".join(parts)


# -- the entry point -----------------------------------------------------------------------

def select_campaign(config: CampaignConfig, commit: str) -> list[JobSpec]:
    """The selection's Jobs and every earlier stage's they need: what a follower takes on."""
    return campaign_jobs(build_jobs(config, commit), config)


def follow(config: CampaignConfig, settings: LaunchSettings, follow_settings: FollowSettings) -> int:
    """Every check of a launch, then passes until the campaign is finished or stuck.

    The Jobs are the selection's and every earlier stage's they need
    (:func:`~protbench_nrp.jobs.campaign_jobs`).

    Raises
    ------
    LaunchRefused, TemplateError, GitCheckError
        When a check fails; nothing has been written or submitted then.
    """
    ready = launcher.prepare(config, settings, select=select_campaign, verb="Following")
    store = launcher.results_reader(ready.config, settings)
    backend = ClusterBackend(ready.kubectl, campaign_selector(ready.config))
    click.echo(f"Following {len(ready.jobs)} Jobs of {ready.config.campaign.name} at commit {ready.commit[:12]} "
               f"(pushed to {ready.remote.name}), every {follow_settings.poll_s:g} s, up to "
               f"{follow_settings.max_attempts} attempts a Job; results read from {store.location}")
    return Follower(ready.config, ready.jobs, ready.manifests, backend, store, follow_settings).run()
