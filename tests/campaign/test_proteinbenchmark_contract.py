"""ProteinbenchmarkBuilder against proteinbenchmark's public API and file contract.

``tests/fake_proteinbenchmark`` follows upstream's ``protein_system.py``
(constructor, ``setup()``'s four files, the attributes ``protonated_pdb``,
``parametrized_system`` and ``minimized_coords``, ``benchmark_targets`` and
``force_fields``) and builds real files from OpenMM's solvated villin. Its
target ``villin-from-5`` numbers its residues from 5; the minimized PDB,
written with ``keepIds=False``, numbers them from 1.

Also: a proteinbenchmark that is installed but fails to import is reported
with its own error, and the target catalog does not fall back to the
built-in conditions.
"""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from protbench_nrp import science
from protbench_nrp.contacts import find_native_contacts, find_umbrella_force, match_protein_atoms
from protbench_nrp.layout import Campaign
from protbench_nrp.systems import ProteinbenchmarkBuilder, SetupError, SetupFiles, set_up
from protbench_nrp.window import WindowInputError, WindowSettings

from .conftest import run_script, script_env

FAKE = Path(__file__).resolve().parents[1] / "fake_proteinbenchmark"
TARGET, FF = "villin-from-5", "amber14-tip3p-pb"
CAMPAIGN = Campaign(TARGET, FF)
SETUP_FILES = ("protonated.pdb", "solvated.pdb", "openmm-system.xml", "minimized.pdb")


def _forget_proteinbenchmark():
    for name in [m for m in sys.modules if m == "proteinbenchmark" or m.startswith("proteinbenchmark.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def fake_proteinbenchmark():
    """The fake package importable as ``proteinbenchmark`` for this module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(FAKE))
        _forget_proteinbenchmark()
        import proteinbenchmark

        assert Path(proteinbenchmark.__file__).is_relative_to(FAKE)
        yield proteinbenchmark
    _forget_proteinbenchmark()


@pytest.fixture(scope="module")
def built(fake_proteinbenchmark, tmp_path_factory):
    """One setup of ``villin-from-5`` through the builder (solvation, 20 minimizer iterations)."""
    root = tmp_path_factory.mktemp("pb-setup")
    report = set_up(root, TARGET, FF, platform=openmm.Platform.getPlatformByName("CPU"))
    return root, report


def _setup_file(root, suffix) -> Path:
    return root / CAMPAIGN.setup_dir / f"{CAMPAIGN.name}-{suffix}"


def test_setup_runs_proteinbenchmark_and_leaves_both_file_sets(built):
    root, report = built
    assert report.builder == "proteinbenchmark" and not report.already_done
    for suffix in SETUP_FILES:
        assert _setup_file(root, suffix).stat().st_size > 0, suffix
    files = SetupFiles(root, CAMPAIGN)
    assert files.is_complete()
    umbrella = files.load()
    assert umbrella.system.usesPeriodicBoundaryConditions()
    _index, bias = find_umbrella_force(umbrella.system)
    assert bias.getCollectiveVariable(0).usesPeriodicBoundaryConditions()
    # the setup structure is the one proteinbenchmark minimized: Q near 1 (20 iterations only)
    assert report.native_fraction == pytest.approx(1.0, abs=0.05)
    assert umbrella.native_fraction(openmm.Platform.getPlatformByName("CPU")) == pytest.approx(
        report.native_fraction, abs=1e-6)


def test_the_minimized_pdb_is_renumbered_from_1_while_the_protonated_keeps_5(built):
    root, _ = built
    protonated = app.PDBFile(str(_setup_file(root, "protonated.pdb"))).topology
    minimized = app.PDBFile(str(root / CAMPAIGN.minimized_pdb)).topology
    assert _setup_file(root, "minimized.pdb") == root / CAMPAIGN.minimized_pdb  # one file, shared
    assert [r.id for r in protonated.residues()][:2] == ["5", "6"]
    assert [r.id for r in minimized.residues()][:2] == ["1", "2"]


def test_contacts_map_onto_the_system_by_structure_not_residue_number(built):
    root, _ = built
    protonated = app.PDBFile(str(_setup_file(root, "protonated.pdb")))
    native = find_native_contacts(protonated.topology,
                                  protonated.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    written = SetupFiles(root, CAMPAIGN).load()
    system_atoms = list(written.topology.atoms())
    native_atoms = list(protonated.topology.atoms())
    assert len(written.contacts) == len(native)
    np.testing.assert_allclose(written.contacts.r0_nm, native.r0_nm, atol=1e-6)  # 6 decimals
    for old, new in ((native.atom_i, written.contacts.atom_i), (native.atom_j, written.contacts.atom_j)):
        for i, j in zip(old, new):
            a, b = native_atoms[i], system_atoms[j]
            assert (a.residue.name, a.name, a.residue.index) == (b.residue.name, b.name, b.residue.index)
            assert int(a.residue.id) == int(b.residue.id) + 4  # the numbers differ; the atoms do not
    # the contacts file names the System's atoms, as its own structure numbers them
    first = written.contacts.identities[0][0]
    assert first.residue == system_atoms[written.contacts.atom_i[0]].residue.id
    # matching by chain and residue number fails: upstream's renumbered PDB names them anew
    with pytest.raises(ValueError, match="not in the System's topology"):
        native.on(written.topology)


def test_the_target_catalog_is_proteinbenchmarks(fake_proteinbenchmark):
    conditions = science.target_conditions(TARGET, FF)
    assert conditions.source == "proteinbenchmark"
    assert (conditions.temperature_kelvin, conditions.pressure_atm) == (300.0, 1.0)


def test_outputs_under_older_attribute_names_are_refused_with_the_fix(built, fake_proteinbenchmark, tmp_path):
    """Upstream named them openmm_system and minimized_pdb up to 2023-09; the builder reads the new names only."""
    root, _ = built
    shutil.copytree(root / CAMPAIGN.setup_dir, tmp_path / CAMPAIGN.setup_dir)
    current = fake_proteinbenchmark.ProteinBenchmarkSystem

    class OldNames(current):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.openmm_system, self.minimized_pdb = self.parametrized_system, self.minimized_coords
            del self.parametrized_system, self.minimized_coords

        def setup(self):
            """Every file is there already: nothing to do, as upstream's setup() finds."""

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fake_proteinbenchmark, "ProteinBenchmarkSystem", OldNames)
        with pytest.raises(SetupError, match="no attribute 'parametrized_system'.*"
                                             "PROTBENCH_PROTEINBENCHMARK_REF"):
            ProteinbenchmarkBuilder(TARGET, FF).build(tmp_path)


def test_structures_of_different_proteins_do_not_match():
    pdb = app.PDBFile(str(Path(app.__file__).parent / "data" / "test.pdb"))
    shorter = app.Modeller(pdb.topology, pdb.positions)
    shorter.delete([next(shorter.topology.residues())])
    with pytest.raises(ValueError, match="the native structure has 35 protein residues but the "
                                         "System's structure has 34"):
        match_protein_atoms(pdb.topology, shorter.topology)
    renamed = copy.deepcopy(pdb.topology)
    next(renamed.residues()).name = "GLY"
    with pytest.raises(ValueError, match="protein residue 1 differs .*LEU 1 vs GLY 1"):
        match_protein_atoms(pdb.topology, renamed)
    lacking = app.Modeller(pdb.topology, pdb.positions)
    lacking.delete([a for a in lacking.topology.atoms() if a.residue.index == 0 and a.name == "CB"])
    with pytest.raises(ValueError, match="LEU 1 lacks atom.s. CB of LEU 1"):
        match_protein_atoms(pdb.topology, lacking.topology)


# -- a proteinbenchmark that is installed but broken ----------------------------------------

BROKEN = {
    "missing dependency": ("import pdb2pqr_is_missing_here\n",
                           "ModuleNotFoundError: No module named 'pdb2pqr_is_missing_here'"),
    "missing submodule": ("from .system_setup import solvate\n",
                          "ModuleNotFoundError: No module named 'proteinbenchmark.system_setup'"),
    "import error in a dependency": ("raise ImportError(\"cannot import name 'Molecule' from 'openff.toolkit'\")\n",
                                     "ImportError: cannot import name 'Molecule' from 'openff.toolkit'"),
}


@pytest.fixture(params=sorted(BROKEN))
def broken(request, tmp_path, monkeypatch):
    """A proteinbenchmark package on sys.path whose import fails; returns (its directory, the error)."""
    source, error = BROKEN[request.param]
    package = tmp_path / "broken" / "proteinbenchmark"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(source)
    monkeypatch.syspath_prepend(str(package.parent))
    _forget_proteinbenchmark()
    yield package.parent, error
    _forget_proteinbenchmark()


def test_a_broken_import_is_reported_as_itself(broken):
    _, error = broken
    with pytest.raises(science.ProteinbenchmarkImportError) as raised:
        science.import_proteinbenchmark()
    assert error in str(raised.value)
    assert "not importable" not in str(raised.value) and "not installed" not in str(raised.value)
    with pytest.raises(science.ProteinbenchmarkImportError):
        ProteinbenchmarkBuilder.module()


@pytest.mark.parametrize("target, ff", [("gb3", "null-0.0.3-pair-opc3"), ("villin", "amber14-vacuum"),
                                        ("villin", "amber14-tip3p")])
def test_the_catalog_does_not_fall_back_to_built_in_conditions(broken, target, ff):
    _, error = broken
    with pytest.raises(science.ProteinbenchmarkImportError, match="built-in conditions are no substitute"):
        science.target_conditions(target, ff)
    with pytest.raises(WindowInputError, match="importing it fails"):
        WindowSettings.resolve(target, ff, 1, 0, platform="Reference")


def test_the_setup_script_reports_the_broken_import(broken, tmp_path):
    directory, error = broken
    env = script_env(PROTBENCH_TARGET="gb3", PROTBENCH_FF="null-0.0.3-pair-opc3", PROTBENCH_PLATFORM="CPU",
                     PYTHONPATH=str(directory))
    result = run_script("setup-umbrella-system.py", "-o", str(tmp_path / "results"), env=env)
    assert result.returncode == 2, result.stderr
    assert error in result.stderr and "Traceback" not in result.stderr
    assert "not importable" not in result.stderr
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("*.*"))
