"""Building the umbrella System of a target: the setup stage of a campaign.

The bundled local target ``villin`` (the villin headpiece of OpenMM's own
``openmm/app/data/test.pdb``: amber14 in vacuum or OBC2 implicit solvent with
its water removed, or ``amber14-tip3p`` in its own box of TIP3P water with
PME) is built from OpenMM alone, so the whole campaign runs on a laptop and in
the tests. proteinbenchmark targets are built by
proteinbenchmark, which exists only in the cluster image (see
:class:`ProteinbenchmarkBuilder`).

Whichever builds it, setup ends the same way: the native contacts are taken
from the input (experimental) structure before minimization, as upstream
proteinbenchmark does, the structure is minimized, the umbrella bias
``k*(Q-Q0)^2`` is added (default ``k`` the seed's 5000 kcal/mol, so a tool that
takes k from the XML pulls with it), and :class:`SetupFiles` writes the System XML, the
minimized PDB and the contacts file, each atomically, the System last: its
presence means setup is finished.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contacts import (
    NativeContacts,
    add_umbrella_bias,
    find_native_contacts,
    find_umbrella_force,
    fraction_native_contacts_force,
    match_protein_atoms,
)
from .errors import ProtbenchError
from .files import atomic_write
from .layout import Campaign
from .products import LocalSizes, missing_setup

LOCAL_TARGET = "villin"


@dataclass(frozen=True)
class LocalForceField:
    """OpenMM force field files of a local force field, and whether it has explicit water."""

    files: tuple[str, ...]
    explicit_water: bool = False


LOCAL_FORCE_FIELDS = {
    "amber14-vacuum": LocalForceField(("amber14-all.xml",)),
    "amber14-obc2": LocalForceField(("amber14-all.xml", "implicit/obc2.xml")),
    # test.pdb's own 2761 TIP3P waters in its periodic box, PME: production's physics.
    "amber14-tip3p": LocalForceField(("amber14-all.xml", "amber14/tip3p.xml"), explicit_water=True),
}
HYDROGEN_MASS_AMU = 3.0  # repartitioned (upstream proteinbenchmark's choice) so 4 fs steps are stable
NONBONDED_CUTOFF_NM = 1.0
#: Explicit water: PME, Lennard-Jones cut at 0.9 nm and switched off from 0.8 nm.
PME_CUTOFF_NM = 0.9
PME_SWITCH_NM = 0.8
WATER_MODEL = "tip3p"
MINIMIZE_TOLERANCE_KJ_PER_MOL_NM = 10.0
_IONS = ("NA", "CL", "K")


class SetupError(ProtbenchError, RuntimeError):
    """A target's System cannot be built here; the message says why and what to do."""


def bundled_villin_pdb() -> Path:
    """Path of OpenMM's bundled ``test.pdb`` (villin headpiece in water)."""
    import openmm.app

    path = Path(os.path.dirname(openmm.app.__file__)) / "data" / "test.pdb"
    if not path.is_file():
        raise FileNotFoundError(
            f"OpenMM's bundled {path} is missing; reinstall openmm (pip install openmm)"
        )
    return path


@dataclass
class ParametrizedSystem:
    """A System without the umbrella bias, and the structure (nm) it describes."""

    topology: object
    system: object
    positions_nm: np.ndarray

    @property
    def periodic(self) -> bool:
        return bool(self.system.usesPeriodicBoundaryConditions())

    @property
    def box_vectors_nm(self) -> np.ndarray | None:
        """The periodic box (rows a, b, c) in nm; ``None`` when the System is not periodic."""
        return _box_nm(self.system) if self.periodic else None


@dataclass
class UmbrellaSystem:
    """A System with its umbrella bias, the structure it was built from and its contacts."""

    topology: object
    system: object
    positions_nm: np.ndarray
    contacts: NativeContacts

    def native_fraction(self, platform=None) -> float:
        """Q of :attr:`positions_nm` as the System's own bias force evaluates it."""
        return collective_variable(self.system, self.positions_nm, platform)


def parametrize_local_villin(ff: str = "amber14-vacuum", pdb_path: Path | str | None = None,
                             padding_nm: float | None = None) -> ParametrizedSystem:
    """Villin with amber14, HMR (3 amu) and HBond constraints, in vacuum, OBC2 or TIP3P water.

    Vacuum and implicit solvent: water and ions are removed, 1 nm cutoff, no
    box. ``amber14-tip3p``: the water of the structure is kept in its periodic
    box (or replaced, see ``padding_nm``), rigid, PME with a 0.9 nm cutoff
    switched from 0.8 nm. The barostat is not part of the System: each stage
    adds its own (:func:`protbench_nrp.engine.set_barostat`).

    Parameters
    ----------
    ff : str
        A key of :data:`LOCAL_FORCE_FIELDS`.
    pdb_path : path, optional
        Structure to build from; OpenMM's bundled ``test.pdb`` by default.
    padding_nm : float, optional
        Explicit water only: remove the structure's water and ions and
        solvate afresh, with at least this much water between the protein
        and the box edge, neutralized with Na+/Cl-.
    """
    import openmm.app as app
    import openmm.unit as unit

    if ff not in LOCAL_FORCE_FIELDS:
        raise SetupError(
            f"force field {ff!r} is not available for the local target {LOCAL_TARGET!r}; "
            f"set PROTBENCH_FF to one of {', '.join(LOCAL_FORCE_FIELDS)}"
        )
    if pdb_path is not None and not Path(pdb_path).is_file():
        raise SetupError(
            f"the initial structure {pdb_path} does not exist; point PROTBENCH_INITIAL_PDB at "
            f"a PDB file, or unset it to use OpenMM's bundled test.pdb"
        )
    local = LOCAL_FORCE_FIELDS[ff]
    check_solvent_padding(LOCAL_TARGET, ff, padding_nm)
    pdb_path = Path(pdb_path or bundled_villin_pdb())
    try:
        pdb = app.PDBFile(str(pdb_path))
        forcefield = app.ForceField(*local.files)
        modeller = app.Modeller(pdb.topology, pdb.positions)
        if local.explicit_water:
            system = _solvated_system(modeller, forcefield, pdb_path, padding_nm)
        else:
            modeller.deleteWater()
            modeller.delete([r for r in modeller.topology.residues() if r.name.upper() in _IONS])
            modeller.topology.setPeriodicBoxVectors(None)
            system = forcefield.createSystem(
                modeller.topology,
                nonbondedMethod=app.CutoffNonPeriodic,
                nonbondedCutoff=NONBONDED_CUTOFF_NM * unit.nanometer,
                constraints=app.HBonds,
                hydrogenMass=HYDROGEN_MASS_AMU * unit.amu,
            )
    except (ValueError, KeyError, IndexError) as error:
        raise SetupError(
            f"{pdb_path} cannot be parametrized with {ff}: {error}. Give a complete, protonated "
            f"protein structure in PROTBENCH_INITIAL_PDB, or unset it to use OpenMM's test.pdb"
        ) from error
    positions = np.array(modeller.positions.value_in_unit(unit.nanometer))
    return ParametrizedSystem(modeller.topology, system, positions)


def check_solvent_padding(target: str, ff: str, padding_nm: float | None) -> None:
    """Raise :class:`SetupError` unless ``padding_nm`` is unset or usable for ``target`` and ``ff``.

    Needs no OpenMM: the launcher checks a setup Job's settings with it.
    """
    if padding_nm is None:
        return
    if target != LOCAL_TARGET:
        raise SetupError(f"PROTBENCH_SOLVENT_PADDING applies to the local target {LOCAL_TARGET!r} "
                         f"only; {target!r} is solvated by proteinbenchmark: unset it")
    local = LOCAL_FORCE_FIELDS.get(ff)
    if local is not None and not local.explicit_water:
        explicit = ", ".join(k for k, v in LOCAL_FORCE_FIELDS.items() if v.explicit_water)
        raise SetupError(f"a solvent padding ({padding_nm} nm) needs a force field with explicit "
                         f"water, not {ff!r}; unset PROTBENCH_SOLVENT_PADDING or set PROTBENCH_FF "
                         f"to {explicit}")
    if not (math.isfinite(padding_nm) and padding_nm > 0):
        raise SetupError(f"solvent padding {padding_nm} nm must be a positive number; set "
                         f"PROTBENCH_SOLVENT_PADDING")


def _solvated_system(modeller, forcefield, pdb_path: Path, padding_nm: float | None):
    """The PME System of ``modeller``'s water box (re-solvated first when ``padding_nm`` is set)."""
    import openmm.app as app
    import openmm.unit as unit

    if padding_nm is not None:
        modeller.deleteWater()
        modeller.delete([r for r in modeller.topology.residues() if r.name.upper() in _IONS])
        modeller.addSolvent(forcefield, model=WATER_MODEL, padding=padding_nm * unit.nanometer,
                            neutralize=True)
    elif modeller.topology.getPeriodicBoxVectors() is None:
        raise SetupError(f"{pdb_path} has no periodic box (CRYST1 record) for its water; give a "
                         f"solvated structure with its box, or set PROTBENCH_SOLVENT_PADDING to "
                         f"solvate it afresh")
    elif not any(r.name.upper() in ("HOH", "WAT") for r in modeller.topology.residues()):
        raise SetupError(f"{pdb_path} holds no water; give a solvated structure, or set "
                         f"PROTBENCH_SOLVENT_PADDING to solvate it")
    return forcefield.createSystem(
        modeller.topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=PME_CUTOFF_NM * unit.nanometer,
        switchDistance=PME_SWITCH_NM * unit.nanometer,
        constraints=app.HBonds,
        rigidWater=True,
        hydrogenMass=HYDROGEN_MASS_AMU * unit.amu,
    )


def add_native_contact_bias(parametrized: ParametrizedSystem,
                            contacts: NativeContacts | None = None) -> UmbrellaSystem:
    """Add the Q bias to ``parametrized`` with the seed's default k (5000 kcal/mol, in kJ/mol).

    ``contacts`` are those of the native structure; by default they are found
    on ``parametrized``'s own structure. The bias is periodic exactly when the
    System is, so a solvated protein that crosses the box edge keeps its
    contacts. Every stage sets ``k`` and ``Q0`` in its Context itself.
    """
    from .science import KJ_PER_KCAL, UMBRELLA_K_KCAL_PER_MOL

    if contacts is None:
        contacts = find_native_contacts(parametrized.topology, parametrized.positions_nm,
                                        box_vectors_nm=parametrized.box_vectors_nm)
    cv = fraction_native_contacts_force(contacts, periodic=parametrized.periodic)
    add_umbrella_bias(parametrized.system, cv, k_kj_per_mol=UMBRELLA_K_KCAL_PER_MOL * KJ_PER_KCAL)
    return UmbrellaSystem(parametrized.topology, parametrized.system,
                          parametrized.positions_nm, contacts)


def build_local_villin(ff: str = "amber14-vacuum", pdb_path: Path | str | None = None) -> UmbrellaSystem:
    """Build villin with the Q bias, without minimizing."""
    return add_native_contact_bias(parametrize_local_villin(ff, pdb_path))


def minimize(parametrized: ParametrizedSystem, platform=None, properties: dict | None = None,
             tolerance_kj_per_mol_nm: float = MINIMIZE_TOLERANCE_KJ_PER_MOL_NM) -> ParametrizedSystem:
    """Return ``parametrized`` with its structure moved to the nearest energy minimum.

    ``platform`` (an ``openmm.Platform``, Reference by default) and its
    ``properties`` come from :func:`protbench_nrp.engine.select_platform`.
    """
    import openmm
    import openmm.unit as unit

    context = _context(parametrized.system, parametrized.positions_nm, platform, properties)
    openmm.LocalEnergyMinimizer.minimize(
        context, tolerance_kj_per_mol_nm * unit.kilojoule_per_mole / unit.nanometer)
    positions = context.getState(getPositions=True).getPositions(asNumpy=True)
    return ParametrizedSystem(parametrized.topology, parametrized.system,
                              np.array(positions.value_in_unit(unit.nanometer)))


def collective_variable(system, positions_nm, platform=None, box_vectors_nm=None) -> float:
    """Value of the umbrella force's collective variable (Q) for ``positions_nm``.

    ``box_vectors_nm`` (rows a, b, c) replaces the System's default box of a
    periodic System, e.g. with the box of a frame of an NPT run.
    """
    import openmm.unit as unit

    _index, force = find_umbrella_force(system)
    context = _context(system, positions_nm, platform)
    if box_vectors_nm is not None and system.usesPeriodicBoundaryConditions():
        context.setPeriodicBoxVectors(*(np.asarray(v, float) * unit.nanometer for v in box_vectors_nm))
    return float(force.getCollectiveVariableValues(context)[0])


def _box_nm(system) -> np.ndarray:
    import openmm.unit as unit

    return np.array([v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])


def _context(system, positions_nm, platform, properties=None):
    import openmm

    integrator = openmm.VerletIntegrator(0.001)
    if platform is None:
        platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, integrator, platform, properties or {})
    context.setPositions(np.asarray(positions_nm))
    return context


class ProteinbenchmarkBuilder:
    """Build a proteinbenchmark target with proteinbenchmark's own setup.

    proteinbenchmark (and the OpenFF stack behind it) exists only in the
    cluster image. The builder uses its public API and file contract, as
    upstream's ``proteinbenchmark/protein_system.py`` defines them (and as the
    test-only stand-in ``tests/fake_proteinbenchmark`` follows, which builds
    real files with OpenMM): ``benchmark_targets``, ``force_fields`` (keys
    ``force_field_file``, ``water_model``, optional ``water_model_file``),
    ``ProteinBenchmarkSystem(result_directory, target_name, target_parameters,
    force_field_name, water_model_name, force_field_file, water_model_file)``,
    whose ``setup()`` writes ``{T}-{FF}/setup/{T}-{FF}-protonated.pdb``,
    ``-solvated.pdb``, ``-openmm-system.xml`` and ``-minimized.pdb``
    (resuming from whatever of them it finds), and the attributes
    ``protonated_pdb``, ``parametrized_system`` and ``minimized_coords``
    naming three of them. It writes into the same ``S/setup/`` directory as
    the rest of the setup stage (its ``S-minimized.pdb`` is the layout's
    minimized structure), so a restarted pod resumes it from the bucket.

    Upstream writes the minimized PDB with OpenMM's default ``keepIds=False``,
    which renumbers residues from 1, while the protonated PDB keeps the input's
    numbering; native contacts found on the protonated structure are therefore
    carried onto the System by structure (:func:`~protbench_nrp.contacts.match_protein_atoms`),
    never by residue number.
    """

    #: Attributes of ``ProteinBenchmarkSystem`` naming its outputs. Upstream's
    #: protein_system.py called the last two ``openmm_system`` and ``minimized_pdb``
    #: up to its commit 5cb62e1 (2023-09-29); releases that old are not supported.
    OUTPUT_ATTRIBUTES = ("protonated_pdb", "parametrized_system", "minimized_coords")

    def __init__(self, target: str, ff: str):
        self.target = target
        self.ff = ff
        self._native_pdb: Path | None = None

    @staticmethod
    def module():
        """The ``proteinbenchmark`` module, or ``None`` where it is not installed.

        Raises
        ------
        science.ProteinbenchmarkImportError
            When it is installed but its import fails.
        """
        from .science import import_proteinbenchmark

        return import_proteinbenchmark()

    def build(self, results_root: Path) -> ParametrizedSystem:
        """Run proteinbenchmark's setup under ``results_root`` and load what it left."""
        import openmm
        import openmm.app as app
        import openmm.unit as unit

        pb = self.module()
        if pb is None:
            raise SetupError(
                f"target {self.target!r} is built by proteinbenchmark, which is not installed "
                f"here; run the setup Job in the cluster image, or use the local target "
                f"{LOCAL_TARGET!r} with one of {', '.join(LOCAL_FORCE_FIELDS)}"
            )
        if self.ff not in pb.force_fields:
            raise SetupError(
                f"force field {self.ff!r} is unknown to proteinbenchmark; set PROTBENCH_FF to "
                f"one of {', '.join(sorted(pb.force_fields))}"
            )
        ff_entry = pb.force_fields[self.ff]
        benchmark = pb.ProteinBenchmarkSystem(
            result_directory=str(results_root),
            target_name=self.target,
            target_parameters=pb.benchmark_targets[self.target],
            force_field_name=self.ff,
            water_model_name=ff_entry["water_model"],
            force_field_file=ff_entry["force_field_file"],
            water_model_file=ff_entry.get("water_model_file"),
        )
        benchmark.setup()
        protonated, system_xml, minimized = (self._output(benchmark, name)
                                             for name in self.OUTPUT_ATTRIBUTES)
        # Protonated but neither solvated nor minimized: the experimental heavy-atom coordinates.
        self._native_pdb = protonated
        system = openmm.XmlSerializer.deserialize(system_xml.read_text())
        pdb = app.PDBFile(str(minimized))
        if pdb.topology.getNumAtoms() != system.getNumParticles():
            raise SetupError(f"proteinbenchmark's {minimized} has {pdb.topology.getNumAtoms()} "
                             f"atoms but its {system_xml} {system.getNumParticles()} particles; "
                             f"remove {minimized.parent} and run setup again")
        positions = np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        return ParametrizedSystem(pdb.topology, system, positions)

    def _output(self, benchmark, name: str) -> Path:
        """The file that ``benchmark.<name>`` names, checked to exist after ``setup()``."""
        value = getattr(benchmark, name, None)
        if value is None:
            raise SetupError(
                f"proteinbenchmark's ProteinBenchmarkSystem has no attribute {name!r}; this "
                f"setup reads {', '.join(self.OUTPUT_ATTRIBUTES)}, as upstream names them since "
                f"2023-10 (commit c7cd8b2): set PROTBENCH_PROTEINBENCHMARK_REF to a newer commit")
        path = Path(value)
        if not path.is_file() or path.stat().st_size == 0:
            raise SetupError(f"proteinbenchmark's setup() left no {path} ({name}); remove "
                             f"{path.parent} and run setup again")
        return path

    def native_contacts(self, built: ParametrizedSystem) -> NativeContacts:
        """Contacts of the protonated structure (before solvation and minimization) on ``built``'s atoms.

        Matched by structure: the n-th protein residue of the protonated PDB
        is the n-th of the System, its atoms matched by name.

        Raises
        ------
        SetupError
            When the two structures are not the same protein.
        """
        import openmm.app as app
        import openmm.unit as unit

        if self._native_pdb is None:
            raise RuntimeError("call build() before native_contacts()")
        pdb = app.PDBFile(str(self._native_pdb))
        positions = np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        contacts = find_native_contacts(pdb.topology, positions)
        try:
            mapping = match_protein_atoms(pdb.topology, built.topology,
                                          f"proteinbenchmark's {self._native_pdb.name}",
                                          "its minimized structure")
            return contacts.mapped(mapping, built.topology)
        except ValueError as error:
            raise SetupError(f"{error}; remove {self._native_pdb.parent} and run setup again") from None


class SetupFiles:
    """The three outputs of the setup stage under one results root.

    Parameters
    ----------
    root : path
        Local results root (``/results`` in a pod).
    campaign : Campaign
        Target and force field; every path comes from :mod:`layout`.
    """

    def __init__(self, root: Path | str, campaign: Campaign):
        self.root = Path(root)
        self.campaign = campaign

    @property
    def system_xml(self) -> Path:
        return self.root / self.campaign.system_xml

    @property
    def minimized_pdb(self) -> Path:
        return self.root / self.campaign.minimized_pdb

    @property
    def contacts_file(self) -> Path:
        return self.root / self.campaign.contacts_file

    def all(self) -> tuple[Path, Path, Path]:
        return self.contacts_file, self.minimized_pdb, self.system_xml

    def missing(self) -> list[Path]:
        """The outputs absent or empty (:func:`protbench_nrp.products.missing_setup`), as paths."""
        names = set(missing_setup(LocalSizes(self.root), self.campaign))
        return [path for path in self.all() if path.name in names]

    def is_complete(self) -> bool:
        """Whether setup is done: the same test as ``stages.is_complete`` for the setup Job."""
        return not self.missing()

    def write(self, umbrella: UmbrellaSystem) -> None:
        """Write every file atomically; the System XML, the mark of a finished setup, last."""
        import openmm
        import openmm.app as app
        import openmm.unit as unit

        contacts = io.StringIO()
        umbrella.contacts.write(contacts)
        atomic_write(self.contacts_file, contacts.getvalue())
        pdb = io.StringIO()
        app.PDBFile.writeFile(umbrella.topology, umbrella.positions_nm * unit.nanometer, pdb,
                              keepIds=True)
        atomic_write(self.minimized_pdb, pdb.getvalue())
        atomic_write(self.system_xml, openmm.XmlSerializer.serialize(umbrella.system))

    def load(self) -> UmbrellaSystem:
        """Read a finished setup back; the error names any missing file and the fix."""
        import openmm
        import openmm.app as app
        import openmm.unit as unit

        missing = self.missing()
        if missing:
            raise SetupError(
                "the setup stage has not finished: missing "
                + ", ".join(str(p) for p in missing)
                + "; run umbrella-scripts/setup-umbrella-system.py (the setup Job) first"
            )
        system = openmm.XmlSerializer.deserialize(self.system_xml.read_text())
        find_umbrella_force(system)
        pdb = app.PDBFile(str(self.minimized_pdb))
        positions = np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        return UmbrellaSystem(pdb.topology, system, positions, NativeContacts.read(self.contacts_file))


@dataclass(frozen=True)
class SetupReport:
    """What :func:`set_up` did, for the script to print."""

    already_done: bool
    n_contacts: int
    native_fraction: float
    builder: str


def set_up(root: Path | str, target: str, ff: str, platform=None, properties: dict | None = None,
           initial_pdb: Path | str | None = None, padding_nm: float | None = None) -> SetupReport:
    """Build, minimize and write the umbrella System of ``target`` with ``ff`` under ``root``.

    Idempotent: a finished setup is left untouched. ``villin`` is built from
    OpenMM alone; any other target by proteinbenchmark when importable.

    Raises
    ------
    science.UnknownTargetError
        For a target neither catalog knows.
    science.ProteinbenchmarkImportError
        When proteinbenchmark is installed but cannot be imported.
    SetupError
        For a target or force field that cannot be built here.
    """
    from .science import target_conditions

    campaign = Campaign(target, ff)
    files = SetupFiles(root, campaign)
    if files.is_complete():
        done = files.load()
        return SetupReport(True, len(done.contacts), done.native_fraction(platform), "existing")
    # Before anything is built: an unknown target, or a proteinbenchmark that is installed but
    # broken, is refused here for the local target too, as the later stages would refuse it.
    target_conditions(target, ff)
    if target == LOCAL_TARGET:
        parametrized = parametrize_local_villin(ff, initial_pdb, padding_nm)
        # Upstream takes the native contacts from the experimental coordinates, not the minimum.
        contacts = find_native_contacts(parametrized.topology, parametrized.positions_nm,
                                        box_vectors_nm=parametrized.box_vectors_nm)
        parametrized = minimize(parametrized, platform, properties)
        builder = "openmm"
    else:
        check_solvent_padding(target, ff, padding_nm)
        pb_builder = ProteinbenchmarkBuilder(target, ff)
        parametrized = pb_builder.build(Path(root))
        contacts = pb_builder.native_contacts(parametrized)
        builder = "proteinbenchmark"
    umbrella = add_native_contact_bias(parametrized, contacts)
    files.write(umbrella)
    return SetupReport(False, len(umbrella.contacts), umbrella.native_fraction(platform), builder)
