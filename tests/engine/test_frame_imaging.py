"""DCD frames of a periodic run: the protein whole and centred, molecules (not atoms) imaged.

A few 4 fs steps of solvated villin (8867 atoms, PME, barostat) on the CPU
platform, started with the whole system moved by half a box so that the
protein lies across the box edge; the frames are read back with mdtraj.
"""

from __future__ import annotations

import copy

import mdtraj
import numpy as np
import openmm
import openmm.unit as unit
import pytest

from protbench_nrp.contacts import protein_atom_indices
from protbench_nrp.engine import (CheckpointFiles, InitialOrigin, ResumableStage, Schedule,
                                  langevin_integrator, set_barostat)
from protbench_nrp.imaging import FrameImager
from protbench_nrp.reporters import SegmentedDCDReporter

FRAME_STEPS, N_FRAMES = 4, 3
#: "A few ångström": the longest bond of villin (C-S of MET) is 0.18 nm.
LONGEST_BOND_NM = 0.3


def _box(system) -> np.ndarray:
    return np.array([v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])


def _fractional(points, box) -> np.ndarray:
    return np.asarray(points) @ np.linalg.inv(box)


@pytest.fixture(scope="module")
def run(solvated_villin, tmp_path_factory):
    """Frames of a short run started across the box edge; returns (trajectory, stage, topology)."""
    directory = tmp_path_factory.mktemp("imaging")
    system = copy.deepcopy(solvated_villin.system)
    set_barostat(system, 300.0, 1.0, frequency=2)
    integrator = langevin_integrator(300.0, 4.0)
    integrator.setRandomNumberSeed(7)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    box = _box(system)
    # the whole system moved by half a box: the protein now straddles the box's corner
    start = solvated_villin.positions_nm + box.sum(axis=0) / 2
    topology = solvated_villin.topology
    stage = ResumableStage(
        context, Schedule(FRAME_STEPS * N_FRAMES, FRAME_STEPS),
        CheckpointFiles(directory / "run.chk"),
        [SegmentedDCDReporter(lambda _k: directory / "run.dcd", topology, FRAME_STEPS, 0.004)],
        log=lambda _line: None)
    stage.resume([InitialOrigin(start, box, 300.0)])
    context.setParameter("k", 0.0)
    assert stage.run().finished
    trajectory = mdtraj.load_dcd(str(directory / "run.dcd"), top=mdtraj.Topology.from_openmm(topology))
    return trajectory, stage, topology


def test_no_protein_bond_is_longer_than_a_few_angstrom_in_any_frame(run):
    trajectory, _, topology = run
    protein = set(protein_atom_indices(topology))
    bonds = np.array([(a.index, b.index) for a, b in topology.bonds() if a.index in protein])
    assert len(trajectory) == N_FRAMES and len(bonds) > 500
    lengths = mdtraj.compute_distances(trajectory, bonds, periodic=False)
    assert lengths.max() < LONGEST_BOND_NM


def test_the_protein_is_centred_and_every_water_lies_in_the_box(run):
    trajectory, _, topology = run
    protein = protein_atom_indices(topology)
    waters = [[a.index for a in r.atoms()] for r in topology.residues() if r.name == "HOH"]
    oxygen = [w[0] for w in waters]
    for frame in range(len(trajectory)):
        xyz, box = trajectory.xyz[frame], trajectory.unitcell_vectors[frame]
        np.testing.assert_allclose(xyz[protein].mean(axis=0), box.sum(axis=0) / 2, atol=2e-3)
        centres = xyz[np.array(waters)].mean(axis=1)
        fractional = _fractional(centres, box)
        assert fractional.min() >= -1e-4 and fractional.max() < 1 + 1e-4
        # molecules imaged, not atoms: every water is whole
        hydrogens = np.array(waters)[:, 1:]
        oh = np.linalg.norm(xyz[hydrogens] - xyz[oxygen][:, None, :], axis=-1)
        assert oh.max() < 0.11


def test_without_the_imager_the_protein_would_not_be_centred(run):
    """What OpenMM alone gives (each molecule's centre in the box): the test above has teeth."""
    _, stage, topology = run
    state = stage.context.getState(getPositions=True, enforcePeriodicBox=True)
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    protein = protein_atom_indices(topology)
    assert np.linalg.norm(xyz[protein].mean(axis=0) - box.sum(axis=0) / 2) > 1.0


def test_chains_stay_together_in_a_triclinic_box():
    """Two protein chains on opposite sides of the box and a water: unit-level check."""
    box = np.array([[3.0, 0.0, 0.0], [1.0, 3.0, 0.0], [-1.0, 1.0, 3.0]])  # OpenMM's reduced form
    chain_a = np.array([[0.1, 0.1, 0.1], [0.2, 0.1, 0.1]])
    chain_b = chain_a + np.array([0.3, 0.0, 0.0]) + box[0] + box[1]  # next to a, one image away
    water = np.array([[-5.0, 0.2, 0.3], [-5.1, 0.2, 0.3]])
    positions = np.concatenate([chain_a, chain_b, water])
    imager = FrameImager((np.array([0, 1]), np.array([2, 3]), np.array([4, 5])), np.arange(4))
    imaged = imager(positions, box)
    np.testing.assert_allclose(imaged[:4].mean(axis=0), box.sum(axis=0) / 2, atol=1e-12)
    np.testing.assert_allclose(imaged[2] - imaged[0], [0.3, 0.0, 0.0], atol=1e-12)  # together
    fractional = _fractional(imaged[4:].mean(axis=0, keepdims=True), box)
    assert np.all((fractional >= 0) & (fractional < 1))
    for molecule in ((0, 1), (2, 3), (4, 5)):  # each moved as a whole
        np.testing.assert_allclose(imaged[molecule[1]] - imaged[molecule[0]],
                                   positions[molecule[1]] - positions[molecule[0]], atol=1e-12)
    lattice = np.linalg.solve(box.T, (imaged - positions - (imaged[0] - positions[0])).T).T
    np.testing.assert_allclose(lattice, np.round(lattice), atol=1e-9)  # whole box vectors only
