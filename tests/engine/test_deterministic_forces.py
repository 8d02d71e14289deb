"""PROTBENCH_DETERMINISTIC_FORCES: OpenMM's DeterministicForces where OpenMM has it, refused where not.

OpenMM 8.6.1 lists the property on CPU (and CUDA, absent here), not on
OpenCL, and refuses the name on OpenCL and Reference; Reference needs
nothing, its sums run in one fixed order. The setting is refused for OpenCL
before OpenMM is reached: by the stage's settings, the window script and the
launcher's check of EXTRA_ENV.
"""

from __future__ import annotations

import openmm
import pytest

from protbench_nrp.engine import DETERMINISTIC_FORCES_PROPERTY, EngineError, create_context, langevin_integrator
from protbench_nrp.variables import value_problems
from protbench_nrp.window import WindowInputError, WindowSettings

from .conftest import run_window, toy_system


def _context(platform: str, deterministic: bool):
    return create_context(toy_system(), langevin_integrator(300.0, 2.0), platform, "mixed", deterministic)


@pytest.mark.parametrize("deterministic", [True, False])
def test_the_property_reaches_a_cpu_context(deterministic):
    context = _context("CPU", deterministic)
    assert context.getPlatform().getPropertyValue(context, "DeterministicForces") == str(deterministic).lower()


def test_reference_runs_with_nothing_to_set():
    context = _context("Reference", True)
    assert context.getPlatform().getName() == "Reference" and DETERMINISTIC_FORCES_PROPERTY["Reference"] is None


def test_opencl_is_refused_before_openmm_which_refuses_the_name_too(opencl):
    with pytest.raises(EngineError, match="PROTBENCH_DETERMINISTIC_FORCES=true, but OpenMM's OpenCL platform "
                                          "has no DeterministicForces property.*PROTBENCH_PLATFORM"):
        _context("OpenCL", True)
    # the table follows OpenMM: it lists the property for CPU and refuses it on OpenCL and Reference
    assert "DeterministicForces" in openmm.Platform.getPlatformByName("CPU").getPropertyNames()
    for name in ("OpenCL", "Reference"):
        with pytest.raises(openmm.OpenMMException, match="Illegal property name: DeterministicForces"):
            openmm.Context(toy_system(), openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name),
                           {"DeterministicForces": "true"})
    assert "OpenCL" not in DETERMINISTIC_FORCES_PROPERTY


def test_the_settings_the_script_and_the_launcher_refuse_it_on_opencl(tmp_path):
    with pytest.raises(WindowInputError, match="PROTBENCH_DETERMINISTIC_FORCES"):
        WindowSettings.resolve("villin", "amber14-vacuum", 1, 0, n_windows=2, platform="OpenCL",
                               deterministic_forces=True)
    done = run_window(tmp_path, PROTBENCH_PLATFORM="OpenCL", PROTBENCH_DETERMINISTIC_FORCES="true")
    assert done.returncode != 0 and "PROTBENCH_DETERMINISTIC_FORCES" in done.stdout + done.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was written
    env = {"PROTBENCH_TARGET": "villin", "PROTBENCH_FF": "amber14-vacuum", "PROTBENCH_REPLICA": "1",
           "PROTBENCH_WINDOW": "0", "PROTBENCH_PLATFORM": "OpenCL", "PROTBENCH_DETERMINISTIC_FORCES": "true"}
    problems = value_problems(env, ("steered", "window"))
    assert any("run-umbrella-window.py would refuse this" in p and "PROTBENCH_DETERMINISTIC_FORCES" in p
               for p in problems), problems
    assert not value_problems({**env, "PROTBENCH_PLATFORM": "CUDA"}, ("steered", "window"))
    unreadable = value_problems({**env, "PROTBENCH_DETERMINISTIC_FORCES": "maybe"}, ("window",))
    assert any(p.startswith("Invalid value for PROTBENCH_DETERMINISTIC_FORCES") for p in unreadable), unreadable
