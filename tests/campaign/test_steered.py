"""run-steered-md.py on villin: every window structure at its centre, resumable, clear failures."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time

import openmm.app as app
import openmm.unit as unit
import pytest

from protbench_nrp.contacts import NativeContacts
from protbench_nrp.engine import state_xml_step
from protbench_nrp.layout import Campaign
from protbench_nrp.records import Progress
from protbench_nrp.science import window_centre

from .conftest import SCRIPTS_DIR, VILLIN, run_script, villin_env

CAMPAIGN = Campaign(*VILLIN)
N_WINDOWS = 4
CV_END = 0.7

#: A short pull: 1 ps of equilibration, Q0 from 1.0 to 0.6 over 20 ps, 34 times the speed of
#: the default pull. Q is compared with the centres every 10 steps, as by default: a window's
#: structure is saved at the first check past its centre, so it lies as far past the centre as Q
#: moves between two checks. Checked every 50 steps, Q sometimes fell 0.03-0.08 in one interval
#: (the strain of Q lagging 0.03-0.09 behind Q0 let go at once) and window 1 was saved at 0.82;
#: every 10 steps, the saved windows lay within 0.006 of their centres over five seeds.
SHORT = dict(PROTBENCH_REPLICA="1", PROTBENCH_N_WINDOWS=str(N_WINDOWS), PROTBENCH_CV_START="1.0",
             PROTBENCH_CV_END=str(CV_END), PROTBENCH_STEERED_K="5000", PROTBENCH_PULL_LENGTH="0.02",
             PROTBENCH_PULL_FRAME="0.04", PROTBENCH_EQUIL_LENGTH="0.001",
             PROTBENCH_EQUIL_TIMESTEP="2", PROTBENCH_EQUIL_FRAME="0.2", PROTBENCH_PULL_TIMESTEP="4")


def _results(villin_setup, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(villin_setup, root)
    return root


def _window_q(root, replica, window):
    contacts = NativeContacts.read(root / CAMPAIGN.contacts_file)
    pdb = app.PDBFile(str(root / CAMPAIGN.window_pdb(replica, window)))
    return contacts.fraction(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def _products(root, replica=1):
    return [root / CAMPAIGN.steered_state(replica)] + [
        root / CAMPAIGN.window_pdb(replica, w) for w in range(N_WINDOWS)]


def test_every_window_structure_lies_at_its_centre(villin_setup, tmp_path):
    root = _results(villin_setup, tmp_path)
    result = run_script("run-steered-md.py", "-o", str(root), env=villin_env(**SHORT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / CAMPAIGN.steered_state(1)).is_file()
    for window in range(N_WINDOWS):
        centre = window_centre(window, N_WINDOWS, 1.0, CV_END)
        assert _window_q(root, 1, window) == pytest.approx(centre, abs=0.05), f"window {window}"
    assert "NVT equilibration" in result.stdout  # villin is at 0 atm: no barostat
    assert Progress.read(root / CAMPAIGN.steered_files(1).progress).phase == "finished"

    # finished: run again, nothing changes
    before = {p: p.stat().st_mtime_ns for p in _products(root)}
    again = run_script("run-steered-md.py", "-o", str(root), env=villin_env(**SHORT))
    assert again.returncode == 0 and "already finished" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in _products(root)} == before


def _start(root, **extra):
    return subprocess.Popen([sys.executable, str(SCRIPTS_DIR / "run-steered-md.py"), "-o", str(root)],
                            env=villin_env(**{**SHORT, **extra}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for_pull(root, process, min_step=1000, timeout=120):
    progress = root / CAMPAIGN.steered_files(1).progress
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            record = Progress.read(progress)
        except (OSError, ValueError, KeyError):
            record = None
        if record is not None and record.phase == "pulling" and record.step >= min_step:
            return record
        time.sleep(0.05)
    raise AssertionError("the pull did not start in time")


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGKILL, -9)],
                         ids=["sigterm", "sigkill"])
def test_interrupted_pull_resumes(villin_setup, tmp_path, signum, code):
    root = _results(villin_setup, tmp_path)
    # checkpoints every 0.3 s of wall-clock time, so a SIGKILL finds one to resume from (the stop
    # waits for it: a fast machine passes step 1,000 sooner); the stop comes after step 1,000 of
    # SHORT's 5,000, after the first centre and well before the last
    slow = dict(PROTBENCH_CHECKPOINT_MINUTES="0.005")
    process = _start(root, **slow)
    _wait_for_pull(root, process)
    checkpoint = root / CAMPAIGN.steered_files(1).pull_portable
    deadline = time.monotonic() + 120
    while not state_xml_step(checkpoint):
        assert time.monotonic() < deadline and process.poll() is None, "no pull checkpoint was written"
        time.sleep(0.02)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == code, output
    saved = {w: (root / CAMPAIGN.window_pdb(1, w)).stat().st_mtime_ns
             for w in range(N_WINDOWS) if (root / CAMPAIGN.window_pdb(1, w)).exists()}
    assert saved, "the pull was stopped before it crossed the first centre"
    assert len(saved) < N_WINDOWS, "the pull finished before it was stopped"

    result = run_script("run-steered-md.py", "-o", str(root), env=villin_env(**{**SHORT, **slow}))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting from checkpoint" in result.stdout or "portable checkpoint" in result.stdout
    assert "equilibration:" not in result.stdout.split("pulling")[0]  # not equilibrated again
    for window in range(N_WINDOWS):
        centre = window_centre(window, N_WINDOWS, 1.0, CV_END)
        assert _window_q(root, 1, window) == pytest.approx(centre, abs=0.05)
    for window, mtime in saved.items():  # kept, not rewritten by the resumed pull
        assert (root / CAMPAIGN.window_pdb(1, window)).stat().st_mtime_ns == mtime


def test_pull_that_cannot_reach_the_last_centre_fails_naming_q(villin_setup, tmp_path):
    root = _results(villin_setup, tmp_path)
    weak = dict(PROTBENCH_STEERED_K="1", PROTBENCH_PULL_LENGTH="0.004")
    result = run_script("run-steered-md.py", "-o", str(root), env=villin_env(**{**SHORT, **weak}))
    assert result.returncode == 2
    missing = [w for w in range(N_WINDOWS) if not (root / CAMPAIGN.window_pdb(1, w)).exists()]
    assert missing and missing[-1] == N_WINDOWS - 1
    first = missing[0]
    assert f"centre {window_centre(first, N_WINDOWS, 1.0, CV_END):.4f} of window {first:02d}" in result.stderr
    reached = float(re.search(r"Q reached (\d\.\d+)", result.stderr).group(1))
    assert window_centre(first, N_WINDOWS, 1.0, CV_END) < reached < 1.0
    assert f"last centre is {CV_END:.4f}" in result.stderr
    assert "PROTBENCH_STEERED_K" in result.stderr and "PROTBENCH_PULL_LENGTH" in result.stderr
    assert str(root / CAMPAIGN.steered_dir(1)) in result.stderr  # what to remove to pull again
    assert "Traceback" not in result.stderr
    assert not (root / CAMPAIGN.window_pdb(1, N_WINDOWS - 1)).exists()
    # the verdict stands on a rerun, without pulling again
    again = run_script("run-steered-md.py", "-o", str(root), env=villin_env(**{**SHORT, **weak}))
    assert again.returncode == 2 and "Q reached" in again.stderr
    assert "pulling Q0" not in again.stdout


def test_missing_setup_is_named(tmp_path):
    result = run_script("run-steered-md.py", "-o", str(tmp_path), env=villin_env(**SHORT))
    assert result.returncode == 2
    assert str(tmp_path / CAMPAIGN.system_xml) in result.stderr
    assert "setup-umbrella-system.py" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / CAMPAIGN.replica_dir(1)).exists()


@pytest.mark.parametrize(
    "bad, expected",
    [
        (dict(PROTBENCH_N_WINDOWS="1"), "PROTBENCH_N_WINDOWS"),
        (dict(PROTBENCH_STEERED_K="-5"), "PROTBENCH_STEERED_K"),
        (dict(PROTBENCH_PULL_FRAME="0.3"), "PROTBENCH_PULL_LENGTH"),
        (dict(PROTBENCH_CV_END="1.0"), "PROTBENCH_CV_END"),
        (dict(PROTBENCH_TARGET="no-such-protein"), "PROTBENCH_TARGET"),
        (dict(PROTBENCH_PLATFORM="Metal"), "PROTBENCH_PLATFORM"),
        (dict(PROTBENCH_SEED="-1"), "PROTBENCH_SEED"),
    ],
    ids=["one-window", "negative-k", "frame-does-not-divide", "no-distance", "unknown-target",
         "unknown-platform", "negative-seed"],
)
def test_bad_settings_are_refused_before_anything_is_written(villin_setup, tmp_path, bad, expected):
    root = _results(villin_setup, tmp_path)
    result = run_script("run-steered-md.py", "-o", str(root), env=villin_env(**{**SHORT, **bad}))
    assert result.returncode != 0
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (root / CAMPAIGN.replica_dir(1)).exists()


def test_structures_lost_after_their_crossing_are_pulled_again(villin_setup, tmp_path):
    """A restarted pod given the checkpoint but not the structures saved before it."""
    root = _results(villin_setup, tmp_path)
    slow = dict(PROTBENCH_CHECKPOINT_MINUTES="0.005")
    process = _start(root, **slow)
    _wait_for_pull(root, process, min_step=2000)  # 40 % into the pull: some structures saved, not all
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 143, output
    saved = [w for w in range(N_WINDOWS) if (root / CAMPAIGN.window_pdb(1, w)).exists()]
    assert saved and len(saved) < N_WINDOWS
    for window in saved:
        (root / CAMPAIGN.window_pdb(1, window)).unlink()

    result = run_script("run-steered-md.py", "-o", str(root), env=villin_env(**{**SHORT, **slow}))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pulling again from the equilibrated state" in result.stdout
    for window in range(N_WINDOWS):
        centre = window_centre(window, N_WINDOWS, 1.0, CV_END)
        assert _window_q(root, 1, window) == pytest.approx(centre, abs=0.05)
