"""``ProteinBenchmarkSystem`` as upstream's ``proteinbenchmark/protein_system.py`` defines its API.

Constructor arguments, the attributes ``protonated_pdb``,
``parametrized_system`` and ``minimized_coords``, and what ``setup()`` leaves
in ``{result_directory}/{T}-{FF}/setup/``: ``{T}-{FF}-protonated.pdb`` (the
input's residue numbering kept), ``-solvated.pdb``, ``-openmm-system.xml``
and ``-minimized.pdb``, written with OpenMM's default ``keepIds=False``, so its
residues are numbered from 1. Each step is skipped when its file exists and is
not empty, as upstream's are. The physics is OpenMM's (amber14, TIP3P, PME),
and minimization is cut short: tests need the files, not a minimum.
"""

from __future__ import annotations

from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as unit

#: Upstream minimizes to convergence on a GPU; a few iterations are enough here.
MINIMIZATION_ITERATIONS = 20


def _done(path) -> bool:
    path = Path(path)
    return path.is_file() and path.stat().st_size > 0


class ProteinBenchmarkSystem:
    """One benchmark target with one force field and water model."""

    def __init__(self, result_directory: str, target_name: str, target_parameters: dict,
                 force_field_name: str, water_model_name: str, force_field_file: str,
                 water_model_file: str = None):
        for quantity in ("pressure", "temperature", "ph", "ionic_strength"):
            if quantity not in target_parameters:
                raise ValueError(f'benchmark_targets for target {target_name} must contain "{quantity}"')
        self.target_name = target_name
        self.target_parameters = target_parameters
        self.force_field = force_field_name
        self.water_model = water_model_name
        self.force_field_file = force_field_file
        self.water_model_file = water_model_file
        self.system_name = f"{target_name}-{force_field_name}"
        self.base_path = Path(result_directory, self.system_name)
        self.setup_dir = Path(self.base_path, "setup")
        self.setup_prefix = Path(self.setup_dir, self.system_name)
        self.initial_pdb = f"{self.setup_prefix}-initial.pdb"
        self.protonated_pdb = f"{self.setup_prefix}-protonated.pdb"
        self.minimized_coords = f"{self.setup_prefix}-minimized.pdb"
        self.parametrized_system = f"{self.setup_prefix}-openmm-system.xml"

    def _forcefield(self) -> app.ForceField:
        files = [self.force_field_file] + ([self.water_model_file] if self.water_model_file else [])
        return app.ForceField(*files)

    def setup(self):
        """Protonate (the input is protonated already), solvate, parametrize and minimize."""
        self.setup_dir.mkdir(parents=True, exist_ok=True)
        solvated_pdb = f"{self.setup_prefix}-solvated.pdb"
        if not _done(self.protonated_pdb):
            Path(self.initial_pdb).write_text(self.target_parameters["initial_pdb"].read_text())
            initial = app.PDBFile(self.initial_pdb)
            # pdb2pqr, which upstream protonates with, keeps the input's residue numbers
            with open(self.protonated_pdb, "w") as handle:
                app.PDBFile.writeFile(initial.topology, initial.positions, handle, keepIds=True)
        if not _done(solvated_pdb):
            protonated = app.PDBFile(self.protonated_pdb)
            modeller = app.Modeller(protonated.topology, protonated.positions)
            modeller.addSolvent(self._forcefield(), model=self.water_model,
                                padding=self.target_parameters["solvent_padding"],
                                ionicStrength=self.target_parameters["ionic_strength"])
            with open(solvated_pdb, "w") as handle:
                app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)
        if not _done(self.parametrized_system):
            solvated = app.PDBFile(solvated_pdb)
            system = self._forcefield().createSystem(
                solvated.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                switchDistance=0.8 * unit.nanometer, constraints=app.HBonds, rigidWater=True,
                hydrogenMass=3.0 * unit.amu)
            Path(self.parametrized_system).write_text(openmm.XmlSerializer.serialize(system))
        if not _done(self.minimized_coords):
            solvated = app.PDBFile(solvated_pdb)
            system = openmm.XmlSerializer.deserialize(Path(self.parametrized_system).read_text())
            context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                     openmm.Platform.getPlatformByName("CPU"))
            context.setPeriodicBoxVectors(*solvated.topology.getPeriodicBoxVectors())
            context.setPositions(solvated.positions)
            openmm.LocalEnergyMinimizer.minimize(context, 10.0, MINIMIZATION_ITERATIONS)
            positions = context.getState(getPositions=True).getPositions()
            with open(self.minimized_coords, "w") as handle:
                app.PDBFile.writeFile(solvated.topology, positions, handle)  # keepIds=False
