"""``run-umbrella-windows.py --local``: the campaign's Jobs as processes on this machine.

Each Job runs the same script a pod would run, ``python <repo>/<script> -o
<LOCAL_RESULT_DIR>``, with the same ``PROTBENCH_*`` environment
(:attr:`JobSpec.env <protbench_nrp.jobs.JobSpec.env>`) plus what a pod gets
from its volumes: ``PROTBENCH_RESULTS_DIR`` (the results root) and, unless
EXTRA_ENV or your environment chooses one, ``PROTBENCH_PLATFORM=CPU``
(the cluster's default is CUDA). Results land in ``LOCAL_RESULT_DIR`` exactly
where the bucket would hold them.

``--local`` runs the selected Jobs *and every earlier stage they need*:
setup, then the steered MD of each selected replica, then the windows. A
Job whose outputs are already complete is skipped; an interrupted one
resumes (the scripts checkpoint). Up to ``max_parallel`` Jobs run at once,
each window as soon as its replica's steered MD is done. Every Job's output
goes to a log beside its results (:meth:`Campaign.job_log
<protbench_nrp.layout.Campaign.job_log>`), headed by the environment it got.

Ctrl-C (SIGINT) or SIGTERM is forwarded to the running Jobs as SIGTERM, the
signal a pod receives: they checkpoint and exit, and so does the runner,
non-zero. A second Ctrl-C kills them at once. Should the runner itself fail
(a results file it cannot read, say), it stops the running Jobs the same way,
SIGKILLing any that outlive :data:`STOP_GRACE_S`, before the error reaches
you: no Job is left running on its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import variables
from .jobs import CampaignConfig, JobSpec, campaign_jobs
from .layout import JOB_LOG_LAUNCHER, Campaign
from .records import Progress
from .stages import is_complete, prerequisites, stage_of
from .store import LocalStore

#: The platform of a local run unless EXTRA_ENV or the environment names one.
LOCAL_PLATFORM = "CPU"

#: Repository root: the scripts a Job runs are found relative to it.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Seconds between looks at the running Jobs.
POLL_S = 0.25

#: Seconds a Job has to checkpoint and exit after SIGTERM when the runner itself fails; then SIGKILL.
STOP_GRACE_S = 30.0

#: Exit status of the runner when a Job failed.
EXIT_FAILED = 1


# -- the demo campaign ------------------------------------------------------------

#: Shortened lengths of the demo, in the scripts' own variables and units (variables.py's).
DEMO_ENV = variables.settings_env(
    PROTBENCH_CV_START=1.0,
    PROTBENCH_CV_END=0.4,
    PROTBENCH_UMBRELLA_K=300,        # kcal/mol: windows 0.04 apart overlap at 300 K
    PROTBENCH_STEERED_K=5000,        # kcal/mol: a 100 ps pull keeps Q close to Q0
    PROTBENCH_PULL_LENGTH=0.1,       # ns
    PROTBENCH_PULL_FRAME=0.2,        # ps
    PROTBENCH_PULL_TIMESTEP=4,       # fs (the seed pulls at 1 fs; HMR allows 4)
    PROTBENCH_EQUIL_LENGTH=0.004,    # ns
    PROTBENCH_EQUIL_TIMESTEP=2,      # fs
    PROTBENCH_EQUIL_FRAME=0.4,       # ps
    PROTBENCH_PRODUCTION_LENGTH=0.03,  # ns
    PROTBENCH_FRAME=0.2,             # ps
    PROTBENCH_CHECKPOINT=10,         # ps
    PROTBENCH_SAVE_STATE=30,         # ps
)


def demo_config(base: CampaignConfig) -> CampaignConfig:
    """The bundled villin campaign, shortened to run on a laptop in a few minutes.

    Villin (OpenMM's ``test.pdb``) in vacuum with amber14, 2 replicas of 16
    windows from Q = 1.0 to 0.4 (0.04 apart), every length cut down through EXTRA_ENV.
    Everything else (initials, image, bucket...) is kept from ``base``;
    results go to ``demo-results/`` beside ``base.local_result_dir``.

    Parameters
    ----------
    base : CampaignConfig
        The constants of ``run-umbrella-windows.py``.
    """
    return dataclasses.replace(
        base, target="villin", ff="amber14-vacuum", n_replicas=2, n_windows=16,
        stage="window", replicas=None, windows=None,
        local_result_dir=Path(base.local_result_dir).parent / "demo-results",
        extra_env={**DEMO_ENV, **{k: v for k, v in base.extra_env.items() if k == "PROTBENCH_PLATFORM"}},
    )


# -- one Job as a process --------------------------------------------------------------

def local_environment(spec: JobSpec, root: Path, base: dict[str, str] | None = None,
                      threads: int | None = None) -> dict[str, str]:
    """The environment a local Job runs with.

    ``base`` (this process's environment by default) supplies ``PATH``,
    ``HOME`` and the like, but none of its ``PROTBENCH_*`` variables except
    ``PROTBENCH_PLATFORM`` and ``PROTBENCH_PRECISION``: a Job sees only what
    a pod would. ``threads`` sets ``OPENMM_CPU_THREADS`` unless ``base``
    does, so parallel Jobs share the cores instead of fighting for them.
    """
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items() if not k.startswith("PROTBENCH_")}
    env.update(spec.env)
    env["PROTBENCH_RESULTS_DIR"] = str(root)
    for name, default in (("PROTBENCH_PLATFORM", LOCAL_PLATFORM), ("PROTBENCH_PRECISION", None)):
        if name not in spec.env and (base.get(name) or default):
            env[name] = base.get(name) or default
    if threads is not None and "OPENMM_CPU_THREADS" not in base:
        env["OPENMM_CPU_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"  # the log shows progress as it happens
    return env


@dataclass
class LocalJob:
    """One :class:`JobSpec` run as a process under a local results root."""

    spec: JobSpec
    root: Path
    needs: tuple[str, ...] = ()
    state: str = "pending"  # pending, running, done, skipped, failed, blocked, stopped
    process: subprocess.Popen | None = field(default=None, repr=False)
    started: float = 0.0
    code: int | None = None
    sent: int | None = None  # the signal the runner last passed on to it

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def campaign(self) -> Campaign:
        return Campaign(self.spec.env["PROTBENCH_TARGET"], self.spec.env["PROTBENCH_FF"])

    @property
    def log_path(self) -> Path:
        return self.root / self.campaign.job_log(self.spec.stage, self.spec.replica, self.spec.window)

    @property
    def progress_path(self) -> Path | None:
        relative = stage_of(self.spec.id).progress_file(self.campaign, self.spec.id)
        return None if relative is None else self.root / relative

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, str(REPO_ROOT / self.spec.script_path), "-o", str(self.root)]

    def progress(self) -> Progress | None:
        path = self.progress_path
        if path is None:
            return None
        try:
            return Progress.read(path)
        except (OSError, ValueError, KeyError):
            return None

    def is_finished(self) -> bool:
        """Whether the stage table calls the Job done in this results root (reads only; the script
        has the last word)."""
        return is_complete(LocalStore(self.root), self.campaign, self.spec.id, self.spec.env).done

    def describe(self) -> str:
        return self.spec.id.describe()


# -- the whole campaign -----------------------------------------------------------------

def _dependencies(specs: list[JobSpec]) -> dict[str, tuple[str, ...]]:
    """Each Job's name -> the names of the Jobs among ``specs`` it needs (stages.prerequisites)."""
    by_id = {spec.id: spec.name for spec in specs}
    return {spec.name: tuple(by_id[needed] for needed in prerequisites(spec.id) if needed in by_id)
            for spec in specs}


class LocalRunner:
    """Runs :class:`LocalJob` processes, ``max_parallel`` at a time, in dependency order.

    Parameters
    ----------
    jobs : list of LocalJob
        In the order they should start; ``needs`` names Jobs that must
        succeed (or be already finished) first.
    max_parallel : int
    display : Display
    python : str
        Interpreter the scripts run with (this one by default).
    launcher_command : str, optional
        The launcher command running them, recorded in each Job's log
        (:data:`~protbench_nrp.layout.JOB_LOG_LAUNCHER`).
    """

    def __init__(self, jobs: list[LocalJob], max_parallel: int, display: "Display",
                 python: str = sys.executable, launcher_command: str | None = None):
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be at least 1, got {max_parallel}; "
                             f"give --max-parallel 1 or more")
        self.jobs = jobs
        self.max_parallel = max_parallel
        self.display = display
        self.python = python
        self.launcher_command = launcher_command
        self.threads = max(1, (os.cpu_count() or 1) // max_parallel)
        self.signalled: int | None = None
        self._received: list[int] = []  # every SIGINT/SIGTERM, in order, as the handler noted it
        self._by_name = {job.name: job for job in jobs}

    # -- signals ---------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        # Only noted here; the loop passes it on (_pass_on_signals). A handler runs between any two
        # bytecodes of the loop: inside _start, after a Job's process exists but before it counts
        # as running, it would miss that Job, which then runs to its end; inside a print, its own
        # print to the same stream would raise.
        self._received.append(signum)

    def _pass_on_signals(self) -> None:
        """Pass what was received on to the running Jobs: the first signal as SIGTERM, a second as SIGKILL."""
        if not self._received:
            return
        running = [job for job in self.jobs if job.state == "running"]
        if self.signalled is None:
            self.signalled = self._received[0]
            self.display.event(f"received {signal.Signals(self.signalled).name}: asking {len(running)} "
                               f"running Job(s) to checkpoint and stop (again to kill them)")
        wanted = signal.SIGTERM if len(self._received) == 1 else signal.SIGKILL
        for job in running:
            if job.sent != wanted:
                _send(job.process, wanted)
                job.sent = wanted

    # -- scheduling ------------------------------------------------------------------
    def run(self) -> int:
        """Run every Job; return 0, :data:`EXIT_FAILED`, or 128 + the signal that stopped the run."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with self.display:
                while True:
                    self._pass_on_signals()
                    self._reap()
                    if not self._received:
                        self._start_ready()
                    running = [job for job in self.jobs if job.state == "running"]
                    if not running and (self._received or not self._startable()):
                        break
                    self.display.refresh(running)
                    time.sleep(POLL_S)
                self._pass_on_signals()  # one that came as the last Job ended still sets the exit status
        except BaseException:
            # The Jobs run in sessions of their own: nobody else stops them if the runner dies.
            self._stop_running()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._summary()

    def _stop_running(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every running Job (it checkpoints and exits), then SIGKILL what outlives ``grace_s``."""
        running = [job for job in self.jobs if job.state == "running" and job.process is not None]
        for job in running:
            _send(job.process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for job in running:
            try:
                job.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _send(job.process, signal.SIGKILL)
                job.process.wait()
            job.code, job.state = job.process.returncode, "stopped"

    def _startable(self) -> bool:
        return any(job.state == "pending" for job in self.jobs)

    def _start_ready(self) -> None:
        for job in self.jobs:
            if job.state != "pending":
                continue
            needs = [self._by_name[n] for n in job.needs if n in self._by_name]
            if any(n.state in ("failed", "blocked", "stopped") for n in needs):
                job.state = "blocked"
                self.display.event(f"[yellow]blocked[/] {job.describe()}: "
                                   f"{', '.join(n.name for n in needs if n.state != 'done' and n.state != 'skipped')} "
                                   f"did not finish")
                continue
            if any(n.state not in ("done", "skipped") for n in needs):
                continue
            if job.is_finished():
                job.state = "skipped"
                self.display.event(f"[dim]skipped[/] {job.describe()}: already finished")
                continue
            if sum(j.state == "running" for j in self.jobs) >= self.max_parallel:
                return
            self._start(job)

    def _start(self, job: LocalJob) -> None:
        env = local_environment(job.spec, job.root, threads=self.threads)
        command = job.command(self.python)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log_path, "a") as log:
            log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {job.name}: {' '.join(command)}\n")
            if self.launcher_command:
                log.write(f"{JOB_LOG_LAUNCHER}{self.launcher_command}\n")
            log.write("# environment: " + json.dumps(
                {k: v for k, v in sorted(env.items()) if k.startswith("PROTBENCH_")}) + "\n")
            log.flush()
            # A session of its own: Ctrl-C reaches the runner only, which
            # forwards SIGTERM as Kubernetes would.
            job.process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
        job.state, job.started = "running", time.monotonic()
        self.display.event(f"started {job.describe()} ({job.name})")

    def _reap(self) -> None:
        for job in self.jobs:
            if job.state != "running" or job.process.poll() is None:
                continue
            job.code = job.process.returncode
            minutes = (time.monotonic() - job.started) / 60.0
            if job.code == 0:
                job.state = "done"
                self.display.event(f"[green]finished[/] {job.describe()} in {minutes:.1f} min")
            elif self.signalled is not None:
                job.state = "stopped"
                self.display.event(f"[yellow]stopped[/] {job.describe()} (exit {job.code}); it "
                                   f"resumes from its checkpoint next time")
            else:
                job.state = "failed"
                self.display.event(f"[red]FAILED[/] {job.describe()} ({job.name}), exit {job.code}; "
                                   f"log {job.log_path}:")
                for line in _tail(job.log_path):
                    self.display.event(f"    {line}", markup=False)

    def _summary(self) -> int:
        count = {state: sum(j.state == state for j in self.jobs)
                 for state in ("done", "skipped", "failed", "blocked", "stopped", "pending")}
        self.display.event(
            f"{count['done']} run, {count['skipped']} already finished, {count['failed']} failed, "
            f"{count['blocked']} blocked, {count['stopped'] + count['pending']} left for next time")
        for job in self.jobs:
            if job.state == "failed":
                self.display.event(f"[red]failed:[/] {job.name}: see {job.log_path}")
        if self.signalled is not None:
            return 128 + int(self.signalled)
        return EXIT_FAILED if count["failed"] or count["blocked"] else 0


def _send(process: subprocess.Popen | None, signum: int) -> None:
    if process is not None and process.poll() is None:
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            pass


def _tail(path: Path, lines: int = 6) -> list[str]:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in text if not line.startswith("# ")][-lines:]


# -- what the user sees --------------------------------------------------------------------

class Display:
    """Progress of the running Jobs: a live rich display on a terminal, event lines otherwise."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(highlight=False, soft_wrap=True)
        self._live = None
        self._progress = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "Display":
        if self.console.is_terminal:
            from rich.progress import BarColumn, Progress as Bars, TextColumn, TimeElapsedColumn

            self._progress = Bars(TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.percentage:>5.1f}%"), TextColumn("{task.fields[speed]}"),
                                  TimeElapsedColumn(), console=self.console, transient=True)
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def event(self, text: str, markup: bool = True) -> None:
        self.console.print(text, markup=markup)

    def refresh(self, running: list[LocalJob]) -> None:
        if self._progress is None:
            return
        names = {job.name for job in running}
        for name in [n for n in self._tasks if n not in names]:
            self._progress.remove_task(self._tasks.pop(name))
        for job in running:
            record = job.progress()
            done, total, phase, speed = 0, None, "starting", ""
            if record is not None and record.phase != "finished":
                done, total, phase = record.step, record.total_steps or None, record.phase
                speed = f"{record.ns_per_day:.0f} ns/day" if record.ns_per_day else ""
            description = f"{job.describe():<28} {phase:<13}"
            if job.name not in self._tasks:
                self._tasks[job.name] = self._progress.add_task(description, total=total, speed=speed)
            self._progress.update(self._tasks[job.name], description=description, completed=done,
                                  total=total, speed=speed)


# -- the entry point -----------------------------------------------------------------

def run_local(jobs: list[JobSpec], config: CampaignConfig, *, max_parallel: int = 1,
              launcher_command: str | None = None) -> int:
    """Run ``jobs``, and the earlier stages they need, as local processes.

    Parameters
    ----------
    jobs : list of JobSpec
        From :func:`protbench_nrp.jobs.build_jobs` for ``config``.
    config : CampaignConfig
        Its ``local_result_dir`` is the results root.
    max_parallel : int
        How many Jobs run at once.
    launcher_command : str, optional
        The command running them (``./run-umbrella-windows.py --local``), kept in each Job's log.

    Returns
    -------
    int
        0 when every Job finished (or already had); 1 when one failed or
        could not start; 128 + signal number when interrupted.
    """
    root = Path(config.local_result_dir).resolve()
    specs = campaign_jobs(list(jobs), config)
    needs = _dependencies(specs)
    local_jobs = [LocalJob(spec, root, needs[spec.name]) for spec in specs]
    display = Display()
    display.event(f"{config.campaign.name}: {len(local_jobs)} Jobs, up to {max_parallel} at once, "
                  f"results in {root}")
    return LocalRunner(local_jobs, max_parallel, display, launcher_command=launcher_command).run()


__all__ = ["run_local", "demo_config", "DEMO_ENV", "LocalJob", "LocalRunner", "Display",
           "local_environment", "campaign_jobs", "LOCAL_PLATFORM"]
