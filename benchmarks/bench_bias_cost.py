#!/usr/bin/env python3
"""What the Q umbrella costs: a window's MD speed with and without the bias, per platform.

The same villin System (vacuum, amber14, HMR, 4 fs; what the demo's windows
run) is integrated with its ``CustomCVForce`` umbrella ``k*(Q-Q0)^2`` on Q
(k = 5000 kcal/mol, Q0 = 0.94, window 3 of 31) and with the umbrella removed,
in the same process, alternating, for several repeats, from the same
minimized and thermalized state. Each run reads the state back at the end,
so an asynchronous GPU has finished.

Prints ns/day of every repeat, the medians and their ratio (with/without)
for each platform: CPU, and OpenCL and CUDA where OpenMM lists them (here
OpenCL is pocl on the CPU: its figures show the GPU kernels' relative cost,
not a GPU's speed).

Examples
--------
    python benchmarks/bench_bias_cost.py                       # every platform this machine has
    python benchmarks/bench_bias_cost.py --platform CUDA --steps 20000
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "umbrella-scripts"))

TEMPERATURE_KELVIN = 300.0
TIMESTEP_FS = 4.0
K_KCAL_PER_MOL = 5000.0
CENTRE = 0.94


def available_platforms() -> list[str]:
    import openmm

    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    return [name for name in ("CPU", "OpenCL", "CUDA") if name in names]


def systems():
    """``(with_bias, without_bias, positions_nm)`` of villin in vacuum."""
    from protbench_nrp.contacts import find_umbrella_force
    from protbench_nrp.systems import build_local_villin, minimize

    built = build_local_villin("amber14-vacuum")
    positions = minimize(built).positions_nm
    without = copy.deepcopy(built.system)
    index, _ = find_umbrella_force(without)
    without.removeForce(index)
    return built.system, without, positions


def run(system, positions_nm, platform: str, precision: str, steps: int, biased: bool) -> float:
    """ns/day of ``steps`` steps after a warm-up (kernels compiled, caches filled)."""
    import openmm.unit as unit

    from protbench_nrp.engine import create_context, langevin_integrator
    from protbench_nrp.science import KJ_PER_KCAL

    integrator = langevin_integrator(TEMPERATURE_KELVIN, TIMESTEP_FS)
    context = create_context(system, integrator, platform, precision)
    context.setPositions(positions_nm * unit.nanometer)
    context.setVelocitiesToTemperature(TEMPERATURE_KELVIN * unit.kelvin, 1)
    if biased:
        context.setParameter("k", K_KCAL_PER_MOL * KJ_PER_KCAL)
        context.setParameter("Q0", CENTRE)
    integrator.step(100)
    context.getState(getEnergy=True)
    start = time.perf_counter()
    integrator.step(steps)
    context.getState(getPositions=True)
    elapsed = time.perf_counter() - start
    del context
    return steps * TIMESTEP_FS * 1e-6 / (elapsed / 86400.0)


@click.command()
@click.option("--platform", "platforms", multiple=True,
              help="CPU, OpenCL or CUDA; repeat for several [default: every one listed here].")
@click.option("--precision", default="mixed", show_default=True, help="For OpenCL and CUDA.")
@click.option("--steps", default=2000, show_default=True, help="Steps per run (4 fs).")
@click.option("--repeats", default=5, show_default=True, help="Alternating pairs of runs.")
def main(platforms, precision, steps, repeats):
    """Median ns/day with and without the Q umbrella, and their ratio, on each platform."""
    with_bias, without_bias, positions = systems()
    print(f"villin in vacuum, {with_bias.getNumParticles()} atoms, {steps} steps of {TIMESTEP_FS} fs "
          f"per run, {repeats} repeats; bias k = {K_KCAL_PER_MOL} kcal/mol at Q0 = {CENTRE}")
    for platform in platforms or available_platforms():
        label = platform if platform == "CPU" else f"{platform} ({precision})"
        biased, bare = [], []
        for repeat in range(repeats):
            # alternate the order so that drift of a shared machine favours neither side
            pair = [(bare, without_bias, False), (biased, with_bias, True)]
            for speeds, system, flag in (pair if repeat % 2 == 0 else pair[::-1]):
                speeds.append(run(system, positions, platform, precision, steps, flag))
            print(f"  {label} repeat {repeat + 1}: without bias {bare[-1]:8.2f} ns/day   "
                  f"with bias {biased[-1]:8.2f} ns/day")
        ratio = statistics.median(biased) / statistics.median(bare)
        paired = statistics.median(b / u for b, u in zip(biased, bare))
        print(f"{label}: median without bias {statistics.median(bare):8.2f} ns/day, with bias "
              f"{statistics.median(biased):8.2f} ns/day; ratio with/without {ratio:.3f} "
              f"(median of paired ratios {paired:.3f})")


if __name__ == "__main__":
    main()
