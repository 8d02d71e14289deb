"""``--follow --max-gpu-hours H``: submit nothing that would take the campaign's GPU-hours past H.

The GPU-hours spent are the run records' (:mod:`protbench_nrp.usage`, as
``--status`` sums them): each pod's wall time times the GPUs it held. Before a
submission or a relaunch, the follower asks :meth:`GpuBudget.decide`:

    spent + committed + cost(this Job) <= H

* **spent**: every Job's run records, summed (a finished Job's are read once);
* **committed**: for each Job running, pending or submitted this pass, what its
  cost estimate says it has still to spend (the estimate less what its records
  show, never below 0);
* **cost(Job)**, one estimate per stage, the first that can be had:

  1. the median GPU-hours of the finished Jobs of that stage (their records);
  2. for a window, before any has finished: its production length (the
     settings in its environment) at the median ns/day of the windows running
     now (their progress records), in hours, times the GPUs a pod holds;
  3. none yet (nothing measured): the Job is submitted while the spent hours are
     below H, so that there is something to measure.

Each decision comes back as a sentence with its numbers, for the journal.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from . import usage, variables
from .jobs import JobSpec
from .layout import Campaign
from .records import Progress
from .status import read_run_records
from .store import ResultsStore

_HOURS_PER_DAY = 24.0


@dataclass(frozen=True)
class Decision:
    """Whether a Job may be submitted, and why, with the numbers."""

    allowed: bool
    reason: str


@dataclass(frozen=True)
class Estimate:
    gpu_hours: float | None
    how: str


class GpuBudget:
    """The campaign's GPU-hours against ``limit_h``, read from ``store``, once per pass at most.

    Parameters
    ----------
    limit_h : float
        ``--max-gpu-hours``.
    store : ResultsStore
    campaign : Campaign
    jobs : list of JobSpec
        Every Job the follower takes on.
    """

    def __init__(self, limit_h: float, store: ResultsStore, campaign: Campaign, jobs: list[JobSpec]):
        self.limit_h = limit_h
        self.store = store
        self.campaign = campaign
        self.jobs = jobs
        self._final: dict[str, float] = {}  # a finished Job's GPU-hours: its records change no more
        self._pass: dict[str, float] | None = None
        self._estimates: dict[str, Estimate] = {}
        self._committed: set[str] = set()

    def new_pass(self) -> None:
        """Forget what the last pass read: records and progress move on."""
        self._pass, self._estimates, self._committed = None, {}, set()

    def spent_by_job(self, finished: set[str]) -> dict[str, float]:
        """GPU-hours per Job from its run records; those of ``finished`` Jobs are read once."""
        if self._pass is None:
            spent = {}
            for job in self.jobs:
                if job.name in self._final:
                    spent[job.name] = self._final[job.name]
                    continue
                records, _ = read_run_records(self.store, self.campaign.run_records_dir(job.stage, job.replica,
                                                                                         job.window))
                spent[job.name] = usage.window_usage(records).gpu_hours
                if job.name in finished:
                    self._final[job.name] = spent[job.name]
            self._pass = spent
        return self._pass

    def estimate(self, job: JobSpec, finished: set[str], active: set[str]) -> Estimate:
        """What one Job of ``job``'s stage costs, as the module's docstring says."""
        if job.stage in self._estimates:
            return self._estimates[job.stage]
        spent = self.spent_by_job(finished)
        done = [spent[j.name] for j in self.jobs if j.stage == job.stage and j.name in finished and spent[j.name] > 0]
        if done:
            found = Estimate(statistics.median(done), f"the median of {len(done)} finished {job.stage} Jobs")
        elif job.stage == "window":
            found = self._from_speed(job, active)
        else:
            found = Estimate(None, f"no {job.stage} Job has finished yet")
        self._estimates[job.stage] = found
        return found

    def _from_speed(self, job: JobSpec, active: set[str]) -> Estimate:
        speeds = []
        for other in self.jobs:
            if other.stage != "window" or other.name not in active:
                continue
            path = self.campaign.progress_file(other.id)
            text = self.store.read_text(path) if path is not None else None
            if text is None:
                continue
            try:
                record = Progress.parse(text, self.store.describe(path))
            except ValueError:
                continue
            if record.phase == "production" and record.ns_per_day > 0:
                speeds.append(record.ns_per_day)
        if not speeds:
            return Estimate(None, "no window has finished or measured its speed yet")
        length_ns = variables.env_values("window", job.env)["production_length_ns"]
        speed = statistics.median(speeds)
        hours = length_ns / speed * _HOURS_PER_DAY * usage.GPUS_PER_POD
        return Estimate(hours, f"{length_ns:g} ns of production at {speed:.3g} ns/day, the median speed of "
                               f"{len(speeds)} running windows")

    def decide(self, job: JobSpec, finished: set[str], active: set[str]) -> Decision:
        """May ``job`` be submitted now? ``active``: the Jobs running or pending on the cluster."""
        spent_by = self.spent_by_job(finished)
        spent = sum(spent_by.values())
        committed = 0.0
        for other in self.jobs:
            if other.name in (active | self._committed) and other.name not in finished and other.name != job.name:
                cost = self.estimate(other, finished, active).gpu_hours
                committed += max((cost or 0.0) - spent_by.get(other.name, 0.0), 0.0)
        cost = self.estimate(job, finished, active)
        numbers = f"{spent:.2f} GPU-h spent, {committed:.2f} committed to running Jobs"
        if cost.gpu_hours is None:
            allowed = spent < self.limit_h
            reason = (f"{numbers}; its cost is not known yet ({cost.how}): submitted while the spent hours "
                      f"are under --max-gpu-hours {self.limit_h:g}" if allowed else
                      f"{numbers}: the budget --max-gpu-hours {self.limit_h:g} is spent")
        else:
            projected = spent + committed + cost.gpu_hours
            allowed = projected <= self.limit_h
            reason = (f"{numbers}, {cost.gpu_hours:.2f} estimated for it ({cost.how}): {projected:.2f} "
                      f"{'<=' if allowed else '>'} --max-gpu-hours {self.limit_h:g}")
        if allowed:
            self._committed.add(job.name)
        return Decision(allowed, reason)
