"""Real windows of a one-particle double well, run by the real window script, analysed by the real
analysis script: the PMF comes back as the potential the particle moves in.

The collective variable is the particle's x coordinate (a ``CustomExternalForce`` as the CV of
the umbrella ``CustomCVForce`` with globals ``k`` and ``Q0``, energy ``k*(cv-Q0)^2``). The
particle is light so that Langevin dynamics forgets its past within a few frames.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from protbench_nrp import status
from protbench_nrp.contacts import add_umbrella_bias
from protbench_nrp.jobs import CampaignConfig, JobSpec
from protbench_nrp.layout import Campaign, job_name
from protbench_nrp.science import KJ_PER_KCAL, window_centre

from tests.conftest import REPRODUCIBLE_ENV

from .synthetic import DoubleWell, bin_averaged_pmf

REPO_ROOT = Path(__file__).resolve().parents[2]
WINDOW_SCRIPT = REPO_ROOT / "umbrella-scripts" / "run-umbrella-window.py"
ANALYSIS_SCRIPT = REPO_ROOT / "umbrella-scripts" / "analyze-umbrella-windows.py"

CAMPAIGN = Campaign("toy", "double-well")
#: F(x) = 2 kcal/mol * ((x / 1 nm)^2 - 1)^2: minima at x = ±1 nm, a 2 kcal/mol barrier at 0.
WELL = DoubleWell(barrier_kcal_per_mol=2.0, middle=0.0, half_width=1.0)
N_WINDOWS = 13
CV_START, CV_END = -1.2, 1.2
K_KCAL_PER_MOL = 30.0  # per nm^2: neighbours 0.2 nm apart overlap well
TEMPERATURE_KELVIN = 300.0
MASS_AMU = 1.0
WINDOW_ENV = {
    "PROTBENCH_TARGET": CAMPAIGN.target, "PROTBENCH_FF": CAMPAIGN.ff, "PROTBENCH_REPLICA": "1",
    "PROTBENCH_N_WINDOWS": str(N_WINDOWS), "PROTBENCH_CV_START": str(CV_START),
    "PROTBENCH_CV_END": str(CV_END), "PROTBENCH_UMBRELLA_K": str(K_KCAL_PER_MOL),
    "PROTBENCH_TEMPERATURE": str(TEMPERATURE_KELVIN), "PROTBENCH_PRESSURE": "0",
    "PROTBENCH_EQUIL_LENGTH": "0.02", "PROTBENCH_EQUIL_TIMESTEP": "10", "PROTBENCH_EQUIL_FRAME": "1",
    "PROTBENCH_PRODUCTION_LENGTH": "0.5", "PROTBENCH_TIMESTEP": "10", "PROTBENCH_FRAME": "1",
    "PROTBENCH_CHECKPOINT": "500", "PROTBENCH_SAVE_STATE": "500", "PROTBENCH_PLATFORM": "Reference",
    # The same trajectories every run. Over nine seeds, 0.5 ns windows gave a largest deviation
    # of 0.05-0.18 kcal/mol from the true profile, median errors of 0.12-0.13 and barriers of
    # 1.94-2.10 kcal/mol: each well inside what the test allows (1.5 ns: 0.08-0.11, 0.07).
    **REPRODUCIBLE_ENV,
}


def toy_system():
    import openmm

    system = openmm.System()
    system.addParticle(MASS_AMU)
    # The well along x in kJ/mol (OpenMM's unit); y and z held near 0, apart from the CV.
    well = openmm.CustomExternalForce("h*(x^2 - 1)^2 + c*(y^2 + z^2)")
    well.addGlobalParameter("h", WELL.barrier_kcal_per_mol * KJ_PER_KCAL)
    well.addGlobalParameter("c", 100.0)
    well.addParticle(0, [])
    system.addForce(well)
    cv = openmm.CustomExternalForce("x")
    cv.addParticle(0, [])
    # Named "cv", not "Q": the window script must find the bias by its globals alone.
    add_umbrella_bias(system, cv, k_kj_per_mol=0.0, centre=0.0, cv_name="cv")
    return system


def write_toy_inputs(root: Path) -> None:
    """Setup XML, one one-atom PDB per window at its centre, and a steered-MD state."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    system = toy_system()
    (root / CAMPAIGN.setup_dir).mkdir(parents=True)
    (root / CAMPAIGN.system_xml).write_text(openmm.XmlSerializer.serialize(system))
    topology = app.Topology()
    residue = topology.addResidue("PAR", topology.addChain())
    topology.addAtom("P", app.element.hydrogen, residue)
    (root / CAMPAIGN.replica_dir(1)).mkdir(parents=True)
    for window in range(N_WINDOWS):
        x = window_centre(window, N_WINDOWS, CV_START, CV_END)
        with open(root / CAMPAIGN.window_pdb(1, window), "w") as handle:
            app.PDBFile.writeFile(topology, [openmm.Vec3(x, 0, 0)] * unit.nanometer, handle)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions([openmm.Vec3(0, 0, 0)] * unit.nanometer)
    state = context.getState(getPositions=True, getVelocities=True)
    (root / CAMPAIGN.steered_state(1)).write_text(openmm.XmlSerializer.serialize(state))


def run_windows(root: Path, parallel: int = 2) -> None:
    env = {**os.environ, **WINDOW_ENV}
    pending = list(range(N_WINDOWS))
    running: list[tuple[int, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < parallel:
            window = pending.pop(0)
            process = subprocess.Popen(
                [sys.executable, str(WINDOW_SCRIPT), "-o", str(root)],
                env={**env, "PROTBENCH_WINDOW": str(window)},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            running.append((window, process))
        window, process = running.pop(0)
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"window {window} failed:\n{output}"


@pytest.mark.slow
def test_real_windows_give_back_the_double_well(tmp_path, capsys):
    root = tmp_path / "results"
    write_toy_inputs(root)
    run_windows(root)

    result = subprocess.run([sys.executable, str(ANALYSIS_SCRIPT), "-o", str(root)],
                            env={**os.environ, "PROTBENCH_TARGET": CAMPAIGN.target,
                                 "PROTBENCH_FF": CAMPAIGN.ff},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
    assert f"{CAMPAIGN.name}: 13 windows from replicas 1" in result.stdout

    with open(root / CAMPAIGN.pmf_csv, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["pmf_kcal_per_mol"]]
    x = np.array([float(row["cv"]) for row in rows])
    pmf = np.array([float(row["pmf_kcal_per_mol"]) for row in rows])
    sigma = np.array([float(row["uncertainty_kcal_per_mol"]) for row in rows])
    samples = np.array([int(row["samples"]) for row in rows])
    half_width = (x[1] - x[0]) / 2
    edges = np.concatenate([x - half_width, [x[-1] + half_width]])
    truth = bin_averaged_pmf(WELL, edges, TEMPERATURE_KELVIN)
    sampled = (samples >= 50) & (np.abs(x) <= abs(CV_START))
    assert sampled.sum() >= 15
    # Compare shapes: shift the truth to the estimate's mean over the sampled bins.
    offset = np.mean(pmf[sampled] - truth[sampled])
    deviation = pmf[sampled] - truth[sampled] - offset
    assert np.max(np.abs(deviation)) < 0.3, np.round(deviation, 2)
    assert np.median(sigma[sampled]) < 0.3
    # The barrier between the wells, read off the recovered profile.
    barrier = pmf[np.argmin(np.abs(x))] - pmf[sampled].min()
    assert barrier == pytest.approx(WELL.barrier_kcal_per_mol, abs=0.4)

    # The status view agrees that every window finished.
    config = CampaignConfig(initials="jm", target=CAMPAIGN.target, ff=CAMPAIGN.ff, n_replicas=1,
                            n_windows=N_WINDOWS, local_result_dir=root)
    jobs = [JobSpec("window", 1, w, job_name("jm", CAMPAIGN.target, CAMPAIGN.ff, "window", 1, w),
                    config.script_path, dict(WINDOW_ENV), CAMPAIGN.manifest("window", 1, w))
            for w in range(N_WINDOWS)]
    assert status.show_status(jobs, config, use_kubectl=False) == 0
    assert "13 windows: 13 finished, 0 running, 0 stalled, 0 missing" in capsys.readouterr().out
