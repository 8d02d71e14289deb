"""Helpers of the engine tests: a one-particle toy stage and a runner for the window script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from protbench_nrp.contacts import add_umbrella_bias
from tests.conftest import REPRODUCIBLE_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "umbrella-scripts" / "run-umbrella-window.py"

TOY_TEMPERATURE_KELVIN = 300.0
#: Seed of the toy's random forces and first velocities: its trajectory is the same every run.
TOY_SEED = 20240531


# -- a one-particle system with an umbrella on its x coordinate ------------------------

def toy_system(potential: str = "50*(y^2+z^2)"):
    """One particle in ``potential`` (kJ/mol, of x, y, z in nm), biased by ``k*(Q-Q0)^2`` on Q = x."""
    import openmm

    system = openmm.System()
    system.addParticle(12.0)
    well = openmm.CustomExternalForce(potential)
    well.addParticle(0, [])
    system.addForce(well)
    cv = openmm.CustomExternalForce("x")
    cv.addParticle(0, [])
    add_umbrella_bias(system, cv, k_kj_per_mol=100.0, centre=0.5)
    return system


def toy_topology():
    import openmm.app as app

    topology = app.Topology()
    residue = topology.addResidue("TOY", topology.addChain())
    topology.addAtom("C", app.element.carbon, residue)
    return topology


@dataclass
class ToyStage:
    """Builds fresh :class:`ResumableStage` objects over the same files, as restarts do."""

    directory: Path
    schedule: object
    platform: str = "Reference"
    controllers: list = field(default_factory=list)
    lines: list = field(default_factory=list)
    #: Builds the System: the umbrella ``CustomCVForce`` must be its force 1, as in :func:`toy_system`.
    system: object = toy_system
    start_nm: tuple = (0.5, 0.0, 0.0)
    stage_options: dict = field(default_factory=dict)
    seed: int = TOY_SEED

    def segment(self, k: int) -> Path:
        return self.directory / f"toy-segment-{k:04d}.dcd"

    @property
    def out(self) -> Path:
        return self.directory / "toy.out"

    @property
    def cv(self) -> Path:
        return self.directory / "toy-cv.dat"

    @property
    def files(self):
        from protbench_nrp.engine import CheckpointFiles

        return CheckpointFiles(self.directory / "toy.chk", self.directory / "toy-checkpoint.xml",
                               lambda n: self.directory / f"toy-{n}.xml")

    def reporters(self, context=None, topology=True):
        from protbench_nrp.reporters import CVReporter, SegmentedDCDReporter, StateDataReporter

        system = context.getSystem() if context is not None else None
        cv_force = system.getForce(1) if system is not None else None
        return [
            SegmentedDCDReporter(self.segment, toy_topology() if topology else None,
                                 self.schedule.frame_steps, 0.002,
                                 frames_per_segment=self.schedule.checkpoint_frames,
                                 stray_glob="toy-segment-*.dcd"),
            StateDataReporter(self.out, system),
            CVReporter(self.cv, cv_force),
        ]

    def build(self):
        from protbench_nrp.engine import ResumableStage, create_context, langevin_integrator

        self.directory.mkdir(parents=True, exist_ok=True)
        context = create_context(self.system(), langevin_integrator(TOY_TEMPERATURE_KELVIN, 2.0, seed=self.seed),
                                 self.platform, "double")
        return ResumableStage(context, self.schedule, self.files, self.reporters(context),
                              controllers=self.controllers, log=self.lines.append,
                              **self.stage_options)

    def fallback(self):
        from protbench_nrp.engine import InitialOrigin

        return InitialOrigin([list(self.start_nm)], temperature_kelvin=TOY_TEMPERATURE_KELVIN, seed=self.seed)

    def resume_and_run(self, stop=None):
        stage = self.build()
        resumed = stage.resume([self.fallback()])
        return resumed, stage.run(stop)

    def held(self) -> list[int]:
        """Whole frames each output holds now, read from disk by fresh reporters."""
        return [r.frames_on_disk() for r in self.reporters(topology=False)]


class Crash(RuntimeError):
    """Raised by :class:`CrashAt` to end a run abruptly, like a kill between frames."""


class CrashAt:
    """Controller that raises :class:`Crash` before integrating past ``step``."""

    def __init__(self, step: int):
        self.step = step

    def update(self, context, step):
        if step >= self.step:
            raise Crash(f"crash at step {step}")


# -- running the real window script ----------------------------------------------------

#: Tiny lengths that keep villin windows to seconds; every value goes through the environment.
FAST_WINDOW_ENV = {
    "PROTBENCH_TARGET": "villin",
    "PROTBENCH_FF": "amber14-vacuum",
    "PROTBENCH_REPLICA": "1",
    "PROTBENCH_WINDOW": "03",
    "PROTBENCH_PLATFORM": "CPU",
    "PROTBENCH_EQUIL_LENGTH": "0.0001",    # 100 steps of 1 fs
    "PROTBENCH_EQUIL_FRAME": "0.05",       # 50 steps
    "PROTBENCH_PRODUCTION_LENGTH": "0.002",  # 500 steps of 4 fs
    "PROTBENCH_FRAME": "0.2",              # 50 steps -> 10 frames
    "PROTBENCH_CHECKPOINT": "1.0",         # 5 frames per segment
    "PROTBENCH_SAVE_STATE": "1.0",
    "PROTBENCH_CHECKPOINT_MINUTES": "15",
    # present in every pod and none of the script's business
    "PROTBENCH_SCRIPT_COMMIT": "0123456789abcdef",
    "PROTBENCH_SCRIPT_PATH": "umbrella-scripts/run-umbrella-window.py",
    "PROTBENCH_REQUIRED_FILES": "villin-amber14-vacuum/setup/\nvillin-amber14-vacuum/replica-1/",
    "PROTBENCH_BUCKET": "proteinbenchmark-test-bucket",
}


def window_env(**overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTBENCH_")}
    env.update(FAST_WINDOW_ENV)
    env.update(REPRODUCIBLE_ENV)
    for key, value in overrides.items():
        name = key if key.startswith("PROTBENCH_") else f"PROTBENCH_{key.upper()}"
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_window(root: Path, timeout: float = 240, **overrides) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "-o", str(root)], env=window_env(**overrides),
                          capture_output=True, text=True, timeout=timeout)


def start_window(root: Path, **overrides) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, str(SCRIPT), "-o", str(root)],
                               env=window_env(**overrides), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    process.started_unix = time.time()
    return process


def wait_for_step(progress: Path, phase: str, step: int, process: subprocess.Popen,
                  timeout: float = 120) -> int:
    """Wait until ``process`` reports ``phase`` at ``step`` or more in the Progress JSON.

    Records left by an earlier process are ignored. Returns the step reached.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"window exited early ({process.returncode}): {process.stdout.read()}")
        try:
            record = json.loads(progress.read_text())
        except (OSError, ValueError):
            record = None
        if (record and record["phase"] == phase and record["step"] >= step
                and record["updated_unix"] > process.started_unix):
            return record["step"]
        time.sleep(0.01)
    raise AssertionError(f"no {phase} progress to step {step} within {timeout} s")


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime_ns)`` of every file under ``root``."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def data_steps(path: Path, separator: str | None = None) -> np.ndarray:
    """First column (steps) of the data lines of a text output."""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return np.array([int(line.split(separator)[0]) for line in lines], dtype=np.int64)


@pytest.fixture
def window_files(villin_results):
    return villin_results.campaign.window_files(1, 3)
