#!/usr/bin/env python3
"""What the window engine costs: its production loop against a bare OpenMM step loop.

Both sides run the same System (villin with its Q umbrella) on the same
platform with the same LangevinMiddleIntegrator at 4 fs, in the same process,
alternating, for several repeats. The engine side is the window's own
production stage (``UmbrellaWindow.production_stage``) with every reporter:
segmented DCD, state data, CV file, Progress JSON every frame, checkpoint plus
portable State every ``--checkpoint-frames`` frames, a saved State every
``--save-state-frames``. The bare side is ``integrator.step(frame_steps)`` in a
loop with no output at all.

A frame every 500 steps (2 ps) is 50 times denser than the production default
(100 ps), and a checkpoint with a saved State every 4 frames is 25 times
denser than the default (every 100 frames), so the overhead measured here
bounds the real one. Each run is 10000 steps (20 frames; a few seconds on a CPU, short runs
of 2000 steps varied by +-10%); the two sides alternate, and the median of paired ratios is
printed too, because a shared machine drifts.

Prints the ns/day of every repeat, the medians and their ratio (engine/bare),
and exits 1 when the ratio is below ``--min-ratio``.

Examples
--------
    python benchmarks/bench_window_overhead.py                     # villin in vacuum, CPU
    python benchmarks/bench_window_overhead.py --platform CUDA --explicit-water
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "umbrella-scripts"))

from protbench_nrp.layout import Campaign  # noqa: E402

TEMPERATURE_KELVIN = 300.0
TIMESTEP_FS = 4.0


def build_explicit_villin():
    """All of OpenMM's test.pdb (villin in water, ~8.9k atoms) with PME and the Q umbrella."""
    import openmm.app as app
    import openmm.unit as unit
    import numpy as np

    from protbench_nrp.contacts import (add_umbrella_bias, find_native_contacts,
                                        fraction_native_contacts_force)
    from protbench_nrp.systems import HYDROGEN_MASS_AMU, UmbrellaSystem, bundled_villin_pdb

    pdb = app.PDBFile(str(bundled_villin_pdb()))
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.PME,
                                     nonbondedCutoff=0.9 * unit.nanometer, constraints=app.HBonds,
                                     hydrogenMass=HYDROGEN_MASS_AMU * unit.amu)
    positions = np.array(pdb.positions.value_in_unit(unit.nanometer))
    contacts = find_native_contacts(pdb.topology, positions)
    add_umbrella_bias(system, fraction_native_contacts_force(contacts, periodic=True))
    return UmbrellaSystem(pdb.topology, system, positions, contacts)


def write_inputs(root: Path, campaign: Campaign, built, platform: str, precision: str) -> None:
    """Minimize, then write what a window reads (and an equilibrated state to start from)."""
    import openmm
    import openmm.app as app

    from protbench_nrp.engine import create_context

    context = create_context(built.system, openmm.VerletIntegrator(0.001), platform, precision)
    if built.system.usesPeriodicBoundaryConditions():
        context.setPeriodicBoxVectors(*built.topology.getPeriodicBoxVectors())
    context.setPositions(built.positions_nm)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 500)
    context.setVelocitiesToTemperature(TEMPERATURE_KELVIN)
    state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
    files = campaign.window_files(1, 0)
    for path in (files.system_xml, files.start_pdb, files.equilibrated_state):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / files.system_xml).write_text(openmm.XmlSerializer.serialize(built.system))
    (root / files.steered_state).write_text(openmm.XmlSerializer.serialize(state))
    (root / files.equilibrated_state).write_text(openmm.XmlSerializer.serialize(state))
    with open(root / files.start_pdb, "w") as handle:
        app.PDBFile.writeFile(built.topology, state.getPositions(), handle)


def warm_up(context, frame_steps: int) -> None:
    """Compile kernels and fill caches, then put the step count back to 0."""
    context.getIntegrator().step(frame_steps)
    context.getState(getPositions=True, getEnergy=True)
    context.setStepCount(0)


def ns_per_day(steps: int, seconds: float) -> float:
    return steps * TIMESTEP_FS * 1e-6 / (seconds / 86400.0)


def bare_run(window, inputs, frames: int, frame_steps: int) -> float:
    """ns/day of ``integrator.step`` alone, from the equilibrated state."""
    from protbench_nrp.engine import load_state_xml

    context, integrator = window.new_context(inputs, TIMESTEP_FS)
    context.setState(load_state_xml(window.path(window.files.equilibrated_state)))
    window.apply_bias(context)
    warm_up(context, frame_steps)
    start = time.perf_counter()
    for _ in range(frames):
        integrator.step(frame_steps)
    context.getState(getPositions=True)  # wait for an asynchronous GPU to finish
    return ns_per_day(frames * frame_steps, time.perf_counter() - start)


def engine_run(window, inputs, frame_steps: int) -> float:
    """ns/day of the window's production stage with all its reporters, from the equilibrated state."""
    keep = window.path(window.files.equilibrated_state)
    for path in window.path(window.files.directory).iterdir():
        if path != keep:
            path.unlink()
    stage, fallbacks = window.production_stage(inputs)
    stage.resume(fallbacks)
    window.apply_bias(stage.context)
    warm_up(stage.context, frame_steps)
    stage.context.getSystem().getForce(inputs.umbrella_index).getCollectiveVariableValues(stage.context)
    start = time.perf_counter()
    outcome = stage.run()
    elapsed = time.perf_counter() - start
    assert outcome.finished
    return ns_per_day(stage.schedule.total_steps, elapsed)


@click.command()
@click.option("--platform", envvar="PROTBENCH_PLATFORM", default="CPU", show_default=True)
@click.option("--precision", envvar="PROTBENCH_PRECISION", default="mixed", show_default=True)
@click.option("--explicit-water", is_flag=True, help="All of test.pdb (~8.9k atoms, PME, 1 atm).")
@click.option("--frames", default=20, show_default=True, help="Frames per run (10000 steps).")
@click.option("--frame-steps", default=500, show_default=True, help="Steps between frames.")
@click.option("--checkpoint-frames", default=4, show_default=True)
@click.option("--save-state-frames", default=4, show_default=True)
@click.option("--repeats", default=9, show_default=True,
              help="Alternating pairs of runs; 9 take about 2.5 minutes for vacuum villin on 2 CPU cores.")
@click.option("--min-ratio", default=0.95, show_default=True,
              help="Exit 1 when median(engine)/median(bare) is below this.")
def main(platform, precision, explicit_water, frames, frame_steps, checkpoint_frames,
         save_state_frames, repeats, min_ratio):
    """Median ns/day of the window engine and of a bare step loop, and their ratio."""
    from protbench_nrp.systems import build_local_villin
    from protbench_nrp.window import UmbrellaWindow, WindowSettings

    built = build_explicit_villin() if explicit_water else build_local_villin("amber14-vacuum")
    campaign = Campaign("bench", "explicit" if explicit_water else "vacuum")
    frame_ps = frame_steps * TIMESTEP_FS / 1000.0
    settings = WindowSettings(
        target=campaign.target, ff=campaign.ff, replica=1, window=0,
        temperature_kelvin=TEMPERATURE_KELVIN, pressure_atm=1.0 if explicit_water else 0.0,
        production_length_ns=frames * frame_ps / 1000.0, timestep_fs=TIMESTEP_FS, frame_ps=frame_ps,
        checkpoint_ps=checkpoint_frames * frame_ps, save_state_ps=save_state_frames * frame_ps,
        checkpoint_minutes=15.0, platform=platform, precision=precision)
    settings.check()
    with tempfile.TemporaryDirectory(prefix="bench-window-") as scratch:
        root = Path(scratch)
        write_inputs(root, campaign, built, platform, precision)
        window = UmbrellaWindow(root, settings, log=lambda line: None)
        inputs = window.read_inputs()
        print(f"{platform} ({precision}), {inputs.system.getNumParticles()} atoms, "
              f"{frames} frames of {frame_steps} steps at {TIMESTEP_FS} fs, checkpoint every "
              f"{checkpoint_frames} frames, {repeats} repeats")
        bare, engine = [], []
        for repeat in range(repeats):
            # alternate the order so that drift of the machine favours neither side
            if repeat % 2 == 0:
                bare.append(bare_run(window, inputs, frames, frame_steps))
                engine.append(engine_run(window, inputs, frame_steps))
            else:
                engine.append(engine_run(window, inputs, frame_steps))
                bare.append(bare_run(window, inputs, frames, frame_steps))
            print(f"  repeat {repeat + 1}: bare {bare[-1]:8.2f} ns/day   engine {engine[-1]:8.2f} ns/day")
    bare_median, engine_median = statistics.median(bare), statistics.median(engine)
    ratio = engine_median / bare_median
    paired = statistics.median(e / b for e, b in zip(engine, bare))
    print(f"median bare   {bare_median:8.2f} ns/day")
    print(f"median engine {engine_median:8.2f} ns/day")
    print(f"ratio engine/bare {ratio:.3f} (required >= {min_ratio}); "
          f"median of paired ratios {paired:.3f}")
    sys.exit(0 if ratio >= min_ratio else 1)


if __name__ == "__main__":
    main()
