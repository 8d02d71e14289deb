"""One table for a whole campaign: where every window stands, and which are in trouble.

Gathering and rendering are apart so each can be checked on its own:

* :func:`protbench_nrp.cluster.query_cluster` asks kubectl for a
  :class:`~protbench_nrp.cluster.ClusterJob` per Job, and says why when the
  cluster cannot be reached.
* :func:`read_all_progress` reads each window's
  :class:`~protbench_nrp.records.Progress` record through a
  :class:`~protbench_nrp.store.ResultsStore` (a results root or the S3
  bucket; that small JSON object only, never a trajectory), and each Job's
  :class:`~protbench_nrp.stages.Completion` from the stage table: the one
  definition of "done" (``--relaunch`` and ``--local`` ask the same).
* :func:`gather_status` combines both into a :class:`WindowStatus` per Job,
  :func:`campaign_totals` sums them up, :func:`render_status` draws the table.
* :func:`read_all_run_records` reads the run record each pod leaves
  (:mod:`~protbench_nrp.runrecord`); :mod:`~protbench_nrp.usage` turns them
  into pods, GPU, GPU-hours spent and lost, and NRP usage flags per window.
* :func:`show_status` is what ``run-umbrella-windows.py --status`` calls.

A window is *stalled* when its progress record is older than
:func:`stall_threshold_s`: 30 minutes, or three times the wall time between
two updates when that is longer (a slow system, or progress that only
reaches the bucket with the pod's periodic uploads).

What the cluster hides is said too: a pod whose deletion has been pending
longer than its grace period plus :data:`cluster.NODE_LOST_AFTER_S` is on a lost node
(``node lost?``, with :data:`NODE_LOST_RUNBOOK`); a window launched before
(its provenance exists) with no Job and unfinished results is ``lost`` (its
Job failed and went with ``ttlSecondsAfterFinished``, or was deleted), with
the ``--relaunch`` command; a Failed Job says which rule or exit status
failed it, and what that means (:mod:`protbench_nrp.exits`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath

from . import science, usage
from .cluster import ClusterView, LostPod, campaign_selector, query_cluster
from .jobs import CampaignConfig, JobSpec
from .layout import Campaign, window_tag
from .records import Progress
from .stages import FINISHED_PHASE, Completion, is_complete, stage_of, window_record_complete
from .store import BucketStore, LocalStore, ResultsStore, StoreError

#: A window whose progress is older than this (and than STALL_UPDATES updates) is stalled.
STALL_AFTER_S = 30 * 60.0
#: How many of ``--follow``'s last actions (its campaign journal) are shown under the table.
FOLLOW_ACTIONS_SHOWN = 5
STALL_UPDATES = 3
#: Minutes between a pod's uploads to the bucket when PROTBENCH_SYNC_MINUTES is
#: not set (the default of umbrella-scripts/pod/run-job.sh).
POD_SYNC_MINUTES = 30.0

#: Window states, in the order the totals list them.
STATES = ("finished", "running", "starting", "stalled", "pending", "failed", "blew-up", "node lost?", "lost",
          "missing", "unreadable")
_STYLES = {"finished": "green", "running": "cyan", "starting": "cyan", "stalled": "bold red",
           "pending": "yellow", "failed": "bold red", "blew-up": "bold red", "node lost?": "bold red",
           "lost": "bold red", "missing": "dim", "unreadable": "bold red"}

#: What to do about it (docs/failures.md: "A lost node").
NODE_LOST_RUNBOOK = ("confirm its node is NotReady (kubectl get node {node}), then kubectl delete pod --force "
                     "--grace-period=0 {pod}: the Job then starts a new pod, which resumes from the bucket. "
                     "A node that is only partitioned may still upload when it comes back")

#: Where show_status reads progress when its caller does not say: "local" or "bucket".
SOURCE_ENV = "PROTBENCH_STATUS_SOURCE"

#: Records read at once (from the bucket each is a round trip).
READ_THREADS = 8

#: Read errors printed under the table; the rest are counted.
MAX_ERRORS_SHOWN = 5

EXIT_OK = 0
EXIT_BAD_INPUT = 2


# -- progress records ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressReading:
    """A window's progress record, ``None`` when absent, or why it could not be read.

    ``completion`` is the stage table's answer for the Job
    (:func:`protbench_nrp.stages.is_complete`): for setup and steered MD from
    their outputs, for a window from the record read here. ``None`` when
    there was nothing to judge (no window record) or the reading was made
    without the table.
    """

    progress: Progress | None
    error: str = ""
    completion: Completion | None = None


def _parse_progress(text: str, where: str) -> ProgressReading:
    try:
        return ProgressReading(Progress.parse(text, where))
    except ValueError as error:
        return ProgressReading(None, str(error))


def read_progress(store: ResultsStore, relative: PurePosixPath) -> ProgressReading:
    """The progress record at ``relative``: absent, parsed, or why it could not be read."""
    try:
        text = store.read_text(relative)
    except StoreError as error:
        return ProgressReading(None, str(error))
    if text is None:
        return ProgressReading(None)
    return _parse_progress(text, store.describe(relative))


def read_job_progress(store: ResultsStore, campaign: Campaign, job: JobSpec) -> ProgressReading:
    """What the results say about one Job: a window's progress record and whether the stage
    table calls it done, or the table's answer for setup and steered MD (from their outputs,
    with one listing); a read failure is the reading's error."""
    if job.stage == "window":  # the one stage whose done-check reads its record
        reading = read_progress(store, campaign.window_files(job.replica, job.window).progress)
        if reading.progress is None:
            return reading
        return dataclasses.replace(reading, completion=window_record_complete(campaign, job.id, job.env,
                                                                              reading.progress))
    try:
        completion = is_complete(store, campaign, job.id, job.env)
    except StoreError as error:
        return ProgressReading(None, str(error))
    record = stage_of(job.stage).progress_file(campaign, job.id)
    if completion.done or record is None:
        return ProgressReading(None, completion=completion)
    # Unfinished steered MD: its record says how far the pull has got (setup keeps none).
    return dataclasses.replace(read_progress(store, record), completion=completion)


def read_all_progress(store: ResultsStore, campaign: Campaign, jobs: list[JobSpec]) -> dict[str, ProgressReading]:
    """Each Job's progress by Job name (:func:`read_job_progress`); the bucket is asked a few keys at a time."""
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return dict(zip((job.name for job in jobs), pool.map(lambda job: read_job_progress(store, campaign, job),
                                                             jobs)))


def read_run_records(store: ResultsStore, directory: PurePosixPath) -> tuple[list[dict], list[str]]:
    """The run records (``*.json``) directly in ``directory``, and why any could not be read."""
    records, errors = [], []
    try:
        names = [name for name in store.list(directory) if name.endswith(".json")]
    except StoreError as error:
        return [], [str(error)]
    for name in names:
        where = store.describe(directory / name)
        try:
            text = store.read_text(directory / name)
        except StoreError as error:
            errors.append(str(error))
            continue
        if text is None:  # a directory named *.json, or gone since the listing
            continue
        try:
            payload = json.loads(text)
        except ValueError as error:
            errors.append(f"{where}: not JSON ({error})")
            continue
        if isinstance(payload, dict) and payload.get("kind") == "run-record":
            records.append(payload)
        else:
            errors.append(f"{where}: not a run record")
    return records, errors


def read_all_run_records(store: ResultsStore, campaign: Campaign,
                         jobs: list[JobSpec]) -> dict[str, tuple[list[dict], list[str]]]:
    """Each Job's pods' run records (and read errors) by Job name, a few Jobs at a time."""
    def one(job: JobSpec):
        return read_run_records(store, campaign.run_records_dir(job.stage, job.replica, job.window))

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return dict(zip((job.name for job in jobs), pool.map(one, jobs)))


def with_usage(rows: list["WindowStatus"], records: dict[str, tuple[list[dict], list[str]]]) -> list["WindowStatus"]:
    """``rows`` with each Job's pods, current GPU, GPU-hours and NRP usage flags from its run records."""
    updated = []
    for row in rows:
        found, errors = records.get(row.name, ([], []))
        if not found and not errors:
            updated.append(row)
            continue
        summed = usage.window_usage(found)
        note = "; ".join(part for part in (row.note, *(f"NRP usage: {flag}" for flag in summed.flags)) if part)
        error = "; ".join(part for part in (row.error, *errors) if part)
        updated.append(dataclasses.replace(
            row, pods=summed.pods, gpu=summed.current_gpu or "", usage_flags=summed.flags,
            gpu_hours=summed.gpu_hours, lost_gpu_hours=summed.lost_gpu_hours, note=note, error=error))
    return updated


# -- one row per Job ----------------------------------------------------------------------------


def _env_float(job: JobSpec, name: str, default: float) -> float:
    try:
        return float(job.env.get(name, default))
    except (TypeError, ValueError):
        return float(default)


def stall_threshold_s(job: JobSpec, progress: Progress, bucket: bool = False) -> float:
    """Seconds without an update after which a window counts as stalled.

    The window rewrites its progress every frame, so the expected gap is one
    frame's wall time at its current speed. The bucket hears of it only at
    the pod's periodic uploads (``PROTBENCH_SYNC_MINUTES``), so from there
    the gap is at least that; with no periodic upload a stall cannot be told
    from the bucket at all (infinite threshold).
    """
    frame_ps = progress.frame_ps
    if frame_ps is None:  # a record written before records carried it
        frame_ps = (_env_float(job, "PROTBENCH_EQUIL_FRAME", science.EQUIL_FRAME_PS)
                    if progress.phase == "equilibration"
                    else _env_float(job, "PROTBENCH_FRAME", science.FRAME_PS))
    interval_s = (frame_ps / 1000.0 / progress.ns_per_day * 86400.0
                  if progress.ns_per_day > 0 else 0.0)
    if bucket:
        sync_minutes = _env_float(job, "PROTBENCH_SYNC_MINUTES", POD_SYNC_MINUTES)
        if sync_minutes <= 0:
            return math.inf
        interval_s = max(interval_s, 60.0 * sync_minutes)
    return max(STALL_AFTER_S, STALL_UPDATES * interval_s)


def eta_s(job: JobSpec, progress: Progress) -> float | None:
    """Wall seconds until the window finishes at its current speed (equilibration included)."""
    if progress.ns_per_day <= 0:
        return None
    if progress.timestep_fs is None and job.stage != "window":
        return None  # the fallback below knows a window's phases only
    if progress.timestep_fs is not None and progress.steps_after_phase is not None:
        # What the window runs with: the same wall time per step in every phase.
        steps = max(progress.total_steps - progress.step, 0) + progress.steps_after_phase
        return steps * progress.timestep_fs * 1e-6 / progress.ns_per_day * 86400.0
    # A record written before records carried the timestep: re-derive it from the Job's environment.
    timestep_fs = _env_float(job, "PROTBENCH_TIMESTEP", science.TIMESTEP_FS)
    remaining_steps = max(progress.total_steps - progress.step, 0)
    if progress.phase == "equilibration":
        equil_fs = _env_float(job, "PROTBENCH_EQUIL_TIMESTEP", science.EQUIL_TIMESTEP_FS)
        equil_days = remaining_steps * equil_fs * 1e-6 / progress.ns_per_day
        # Same wall time per step in production, but each step covers more time.
        production_ns = _env_float(job, "PROTBENCH_PRODUCTION_LENGTH", science.PRODUCTION_LENGTH_NS)
        production_days = production_ns / (progress.ns_per_day * timestep_fs / equil_fs)
        return (equil_days + production_days) * 86400.0
    return remaining_steps * timestep_fs * 1e-6 / progress.ns_per_day * 86400.0


@dataclass(frozen=True)
class WindowStatus:
    """Everything the table shows about one Job.

    Attributes
    ----------
    state : str
        One of :data:`STATES`.
    job_state : str
        Kubernetes' view (:attr:`ClusterJob.state`, ``"no Job"``), or ``"?"``
        when the cluster was not read.
    age_s : float or None
        Seconds since the progress record was last written.
    eta_s : float or None
        Wall seconds left at the current speed.
    """

    name: str
    stage: str
    replica: int | None
    window: int | None
    state: str
    job_state: str
    job_detail: str = ""
    phase: str = ""
    step: int | None = None
    total_steps: int | None = None
    ns_per_day: float | None = None
    eta_s: float | None = None
    age_s: float | None = None
    stall_after_s: float | None = None
    restarts: int | None = None
    note: str = ""
    error: str = ""  # full text of a read error, printed under the table
    # From the pods' run records (with_usage); None/empty when none was read.
    pods: int | None = None
    gpu: str = ""
    usage_flags: tuple[str, ...] = ()
    gpu_hours: float | None = None
    lost_gpu_hours: float | None = None


def record_finished(reading: ProgressReading) -> bool:
    """Whether ``reading`` shows its Job done: the stage table's answer whenever it has one.

    A window whose settings this machine cannot read is not done, as
    ``--local`` and ``--relaunch`` judge it; its row says why
    (:func:`settings_note`). Only a reading made without the table (a caller
    that read the record itself) is judged by its record: a ``finished`` one.
    """
    if reading.completion is not None:
        return reading.completion.done
    return reading.progress is not None and reading.progress.phase == FINISHED_PHASE


def settings_note(reading: ProgressReading) -> str:
    """What a row says when its record says finished but the table cannot read the window's settings."""
    completion = reading.completion
    if completion is None or completion.settings_read or reading.progress is None \
            or reading.progress.phase != FINISHED_PHASE:
        return ""
    return f"finished by its record; its settings cannot be read here: {completion.reason}"


def complete_but_not_done_note(job: JobSpec, reading: ProgressReading) -> str:
    """What a row says when Kubernetes calls its Job Complete but the stage table does not call it done."""
    reason = reading.completion.reason if reading.completion is not None else (
        f"{job.id.describe()} has no progress record")
    # --relaunch refuses a Complete Job; --extend replaces it and resumes from what is in the results.
    return f"Job Complete, but its results are not: {reason}; replace it with {relaunch_command(job, extend=True)}"


def node_lost_note(pod: LostPod) -> str:
    """What the table says of a pod stuck terminating, with :data:`NODE_LOST_RUNBOOK`."""
    return (f"pod {pod.name} on node {pod.node} has been terminating for "
            f"{format_duration(pod.pending_s)} (grace period {format_duration(pod.grace_s)}): "
            + NODE_LOST_RUNBOOK.format(node=pod.node, pod=pod.name))


def relaunch_command(job: JobSpec, extend: bool = False) -> str:
    """The launcher command that replaces ``job``'s Job (``extend``: a Complete one, with ``--extend``)."""
    command = f"./run-umbrella-windows.py {'--extend' if extend else '--relaunch'} --stage {job.stage}"
    if job.replica is not None:
        command += f" --replicas {job.replica}"
    if job.window is not None:
        command += f" --windows {job.window}"
    return command


def window_status(job: JobSpec, reading: ProgressReading | None, cluster: ClusterView,
                  now: float, bucket: bool = False, launched: bool | None = None) -> WindowStatus:
    """Classify one Job from its progress record and, when known, its Kubernetes state.

    ``launched`` says whether the Job's provenance exists (``None``: unknown);
    a launched Job with no Job on the cluster and unfinished results is lost.
    """
    row = _plain_window_status(job, reading, cluster, now, bucket)
    kube = cluster.jobs.get(job.name) if cluster.reachable else None
    if row.state in ("finished", "unreadable"):
        return row
    if kube is not None and kube.lost_pods:
        return dataclasses.replace(row, state="node lost?", note="; ".join(map(node_lost_note, kube.lost_pods)))
    if kube is not None and kube.state == "Failed" and kube.failure:
        return dataclasses.replace(row, note=f"{kube.failure}; then {relaunch_command(job)}")
    if cluster.reachable and kube is None and launched:
        return dataclasses.replace(row, state="lost", note=f"launched, but no Job on the cluster and unfinished "
                                                           f"results: {relaunch_command(job)}")
    return row


def _plain_window_status(job: JobSpec, reading: ProgressReading | None, cluster: ClusterView,
                         now: float, bucket: bool = False) -> WindowStatus:
    known = cluster.reachable
    kube = cluster.jobs.get(job.name) if known else None
    job_state = "?" if not known else (kube.state if kube else "no Job")
    base = dict(name=job.name, stage=job.stage, replica=job.replica, window=job.window,
                job_state=job_state, job_detail=kube.detail if kube else "",
                restarts=kube.restarts_total if kube else None)
    reading = reading or ProgressReading(None)
    progress = reading.progress
    if reading.error:
        return WindowStatus(state="unreadable", note="progress record unreadable (see below)",
                            error=reading.error, **base)
    if progress is None:
        if record_finished(reading):
            return WindowStatus(state="finished", **base)
        if kube is not None and kube.state == "Complete":
            # The table wins over Kubernetes: outputs missing or empty, or a record never made or lost.
            return WindowStatus(state="failed", note=complete_but_not_done_note(job, reading), **base)
        if kube is not None and kube.state == "Failed":
            return WindowStatus(state="failed", **base)
        if kube is not None and kube.state == "Running":
            return WindowStatus(state="starting", note="no progress record yet", **base)
        if kube is not None and kube.state in ("Pending", "Waiting", "Suspended"):
            return WindowStatus(state="pending", **base)
        return WindowStatus(state="missing", **base)

    age = max(now - progress.updated_unix, 0.0)
    threshold = stall_threshold_s(job, progress, bucket)
    finished = record_finished(reading)
    details = dict(phase=progress.phase, step=progress.step, total_steps=progress.total_steps,
                   ns_per_day=progress.ns_per_day, age_s=age, stall_after_s=threshold)
    if finished:
        return WindowStatus(state="finished", eta_s=0.0, **details, **base)
    if progress.phase == "blew-up":
        # engine.EXIT_BLOWN_UP: the Job fails and is not restarted; the log says what to try.
        return WindowStatus(state="blew-up", note=f"blew up after {progress.recoveries} "
                            f"recoveries; outputs end at step {progress.step} (see its log)",
                            **details, **base)
    if kube is not None and kube.state == "Failed":
        return WindowStatus(state="failed", **details, **base)
    if kube is not None and kube.state in ("Pending", "Waiting", "Suspended"):
        # Not running now, whatever the last pod managed: waiting for a node or a restart.
        return WindowStatus(state="pending", **details, **base)
    if kube is not None and kube.state == "Complete":
        # The table wins over Kubernetes: nothing runs it on until it is replaced.
        return WindowStatus(state="failed", note=complete_but_not_done_note(job, reading), **details, **base)
    note = settings_note(reading)
    if not note and progress.phase == FINISHED_PHASE and reading.completion is not None:
        # Its record says finished but the stage table does not (a longer production asked since).
        note = reading.completion.reason
    if progress.recoveries:
        note = "; ".join(filter(None, [note, f"recovered from {progress.recoveries} blow-up(s)"]))
    if age > threshold:
        note = note or f"no progress for {format_duration(age)}"
        if known and kube is None:
            note += "; no Job on the cluster: relaunch it"
        return WindowStatus(state="stalled", note=note, **details, **base)
    return WindowStatus(state="running", eta_s=eta_s(job, progress), note=note, **details, **base)


def gather_status(jobs: list[JobSpec], campaign: Campaign, progress: dict[str, ProgressReading],
                  cluster: ClusterView, now: float, bucket: bool = False,
                  launched: set[str] | None = None) -> list[WindowStatus]:
    """One :class:`WindowStatus` per Job, in the order given.

    ``launched``: names of the Jobs whose provenance exists (``None``: unknown).
    """
    return [window_status(job, progress.get(job.name), cluster, now, bucket,
                          None if launched is None else job.name in launched) for job in jobs]


def launched_jobs(jobs: list[JobSpec], config: CampaignConfig) -> set[str]:
    """Names of the Jobs launched before: their provenance file (or an archived attempt) exists."""
    def launched(job: JobSpec) -> bool:
        root = config.local_result_dir
        return ((root / job.provenance_path).exists()
                or (root / config.campaign.manifest_attempt(job.stage, job.replica, job.window, 1)).exists())

    return {job.name for job in jobs if launched(job)}


@dataclass(frozen=True)
class CampaignTotals:
    """How many Jobs are in each state, and how fast the running ones go together."""

    counts: dict[str, int]
    ns_per_day: float
    total: int
    what: str = "windows"
    gpu_hours: float | None = None       # None: no run record was read
    lost_gpu_hours: float | None = None

    def line(self) -> str:
        always = ("finished", "running", "stalled", "missing")
        parts = [f"{self.counts.get(s, 0)} {s}" for s in always]
        parts += [f"{self.counts[s]} {s}" for s in STATES if s not in always and self.counts.get(s)]
        text = f"{self.total} {self.what}: {', '.join(parts)}; {self.ns_per_day:.1f} ns/day in all"
        if self.gpu_hours is not None:
            text += (f"; {self.gpu_hours:.1f} GPU-hours spent, {self.lost_gpu_hours:.1f} of them lost to "
                     f"work done again after restarts")
        return text


def campaign_totals(rows: list[WindowStatus]) -> CampaignTotals:
    counts = {state: 0 for state in STATES}
    for row in rows:
        # "starting" Jobs are running as far as anyone following the campaign cares.
        counts["running" if row.state == "starting" else row.state] += 1
    speed = sum(row.ns_per_day or 0.0 for row in rows if row.state == "running")
    what = "windows" if all(row.stage == "window" for row in rows) else "Jobs"
    recorded = [row for row in rows if row.gpu_hours is not None]
    if not recorded:
        return CampaignTotals(counts, speed, len(rows), what)
    return CampaignTotals(counts, speed, len(rows), what, sum(row.gpu_hours for row in recorded),
                          sum(row.lost_gpu_hours or 0.0 for row in recorded))


# -- rendering ---------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """``95`` -> ``"1m35s"``, ``90000`` -> ``"1d01h"``; empty for unknown."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _job_state_cell(row: WindowStatus) -> str:
    return row.job_state + (f" ({row.job_detail})" if row.job_detail else "")


def _done_cell(row: WindowStatus) -> str:
    return f"{100.0 * row.step / row.total_steps:.0f}%" if row.step is not None and row.total_steps else ""


def _updated_cell(row: WindowStatus) -> str:
    updated = f"{format_duration(row.age_s)} ago" if row.age_s is not None else ""
    return f"[bold red]{updated}[/]" if updated and row.state == "stalled" else updated


def _optional(value) -> str:
    return "" if value is None else str(value)


#: The table's columns: header, justification, the cell of a row (rich markup; texts from files
#: and kubectl escaped), and which tables have it: "cluster" for what only a cluster campaign
#: knows (Kubernetes' word, its restarts, the pods' run records), "local" for a --local
#: campaign's, whose one table holds every stage, "both" for the rest.
COLUMNS = (
    ("Job", "left", lambda row: _escape(row.name), "both"),
    ("stage", "left", lambda row: row.stage, "local"),
    ("R", "right", lambda row: _optional(row.replica), "both"),
    ("W", "right", lambda row: "" if row.window is None else window_tag(row.window), "both"),
    ("state", "left", lambda row: f"[{_STYLES[row.state]}]{row.state}[/]" if row.state in _STYLES else row.state,
     "both"),
    ("Kubernetes", "left", lambda row: _escape(_job_state_cell(row)), "cluster"),
    ("phase", "left", lambda row: _escape(row.phase), "both"),
    ("steps", "right", lambda row: f"{row.step}/{row.total_steps}" if row.step is not None else "", "both"),
    ("done", "right", _done_cell, "both"),
    ("ns/day", "right", lambda row: f"{row.ns_per_day:.1f}" if row.ns_per_day is not None else "", "both"),
    ("ETA", "right", lambda row: "done" if row.state == "finished" else format_duration(row.eta_s), "both"),
    ("updated", "right", _updated_cell, "both"),
    ("restarts", "right", lambda row: _optional(row.restarts), "cluster"),
    ("pods", "right", lambda row: _optional(row.pods), "cluster"),
    ("GPU", "left", lambda row: _escape(row.gpu), "cluster"),
    ("note", "left", lambda row: _escape(row.note), "both"),
)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def render_status(rows: list[WindowStatus], totals: CampaignTotals, title: str,
                  notes: list[str], console, local: bool = False) -> None:
    """Print the table, the totals line and any notes on a rich ``console``.

    ``local``: a ``--local`` campaign's table, with a stage column and none of
    the cluster's (``COLUMNS``).
    """
    from rich.markup import escape
    from rich.table import Table

    columns = [column for column in COLUMNS if column[3] in ("both", "local" if local else "cluster")]
    table = Table(title=title, title_justify="left")
    for header, justify, _cell, _tables in columns:
        table.add_column(header, justify=justify, no_wrap=header != "note")
    for row in rows:
        table.add_row(*(cell(row) for _header, _justify, cell, _tables in columns))
    console.print(table)
    console.print(escape(totals.line()))
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    failed = [row for row in rows if row.error]
    for row in failed[:MAX_ERRORS_SHOWN]:
        console.print(f"[red]error:[/] {escape(row.name)}: {escape(row.error)}", soft_wrap=True)
    if len(failed) > MAX_ERRORS_SHOWN:
        console.print(f"[red]error:[/] ... and {len(failed) - MAX_ERRORS_SHOWN} more Jobs alike")


def trouble_notes(rows: list[WindowStatus]) -> list[str]:
    """One note per kind of trouble the cluster would not tell: lost nodes, lost and failed Jobs."""
    notes = []
    for state, what in (("node lost?", ("Jobs with a pod stuck terminating on a node that may be lost; "
                                        "each row says what to do")),
                        ("lost", ("Jobs launched but gone from the cluster with unfinished results; "
                                  "replace them with the --relaunch command in each row")),
                        ("failed", ("Failed Jobs; each row says which rule or exit status failed it "
                                    "(docs/failures.md); fix the cause, then --relaunch"))):
        count = sum(row.state == state and not _complete_but_not_done(row) for row in rows)
        if count:
            notes.append(f"{count} {what}")
    unfinished = sum(map(_complete_but_not_done, rows))
    if unfinished:
        notes.append(f"{unfinished} Jobs Complete on the cluster whose results are not done; each row names "
                     f"what is missing and the --extend command that replaces the Job")
    return notes


def _complete_but_not_done(row: WindowStatus) -> bool:
    return row.state == "failed" and row.job_state == "Complete"


def _console():
    from rich.console import Console

    # A pipe or a log file gets a wide table instead of one squeezed to 80 columns.
    console = Console()
    return console if console.is_terminal else Console(width=240)


def show_status(jobs: list[JobSpec], config: CampaignConfig, *, use_kubectl: bool = True,
                source: str | None = None, local_command: str | None = None) -> int:
    """Print the status of ``jobs`` and return an exit status.

    Parameters
    ----------
    jobs : list of JobSpec
        The Jobs of the configured campaign (one row each).
    config : CampaignConfig
        Gives the campaign, the label selector and where results are.
    use_kubectl : bool
        Ask the cluster for Job and pod states; without it (or when kubectl
        is missing or fails) the table shows results only and says so.
    source : {"local", "bucket"}, optional
        Read progress records from ``config.local_result_dir`` or from
        ``config.bucket`` (credentials and endpoint as the launcher's
        preflight finds them, see :func:`protbench_nrp.s3.bucket_client`).
        When omitted, ``$PROTBENCH_STATUS_SOURCE``, else ``"local"``: so
        ``PROTBENCH_STATUS_SOURCE=bucket ./run-umbrella-windows.py --status``
        follows a cluster campaign without copying anything down.
    local_command : str, optional
        A ``--local`` campaign's (``--demo`` included): the command that runs
        it. Its results are read from ``config.local_result_dir``, the cluster
        is never asked (kubectl is not run at all), the table leaves out the
        cluster's columns, and a campaign with no results yet is one line
        saying so and naming this command.

    Returns
    -------
    int
        0 once the table is shown; 2 for an unknown ``source``, or a bucket
        source without a bucket or credentials, or whose bucket cannot be
        opened (no such bucket, refused keys, unreachable endpoint).
    """
    from rich.console import Console
    from rich.markup import escape

    console = _console()
    errors = Console(stderr=True, soft_wrap=True)
    local = local_command is not None
    if local:
        source = "local"
    elif source is None:
        source = os.environ.get(SOURCE_ENV, "").strip() or "local"
    if source not in ("local", "bucket"):
        errors.print(f"[red]error:[/] status source {source!r} is unknown; use 'local' or 'bucket' "
                     f"(e.g. {SOURCE_ENV}=bucket)")
        return EXIT_BAD_INPUT
    if source == "bucket":
        if not config.bucket:
            errors.print("[red]error:[/] reading status from the bucket needs BUCKET set in "
                         "run-umbrella-windows.py")
            return EXIT_BAD_INPUT
        from .s3 import S3AccessError, open_bucket, s3_access

        try:
            # One request first: a wrong BUCKET or refused keys are one clear refusal, not a table
            # of unreadable rows.
            client = open_bucket(s3_access(config.rclone_remote), config.bucket,
                                 f"check BUCKET ('{config.bucket}') in run-umbrella-windows.py")
            reader = BucketStore(client, config.bucket)
        except S3AccessError as error:
            errors.print(f"[red]error:[/] {error}")
            return EXIT_BAD_INPUT
    else:
        reader = LocalStore(config.local_result_dir)
    campaign = config.campaign
    notes = []
    empty = source == "local" and not reader.list(campaign.root)
    if empty and local:
        # Nothing to tabulate: a row of "missing" per Job would hide the one thing to do.
        console.print(escape(f"no results yet under {reader.describe(campaign.root)}: run {local_command} first"),
                      soft_wrap=True)
        return EXIT_OK
    if empty:
        notes.append(f"no results under {reader.describe(campaign.root)} yet: follow a cluster campaign from "
                     f"the bucket with --status-source bucket (or copy its results down with rclone), and "
                     f"a --local one with --local --status")
    if local:
        cluster = ClusterView(None)
    elif use_kubectl:
        cluster = query_cluster(campaign_selector(config))
    else:
        cluster = ClusterView(None, "cluster not asked (kubectl disabled): showing results only")
    if cluster.note:
        notes.append(cluster.note)
    progress = read_all_progress(reader, campaign, jobs)
    rows = gather_status(jobs, campaign, progress, cluster, time.time(), bucket=source == "bucket",
                         launched=None if local else launched_jobs(jobs, config))
    if not local:  # run records are written by the pods' run-job.sh, which --local does not run
        rows = with_usage(rows, read_all_run_records(reader, campaign, jobs))
    totals = campaign_totals(rows)
    stalled = [r for r in rows if r.state == "stalled"]
    if stalled:
        since = format_duration(min(r.stall_after_s for r in stalled))
        if local:
            notes.append(f"{len(stalled)} stalled Jobs (no progress for longer than {since}): is --local still "
                         f"running them? {local_command} resumes them from their checkpoints")
        else:
            notes.append(f"{len(stalled)} stalled windows (no progress for longer than {since}): look at their "
                         f"pods with kubectl logs --previous, or relaunch them with WINDOWS")
    notes += trouble_notes(rows)
    wasteful = [r for r in rows if r.usage_flags]
    if wasteful:
        notes.append(f"{len(wasteful)} windows break NRP's usage rule (GPU utilisation above "
                     f"{usage.MIN_GPU_UTILIZATION_PERCENT:.0f}%, memory at least "
                     f"{100 * usage.MIN_MEMORY_FRACTION:.0f}% of the request): size the requests from a "
                     f"pilot window (docs/following.md, 'Sizing the requests')")
    render_status(rows, totals, f"{campaign.name}: {reader.location}", notes, console, local=local)
    actions = follow_actions(reader, campaign)
    if actions:
        console.print(f"Last actions of --follow ({reader.describe(campaign.follow_journal)}):", markup=False,
                      highlight=False)
        for line in actions:
            console.print(f"  {line}", markup=False, highlight=False)
    return EXIT_OK


def follow_actions(reader: ResultsStore, campaign: Campaign, count: int = FOLLOW_ACTIONS_SHOWN) -> list[str]:
    """The last ``count`` lines of the campaign journal ``--follow`` writes, oldest first; ``[]``
    when there is none. A line that does not read (one cut off by a killed follower) is said, not
    fatal, and so is a journal that cannot be read."""
    try:
        text = reader.read_text(campaign.follow_journal)
    except StoreError as error:
        return [f"the journal could not be read: {error}"]
    shown = []
    for line in (text or "").splitlines()[-count:]:
        try:
            entry = json.loads(line)
            shown.append(f"{entry['time']} {entry['action']:<9} {entry['job']}: {entry['reason']}")
        except (ValueError, KeyError, TypeError):
            shown.append(f"an unreadable line: {line[:80]!r}")
    return shown
