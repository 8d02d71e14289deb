"""Shared fixtures: villin inputs built once per test session; ports and Ctrl-C as the tests need them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = REPO_ROOT / "umbrella-scripts"
if str(SCRIPTS_DIR) not in sys.path:
    sys.path.insert(0, str(SCRIPTS_DIR))

from protbench_nrp.layout import Campaign  # noqa: E402

VILLIN_FF = "amber14-vacuum"

#: What every test that runs a stage script sets, so that its trajectory is the same on every
#: run: the seed of the random forces and velocities (PROTBENCH_SEED), and one CPU thread,
#: because OpenMM's CPU platform draws its random forces per thread and sums forces in an
#: order that varies between runs when it has several (two runs of one seed then part ways).
REPRODUCIBLE_ENV = {"PROTBENCH_SEED": "20240531", "OPENMM_CPU_THREADS": "1"}


@dataclass(frozen=True)
class CampaignInputs:
    """A results root holding everything a window needs, and its campaign."""

    root: Path
    campaign: Campaign
    n_windows: int

    def copy_to(self, destination: Path) -> "CampaignInputs":
        """A private copy, for tests that write into the results tree."""
        shutil.copytree(self.root, destination, dirs_exist_ok=True)
        return CampaignInputs(destination, self.campaign, self.n_windows)


def _write_villin_inputs(root: Path, n_windows: int, replicas=(1,)) -> CampaignInputs:
    import openmm
    import openmm.app as app

    from protbench_nrp.systems import build_local_villin

    campaign = Campaign("villin", VILLIN_FF)
    built = build_local_villin(VILLIN_FF)
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(built.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(built.positions_nm)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    state = context.getState(getPositions=True, getVelocities=True, getEnergy=True)

    (root / campaign.setup_dir).mkdir(parents=True, exist_ok=True)
    (root / campaign.system_xml).write_text(openmm.XmlSerializer.serialize(built.system))
    built.contacts.write(root / campaign.contacts_file)
    with open(root / campaign.minimized_pdb, "w") as handle:
        app.PDBFile.writeFile(built.topology, state.getPositions(), handle)
    for replica in replicas:
        (root / campaign.replica_dir(replica)).mkdir(parents=True, exist_ok=True)
        (root / campaign.steered_state(replica)).write_text(openmm.XmlSerializer.serialize(state))
        for window in range(n_windows):
            with open(root / campaign.window_pdb(replica, window), "w") as handle:
                app.PDBFile.writeFile(built.topology, state.getPositions(), handle)
    del context
    return CampaignInputs(root, campaign, n_windows)


@pytest.fixture(scope="session")
def villin_inputs(tmp_path_factory) -> CampaignInputs:
    """Read-only villin inputs (setup, steered state, 31 window PDBs of replica 1).

    Every window starts from the minimized native structure; that is enough
    for the engine, whose tests run windows near Q = 1.
    """
    return _write_villin_inputs(tmp_path_factory.mktemp("villin-inputs"), n_windows=31)


@pytest.fixture
def villin_results(villin_inputs, tmp_path) -> CampaignInputs:
    """A writable copy of the villin inputs for one test."""
    return villin_inputs.copy_to(tmp_path / "results")


SOLVATED_FF = "amber14-tip3p"


@pytest.fixture(scope="session")
def solvated_villin():
    """Villin in test.pdb's 2761 TIP3P waters (8867 atoms, PME) with its Q bias, not minimized.

    Built once per session (createSystem on 8867 atoms); a test that changes
    the System works on a ``copy.deepcopy`` of it. test.pdb is an equilibrated
    snapshot: a few 4 fs steps from it stay finite without minimization, which
    costs minutes on the CPU platform.
    """
    from protbench_nrp.systems import add_native_contact_bias, parametrize_local_villin

    return add_native_contact_bias(parametrize_local_villin(SOLVATED_FF))


def write_solvated_inputs(root: Path, umbrella, n_windows: int = 3, replica: int = 1) -> CampaignInputs:
    """The files a solvated window needs: setup, steered state and window PDBs with the box.

    Every window starts from test.pdb's own structure and box; tests change
    what they need.
    """
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    campaign = Campaign("villin", SOLVATED_FF)
    (root / campaign.setup_dir).mkdir(parents=True, exist_ok=True)
    (root / campaign.system_xml).write_text(openmm.XmlSerializer.serialize(umbrella.system))
    umbrella.contacts.write(root / campaign.contacts_file)
    topology = umbrella.topology  # test.pdb's, with its CRYST1 box
    positions = umbrella.positions_nm * unit.nanometer
    with open(root / campaign.minimized_pdb, "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle, keepIds=True)
    context = openmm.Context(umbrella.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(getPositions=True, getVelocities=True)
    del context
    (root / campaign.replica_dir(replica)).mkdir(parents=True, exist_ok=True)
    (root / campaign.steered_state(replica)).write_text(openmm.XmlSerializer.serialize(state))
    for window in range(n_windows):
        with open(root / campaign.window_pdb(replica, window), "w") as handle:
            app.PDBFile.writeFile(topology, positions, handle, keepIds=True)
    return CampaignInputs(root, campaign, n_windows)


def opencl_available() -> bool:
    import openmm

    return any(openmm.Platform.getPlatform(i).getName() == "OpenCL"
               for i in range(openmm.Platform.getNumPlatforms()))


@pytest.fixture
def opencl():
    """Use before any OpenCL test: OpenMM's GPU code path, run on the CPU by pocl.

    Under ``CI=true`` a missing OpenCL platform fails the test loudly (``make
    test`` installs pocl as root, so it can only be missing by a broken
    install); elsewhere the test is skipped with the packages to install.
    """
    if opencl_available():
        return "OpenCL"
    message = ("OpenMM lists no OpenCL platform: install pocl-opencl-icd and ocl-icd-libopencl1 "
               "(make test does so as root with apt)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch):
    """Tests that commit in temporary repositories need an identity CI may lack."""
    for var, value in (("GIT_AUTHOR_NAME", "proteinbenchmark-nrp tests"),
                       ("GIT_AUTHOR_EMAIL", "tests@example.invalid"),
                       ("GIT_COMMITTER_NAME", "proteinbenchmark-nrp tests"),
                       ("GIT_COMMITTER_EMAIL", "tests@example.invalid")):
        monkeypatch.setenv(var, os.environ.get(var, value))


# -- ports ------------------------------------------------------------------------------------
#
# Every port a test uses is the OS's choice, taken by the process that uses it: a server binds
# port 0 and says which port it got (tests/registry.py, tests/pod/s3server.py). Nothing asks
# for "a free port" to use later: until it is bound, another xdist worker's server, or any
# outgoing connection (its source port comes from the same range), may take it.

@contextlib.contextmanager
def holding_closed_port() -> Iterator[int]:
    """A loopback port that refuses connections, and no other process can take while held.

    The socket is bound (to a port the OS picks) and never listens: a connection to it is
    refused at once, as to an endpoint that is down, and for as long as it is held the OS
    gives the port to no other socket, a server's or a connection's.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 where nothing answers, for the whole test (see :func:`holding_closed_port`)."""
    with holding_closed_port() as port:
        yield port


# -- Ctrl-C -----------------------------------------------------------------------------------

@contextlib.contextmanager
def sigint_as_in_a_terminal() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here, and is at its default in every process started meanwhile.

    That is how a terminal's foreground job meets Ctrl-C. A suite started in the background of a
    non-interactive shell (``make test &``, a script that runs it beside a load) inherits SIGINT
    *ignored*, and an ignored signal stays ignored across fork and exec: a launcher started by a
    test never gets its KeyboardInterrupt, bash cannot even trap the signal (run-job.sh), and
    every Ctrl-C test fails however the timing goes. A signal with a handler is reset to its
    default at exec, so with Python's handler installed here the test's children start as a
    terminal's would.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def terminal_sigint() -> Iterator[None]:
    """For tests of Ctrl-C: see :func:`sigint_as_in_a_terminal`."""
    with sigint_as_in_a_terminal():
        yield
