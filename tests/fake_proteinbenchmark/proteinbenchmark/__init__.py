"""A test-only stand-in for upstream proteinbenchmark: its public API and file contract, built with OpenMM.

Upstream (github.com/openforcefield/proteinbenchmark) needs the OpenFF stack,
pdb2pqr and a GPU; this package follows what the setup stage relies on, as
upstream's ``proteinbenchmark/protein_system.py`` and ``force_fields.py``
define it, and builds real files from OpenMM's solvated villin:

* ``benchmark_targets``: target name -> parameters (``temperature``,
  ``pressure``, ``ph``, ``ionic_strength``, ``initial_pdb``, ``target_type``,
  ``solvent_padding``);
* ``force_fields``: name -> ``force_field_file``, ``water_model``,
  ``water_model_file``;
* :class:`~proteinbenchmark.protein_system.ProteinBenchmarkSystem`.

Tests put ``tests/fake_proteinbenchmark`` on ``sys.path`` (and on
``PYTHONPATH`` for scripts) to make it importable as ``proteinbenchmark``.
"""

from pathlib import Path

import openmm.app
import openmm.unit as unit

from .protein_system import ProteinBenchmarkSystem

#: The target whose residues are numbered from this, not from 1 as test.pdb's are.
FIRST_RESIDUE_NUMBER = 5


class RenumberedPDB:
    """test.pdb's villin, its residues numbered from ``first``: what upstream reads with ``read_text()``."""

    def __init__(self, first: int):
        self.first = first

    def read_text(self) -> str:
        import io

        pdb = openmm.app.PDBFile(str(Path(openmm.app.__file__).parent / "data" / "test.pdb"))
        modeller = openmm.app.Modeller(pdb.topology, pdb.positions)
        modeller.deleteWater()
        for n, residue in enumerate(modeller.topology.residues()):
            residue.id = str(self.first + n)
        text = io.StringIO()
        openmm.app.PDBFile.writeFile(modeller.topology, modeller.positions, text, keepIds=True)
        return text.getvalue()


benchmark_targets = {
    "villin-from-5": {
        "temperature": 300.0 * unit.kelvin,
        "pressure": 1.0 * unit.atmosphere,
        "ph": 7.0,
        "ionic_strength": 0.0 * unit.molar,
        "initial_pdb": RenumberedPDB(FIRST_RESIDUE_NUMBER),
        "target_type": "folded",
        "solvent_padding": 0.5 * unit.nanometer,
    },
}

force_fields = {
    "amber14-tip3p-pb": {
        "force_field_file": "amber14-all.xml",
        "water_model": "tip3p",
        "water_model_file": "amber14/tip3p.xml",
    },
}

__all__ = ["ProteinBenchmarkSystem", "benchmark_targets", "force_fields"]
