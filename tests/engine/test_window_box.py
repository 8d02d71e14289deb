"""A window starts in the box of the pull frame its structure was taken from.

With a barostat the pull changes the box; the window PDB that steered MD
writes carries that frame's box in its CRYST1 record. The equilibrated state
from before the pull has another box, in which the window's positions would
overlap across the boundary. Solvated villin (8867 atoms, PME), no MD: only
Contexts are made and loaded.
"""

from __future__ import annotations

import copy

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from protbench_nrp.contacts import find_umbrella_force
from protbench_nrp.engine import load_state_xml, set_barostat
from protbench_nrp.reporters import Frame
from protbench_nrp.steered import WindowStructureReporter
from protbench_nrp.window import UmbrellaWindow, WindowInputError, WindowSettings
from tests.conftest import SOLVATED_FF, write_solvated_inputs

#: A box the barostat could have reached during the pull: 2 % wider along each axis.
PULL_SCALE = 1.02


@pytest.fixture
def inputs(solvated_villin, tmp_path):
    return write_solvated_inputs(tmp_path, solvated_villin, n_windows=2)


def _window(root, window=0):
    settings = WindowSettings.resolve("villin", SOLVATED_FF, 1, window, n_windows=2,
                                      platform="Reference", precision="double")
    return UmbrellaWindow(root, settings, log=lambda _line: None)


def _box_nm(vectors) -> np.ndarray:
    return np.array([v.value_in_unit(unit.nanometer) for v in vectors])


def _write_pull_frame(inputs, umbrella, window=0):
    """Write window ``window``'s PDB as steered MD does, from a frame in a scaled box.

    Returns the frame's box (nm).
    """
    system = copy.deepcopy(umbrella.system)
    set_barostat(system, 300.0, 1.0)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    box = _box_nm(system.getDefaultPeriodicBoxVectors()) * PULL_SCALE
    context.setPeriodicBoxVectors(*(v * unit.nanometer for v in box))
    context.setPositions(umbrella.positions_nm * PULL_SCALE * unit.nanometer)
    state = context.getState(getPositions=True, enforcePeriodicBox=True)
    index, _ = find_umbrella_force(system)
    reporter = WindowStructureReporter(
        lambda w: inputs.root / inputs.campaign.window_pdb(1, w), [1.0, 0.5][:window + 1],
        context.getSystem().getForce(index), copy.deepcopy(umbrella.topology), log=lambda _line: None)
    (inputs.root / inputs.campaign.window_pdb(1, window)).unlink()  # not crossed yet
    reporter.report(Frame(0, 10, state, context, 0.0))
    assert (inputs.root / inputs.campaign.window_pdb(1, window)).is_file()
    return _box_nm(state.getPeriodicBoxVectors())


def test_the_window_starts_in_the_box_of_its_pull_frame(inputs, solvated_villin):
    frame_box = _write_pull_frame(inputs, solvated_villin)
    steered_box = _box_nm(load_state_xml(inputs.root / inputs.campaign.steered_state(1))
                          .getPeriodicBoxVectors())
    assert not np.allclose(frame_box, steered_box, atol=0.05)  # the pull changed the box
    pdb = app.PDBFile(str(inputs.root / inputs.campaign.window_pdb(1, 0)))
    np.testing.assert_allclose(_box_nm(pdb.topology.getPeriodicBoxVectors()), frame_box, atol=1e-4)

    window = _window(inputs.root)
    read = window.read_inputs()
    np.testing.assert_allclose(read.box_vectors_nm, frame_box, atol=1e-4)  # CRYST1: 0.001 Å
    stage, fallbacks = window.equilibration_stage(read)
    resumed = stage.resume(fallbacks)
    assert resumed.origin.description == "window structure"
    state = stage.context.getState(getPositions=True)
    np.testing.assert_array_equal(_box_nm(state.getPeriodicBoxVectors()), read.box_vectors_nm)
    np.testing.assert_allclose(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                               read.positions_nm, atol=1e-12)
    # the DCD topology of the window carries the same box
    np.testing.assert_allclose(_box_nm(read.topology.getPeriodicBoxVectors()), frame_box, atol=1e-4)


def test_a_window_untouched_by_the_pull_box_keeps_test_pdbs_box(inputs, solvated_villin):
    """Window 1 was written in the original box: read back as it is, not as window 0's."""
    _write_pull_frame(inputs, solvated_villin, window=0)
    read = _window(inputs.root, window=1).read_inputs()
    np.testing.assert_allclose(read.box_vectors_nm,
                               _box_nm(solvated_villin.system.getDefaultPeriodicBoxVectors()), atol=1e-4)


def test_a_periodic_window_structure_without_a_box_is_refused(inputs):
    path = inputs.root / inputs.campaign.window_pdb(1, 0)
    path.write_text("".join(line for line in path.read_text().splitlines(keepends=True)
                            if not line.startswith("CRYST1")))
    with pytest.raises(WindowInputError, match=f"{path} has no periodic box .*run-steered-md.py"):
        _window(inputs.root).read_inputs()


def test_a_short_solvated_window_runs_through_with_its_barostat_and_imaged_frames(inputs, solvated_villin):
    """The window's whole path on the production physics: 8 steps of equilibration, 8 of production."""
    import mdtraj

    from protbench_nrp.contacts import protein_atom_indices
    from protbench_nrp.engine import read_production_frames, state_xml_step

    frame_box = _write_pull_frame(inputs, solvated_villin)
    settings = WindowSettings.resolve(
        "villin", SOLVATED_FF, 1, 0, n_windows=2, platform="CPU", precision="mixed",
        equil_length_ns=8e-6, equil_timestep_fs=1.0, equil_frame_ps=0.004, equil_barostat_frequency=2,
        production_length_ns=3.2e-5, timestep_fs=4.0, frame_ps=0.016, checkpoint_ps=0.016,
        save_state_ps=0.032, barostat_frequency=2)
    lines = []
    window = UmbrellaWindow(inputs.root, settings, log=lines.append)
    assert window.run() == 0, lines
    files = window.files
    assert state_xml_step(inputs.root / files.portable_checkpoint) == 8
    frames = read_production_frames(inputs.root, files)
    assert frames.steps.tolist() == [4, 8] and np.all(np.isfinite(frames.positions_nm))
    protein = protein_atom_indices(solvated_villin.topology)
    for xyz, lengths in zip(frames.positions_nm, frames.box_lengths_nm):
        np.testing.assert_allclose(xyz[protein].mean(axis=0), lengths / 2, atol=2e-3)
    bonds = np.array([(a.index, b.index) for a, b in solvated_villin.topology.bonds() if a.index in set(protein)])
    trajectory = mdtraj.load_dcd(str(inputs.root / files.production_segment(0)),
                                 top=mdtraj.Topology.from_openmm(solvated_villin.topology))
    assert mdtraj.compute_distances(trajectory, bonds, periodic=False).max() < 0.3
    # it started in the pull frame's box, not test.pdb's
    equilibration = mdtraj.load_dcd(str(inputs.root / files.equilibration("dcd")),
                                    top=mdtraj.Topology.from_openmm(solvated_villin.topology))
    np.testing.assert_allclose(equilibration.unitcell_lengths[0], np.diag(frame_box), rtol=0.01)
    assert window.run() == 0 and "already finished" in lines[-1]
