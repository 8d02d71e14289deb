"""``--follow --max-gpu-hours``: the follower's decision, on a results tree and a stand-in backend.

The tree is a real ``LOCAL_RESULT_DIR`` (setup and steered MD finished, run
records as the pods write them); the backend says which Jobs run and records
what is submitted. Each test works out the numbers it expects by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protbench_nrp.backends import Submitted
from protbench_nrp.budget import GpuBudget
from protbench_nrp.cluster import JobInfo, JobPhase, JobState
from protbench_nrp.follow import BUDGET_NOTE, Follower, FollowSettings, check_follow_options
from protbench_nrp.jobs import EXIT_STOPPED, ConfigError, build_jobs, campaign_jobs
from protbench_nrp.records import Progress
from protbench_nrp.stages import production_steps
from protbench_nrp.store import LocalStore

from tests.test_done_everywhere import CAMPAIGN, _config, _steered

#: EXTRA_ENV's production (tests/test_done_everywhere.py): 0.04 ns.
PRODUCTION_NS = 0.04


class StandInBackend:
    """Says which Jobs run; records each submission (no cluster: the decision is what is tested)."""

    def __init__(self, running: tuple[str, ...] = ()):
        self.running = running
        self.submitted: list[str] = []

    def read_states(self) -> dict[str, JobInfo]:
        return {name: JobInfo(name, JobState.ACTIVE, "Running", JobPhase.RUNNING) for name in self.running}

    def submit(self, manifest: Path, name: str) -> Submitted:
        assert manifest.exists()
        self.submitted.append(name)
        return Submitted.CREATED

    def delete(self, info: JobInfo) -> None:
        raise AssertionError("nothing is deleted in these tests")


def run_record(root: Path, job, pod: str, hours: float, gpus: int = 1, start: float = 1.7e9) -> None:
    """The run record a pod leaves (protbench_nrp/runrecord.py's fields that usage.py reads)."""
    path = root / CAMPAIGN.run_record(job.stage, job.replica, job.window, pod)
    path.parent.mkdir(parents=True, exist_ok=True)
    end = start + hours * 3600 / gpus
    path.write_text(json.dumps({"kind": "run-record", "pod": pod, "started_unix": start, "updated_unix": end,
                                "finished_unix": end, "gpu": {"model": "A10", "driver": "550", "count": gpus}}))


def finish_window(root: Path, job) -> None:
    wanted = production_steps(CAMPAIGN, job.id, job.env)
    Progress.now("finished", wanted, wanted, 50.0).write(root / CAMPAIGN.window_files(1, job.window).progress)


@pytest.fixture
def campaign(tmp_path):
    root = tmp_path / "results"
    _steered(root)  # setup and steered MD finished: every window's inputs are there
    config = _config(root, "window")
    jobs = campaign_jobs(build_jobs(config, "0" * 40), config)
    by_name = {(job.stage, job.window): job for job in jobs}
    return root, config, jobs, by_name


def follower(campaign, limit_h, backend, lines):
    root, config, jobs, _ = campaign
    settings = FollowSettings(poll_s=1, max_attempts=2, max_gpu_hours=limit_h)
    return Follower(config, jobs, [{"kind": "Job", "metadata": {"name": j.name}} for j in jobs], backend,
                    LocalStore(root), settings, echo=lambda text, err=False: lines.append(text), sleep=lambda s: None)


def journal(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / CAMPAIGN.follow_journal).read_text().splitlines()]


def spent_so_far(root, by_name):
    # setup 0.5 h, steered 1.5 h (2 GPUs), windows 0 and 1 finished at 2 h and 4 h: 8 GPU-h in all
    run_record(root, by_name[("setup", None)], "setup-a", 0.5)
    run_record(root, by_name[("steered", None)], "steered-a", 1.5, gpus=2)
    for window, hours in ((0, 2.0), (1, 4.0)):
        finish_window(root, by_name[("window", window)])
        run_record(root, by_name[("window", window)], f"w{window}-a", hours)


def test_a_job_goes_while_the_projection_fits_and_the_next_is_held_with_its_numbers(campaign):
    root, _, _, by_name = campaign
    spent_so_far(root, by_name)
    backend, lines = StandInBackend(), []
    # a window is estimated at the median of the finished ones, 3 h: window 2 takes 8 + 0 + 3 = 11 <= 11.5;
    # window 3 would take 8 + 3 (committed to window 2) + 3 = 14 > 11.5
    rows, acted = follower(campaign, 11.5, backend, lines).one_pass()
    w2, w3 = by_name[("window", 2)].name, by_name[("window", 3)].name
    assert acted and backend.submitted == [w2]
    assert rows[w3].state == "waiting" and rows[w3].note.startswith(BUDGET_NOTE)
    entries = {entry["job"]: entry for entry in journal(root)}
    assert entries[w2]["action"] == "submit"
    assert ("8.00 GPU-h spent, 0.00 committed to running Jobs, 3.00 estimated for it (the median of 2 finished "
            "window Jobs): 11.00 <= --max-gpu-hours 11.5") in entries[w2]["reason"]
    assert entries[w3]["action"] == "budget"
    assert ("not submitted: 8.00 GPU-h spent, 3.00 committed to running Jobs, 3.00 estimated for it (the median "
            "of 2 finished window Jobs): 14.00 > --max-gpu-hours 11.5") in entries[w3]["reason"]


def test_when_the_budget_holds_everything_back_the_follower_stops_and_says_so(campaign):
    root, _, _, by_name = campaign
    spent_so_far(root, by_name)
    backend, lines = StandInBackend(), []
    following = follower(campaign, 9, backend, lines)
    following.one_pass()  # a first pass, as if something else still ran; then run() passes on and stops
    code = following.run()  # 8 + 3 > 9: neither window 2 nor 3 goes
    assert code == EXIT_STOPPED and backend.submitted == []
    assert any("the GPU-hour budget (--max-gpu-hours 9) is spent: 2 Jobs not submitted" in line
               for line in lines), lines
    stop = journal(root)[-1]
    assert stop["action"] == "stop" and "(2 held back by --max-gpu-hours 9)" in stop["reason"]
    # each hold is said once in the journal, however many passes
    assert [e["action"] for e in journal(root)].count("budget") == 2


def test_before_any_window_finishes_the_cost_is_the_production_at_the_running_windows_speed(campaign):
    root, _, jobs, by_name = campaign
    running = by_name[("window", 0)]
    Progress.now("production", 10, 100, 48.0).write(root / CAMPAIGN.window_files(1, 0).progress)
    run_record(root, running, "w0-a", 0.01)
    budget = GpuBudget(1.0, LocalStore(root), CAMPAIGN, jobs)
    finished = {by_name[("setup", None)].name, by_name[("steered", None)].name}
    estimate = budget.estimate(by_name[("window", 1)], finished, {running.name})
    assert estimate.gpu_hours == pytest.approx(PRODUCTION_NS / 48.0 * 24)  # 0.02 h
    assert estimate.how == "0.04 ns of production at 48 ns/day, the median speed of 1 running windows"
    decision = budget.decide(by_name[("window", 1)], finished, {running.name})
    # spent 0.01; committed: window 0's 0.02 estimate less its 0.01 spent; window 1's 0.02
    assert decision.allowed and "0.01 GPU-h spent, 0.01 committed to running Jobs, 0.02 estimated" in decision.reason


def test_with_nothing_measured_yet_a_job_goes_while_the_spent_hours_are_under_the_budget(campaign):
    root, _, jobs, by_name = campaign
    finished = {by_name[("setup", None)].name, by_name[("steered", None)].name}
    run_record(root, by_name[("steered", None)], "steered-a", 1.5)
    under = GpuBudget(2.0, LocalStore(root), CAMPAIGN, jobs).decide(by_name[("window", 0)], finished, set())
    assert under.allowed and "its cost is not known yet (no window has finished or measured its speed yet)" \
        in under.reason
    over = GpuBudget(1.5, LocalStore(root), CAMPAIGN, jobs).decide(by_name[("window", 0)], finished, set())
    assert not over.allowed and "1.50 GPU-h spent" in over.reason and "--max-gpu-hours 1.5 is spent" in over.reason


@pytest.mark.parametrize("hours", [0.0, -3.0])
def test_a_budget_at_or_below_zero_is_refused_before_anything_is_checked(tmp_path, hours):
    with pytest.raises(ConfigError, match=f"--max-gpu-hours {hours:g} must be a number of GPU-hours above 0"):
        check_follow_options(_config(tmp_path, "window"), FollowSettings(max_gpu_hours=hours), {})
