"""Time and peak memory of the analysis along any CV, against plain pymbar on the same data in the same run.

Four data sets of 3 replicas x 31 windows x 5000 frames, drawn exactly
(``tests/analysis/synthetic.py``):

* ``q-typical``, ``q-uncorrelated``: Q across a double well, in a campaign's
  results layout, with a typical Q autocorrelation (statistical inefficiency
  ~19) and with none (465,000 uncorrelated samples, the worst case);
* ``phi-typical``, ``phi-uncorrelated``: a torsion in degrees, periodic, as
  GROMACS ``.xvg`` series named by a WHAM metadata file of 93 lines (the
  three replicas' windows of one centre pool into one state), windows
  straddling ±180°, the same two autocorrelations.

Each run is a fresh process, so its peak RSS is its own:

* **ours**: what the command does by default: read, decorrelate, the KDE PMF
  with 100 bootstrap resamples (all replicas, and each alone for a campaign),
  the two-state free energy, forward and reverse convergence, every table,
  ``.dat`` file, plot and the report;
* **pymbar**: the same reading and decorrelation, the same bias energies
  (minimum image round the torsion), then plain ``pymbar.FES``: its KDE, of the
  same bandwidth and tolerance, with its own bootstrap
  (``generate_fes(n_bootstraps=B)``, ``get_fes(uncertainty_method="bootstrap")``).
  pymbar 4.0.3 re-solves MBAR once per state inside every resample
  (``generate_fes`` in ``pymbar/fes.py``), so at 465,000 samples one of its
  resamples costs minutes: ``--baseline-bootstraps`` (default 2) sets B, and a
  run with B = 0 gives pymbar's cost of one resample, ``(t_B - t_0) / B``.

Prints, per data set, the medians of ``--repeats`` runs: wall time and peak
RSS of each, their ratios (ours / pymbar's), each one's cost per resample and
its ratio, and ours against the 60 s budget with where its time went.
Usage: ``bench_any_cv.py [--repeats N] [--baseline-bootstraps B] [CASE ...]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT / "umbrella-scripts"), str(REPO_ROOT)]

BUDGET_S = 60.0
N_REPLICAS, N_WINDOWS, N_FRAMES = 3, 31, 5000
TEMPERATURE_KELVIN = 300.0
#: The torsion's windows: 31 centres round the circle, half a spacing off the seam; each window
#: ~0.6 spacings wide (K of ½K(x−c)² in kcal/mol/deg²), as the Q windows are at k = 800.
PHI_CENTRES = -180.0 + 360.0 * (np.arange(N_WINDOWS) + 0.5) / N_WINDOWS
PHI_SPRING = 0.596 / (0.6 * 360.0 / N_WINDOWS) ** 2
PHI_STATES = ("gauche=0:120", "trans=120:-120")
CASES = {"q-typical": ("q", 0.9), "q-uncorrelated": ("q", 0.0),
         "phi-typical": ("phi", 0.9), "phi-uncorrelated": ("phi", 0.0)}


def _quiet():
    logging.getLogger("pymbar").setLevel(logging.ERROR)


def write_data(kind: str, correlation: float, root: Path) -> dict:
    """Write one data set; returns what the runs need to find it."""
    from tests.analysis.synthetic import Torsion, write_engine_windows, write_synthetic_campaign

    if kind == "q":
        synthetic = write_synthetic_campaign(root, replicas=tuple(range(1, N_REPLICAS + 1)), n_windows=N_WINDOWS,
                                             k_kcal_per_mol=800.0, n_frames=N_FRAMES, correlation=correlation)
        return {"kind": kind, "root": str(root), "target": synthetic.campaign.target, "ff": synthetic.campaign.ff}
    metadata = write_engine_windows(root, Torsion(), np.tile(PHI_CENTRES, N_REPLICAS), PHI_SPRING,
                                    TEMPERATURE_KELVIN, N_FRAMES, correlation=correlation, seed=5,
                                    metadata_name="phi.meta")
    return {"kind": kind, "root": str(root), "metadata": str(metadata)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def run_ours(data: dict) -> dict:
    """The command's default analysis, files and report included (in a fresh process)."""
    _quiet()
    from protbench_nrp.analysis import analyze_campaign, load_campaign, write_outputs
    from protbench_nrp.cvaxis import CVAxis
    from protbench_nrp.layout import Campaign
    from protbench_nrp.metadata import read_metadata
    from protbench_nrp.states import parse_states
    from protbench_nrp.store import LocalStore

    started = time.perf_counter()
    parts = {}
    if data["kind"] == "q":
        samples = load_campaign(LocalStore(data["root"]), Campaign(data["target"], data["ff"]))
        states, out = None, Path(data["root"])
    else:
        axis = CVAxis(360.0)
        samples = read_metadata(data["metadata"], axis=axis, name="phi")
        states, out = parse_states(PHI_STATES, axis), Path(data["root"]) / "out"
    parts["reading"] = time.perf_counter() - started
    analysis = analyze_campaign(samples, states=states)
    parts.update(analysis.timings_s)
    written = time.perf_counter()
    write_outputs(analysis, out, report=True)
    parts["writing tables, .dat files, plots and report"] = time.perf_counter() - written
    total = time.perf_counter() - started
    parts["other (holes, overlap, next steps)"] = total - sum(parts.values())
    samples_n = sum(len(w.samples) for w in analysis.windows)
    bandwidth = analysis.combined.bandwidth
    bootstrap = analysis.timings_s["all replicas: bootstrap"]
    return {"seconds": total, "rss_mb": _peak_rss_mb(), "parts": parts, "samples": samples_n,
            "bandwidth": bandwidth, "grid": analysis.combined.bin_centres.tolist(),
            "per_resample_s": bootstrap / 100.0}


def run_pymbar(data: dict, n_bootstraps: int, bandwidth: float, grid: list) -> dict:
    """Plain pymbar on the same data: read, decorrelate, FES's KDE with its own bootstrap (a fresh process)."""
    _quiet()
    import pymbar
    from pymbar import timeseries

    from protbench_nrp.pmf import KDE_RELATIVE_TOLERANCE
    from protbench_nrp.science import MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K

    started = time.perf_counter()
    windows = []  # (centre, k of k (x - c)^2, values)
    period = None
    if data["kind"] == "q":
        base = Path(data["root"]) / f"{data['target']}-{data['ff']}"
        for parameters in sorted(base.glob("replica-*/window-*/*-umbrella-parameters.json")):
            record = json.loads(parameters.read_text())
            values = np.loadtxt(next(parameters.parent.glob("*-production-fraction-native-contacts.dat")),
                                comments="#")[:, 1]
            windows.append((record["centre"], record["k_kcal_per_mol"], values))
    else:
        period = 360.0
        metadata = Path(data["metadata"])
        for line in metadata.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                path, centre, spring = line.split()[:3]
                values = np.loadtxt(metadata.parent / path, comments=("#", "@"))[:, 1]
                windows.append((float(centre), float(spring) / 2, values))

    def difference(x, c):
        d = np.asarray(x) - c
        return d - period * np.round(d / period) if period else d

    kt = MOLAR_GAS_CONSTANT_KCAL_PER_MOL_K * TEMPERATURE_KELVIN
    samples = []
    for centre, k, values in windows:
        series = difference(values, centre)
        start, _, _ = timeseries.detect_equilibration(series, nskip=max(1, len(series) // 200))
        kept = series[start:]
        g = timeseries.statistical_inefficiency(kept)
        indices = timeseries.subsample_correlated_data(kept, g=g)
        samples.append((centre, k, centre + kept[indices]))
    states = sorted({(c, k) for c, k, _ in samples})
    x_n = np.concatenate([x for key in states for c, k, x in samples if (c, k) == key])
    if period:
        x_n = -period / 2 + np.mod(x_n + period / 2, period)
    n_k = np.array([sum(len(x) for c, k, x in samples if (c, k) == key) for key in states])
    centres = np.array([c for c, _ in states])
    forces = np.array([k for _, k in states])
    u_kn = forces[:, None] * difference(x_n[None, :], centres[:, None]) ** 2 / kt
    fes = pymbar.FES(u_kn, n_k, mbar_options={"initialize": "BAR"})
    fes.generate_fes(np.zeros(len(x_n)), x_n, fes_type="kde", n_bootstraps=n_bootstraps,
                     kde_parameters={"bandwidth": bandwidth, "kernel": "gaussian", "rtol": KDE_RELATIVE_TOLERANCE})
    fes.get_fes(np.asarray(grid), reference_point="from-lowest",
                uncertainty_method="bootstrap" if n_bootstraps else None)
    return {"seconds": time.perf_counter() - started, "rss_mb": _peak_rss_mb(), "samples": len(x_n)}


def in_fresh_process(function, *arguments) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, arguments)


def main(cases, repeats: int, baseline_bootstraps: int) -> None:
    for case in cases:
        kind, correlation = CASES[case]
        with tempfile.TemporaryDirectory() as tmp:
            data = write_data(kind, correlation, Path(tmp))
            ours, pymbar_b, pymbar_0 = [], [], []
            for _ in range(repeats):  # interleaved, so a change of load hits all three alike
                ours.append(in_fresh_process(run_ours, data))
                bandwidth, grid = ours[-1]["bandwidth"], ours[-1]["grid"]
                pymbar_b.append(in_fresh_process(run_pymbar, data, baseline_bootstraps, bandwidth, grid))
                pymbar_0.append(in_fresh_process(run_pymbar, data, 0, bandwidth, grid))
        median = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
        t_ours, t_b, t_0 = median(ours, "seconds"), median(pymbar_b, "seconds"), median(pymbar_0, "seconds")
        m_ours, m_b = median(ours, "rss_mb"), median(pymbar_b, "rss_mb")
        per_ours = median(ours, "per_resample_s")
        per_pymbar = (t_b - t_0) / baseline_bootstraps if baseline_bootstraps else float("nan")
        print(f"{case}: {N_REPLICAS} x {N_WINDOWS} windows x {N_FRAMES} frames, {ours[0]['samples']} "
              f"uncorrelated samples; medians of {repeats} run(s)")
        print(f"    ours (KDE, 100 resamples, each replica, convergence, files, report): {t_ours:7.2f} s, "
              f"peak RSS {m_ours:6.0f} MB; {t_ours / BUDGET_S:.2f} of the {BUDGET_S:.0f} s budget")
        print(f"    pymbar.FES, its own bootstrap of {baseline_bootstraps}: {t_b:7.2f} s, peak RSS {m_b:6.0f} MB "
              f"(with none: {t_0:.2f} s)")
        print(f"    ratios ours / pymbar: time {t_ours / t_b:.3g}, peak memory {m_ours / m_b:.3g}; one "
              f"resample {per_ours:.3f} s against {per_pymbar:.3g} s, ratio {per_ours / per_pymbar:.3g}")
        parts = sorted(ours, key=lambda r: r["seconds"])[len(ours) // 2]["parts"]
        for name, seconds in sorted(parts.items(), key=lambda item: -item[1]):
            print(f"        {seconds:7.2f} s  {seconds / t_ours:5.1%}  {name}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-bootstraps", type=int, default=2,
                        help="pymbar's resamples: 0 or at least 2 (pymbar refuses 1)")
    options = parser.parse_args()
    unknown = [case for case in options.cases if case not in CASES]
    if unknown or options.repeats < 1 or options.baseline_bootstraps in (1,) or options.baseline_bootstraps < 0:
        parser.error(f"cases are {', '.join(CASES)}; --repeats at least 1; --baseline-bootstraps 0 or at least 2")
    main(options.cases or list(CASES), options.repeats, options.baseline_bootstraps)
