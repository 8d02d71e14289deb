"""Time the analysis of a full-size campaign: 3 replicas x 31 windows x 5000 frames.

That is the seed's campaign (500 ns windows saved every 100 ps). The CV
series are drawn exactly from a double-well PMF (tests/analysis/synthetic.py)
with the autocorrelation of a typical Q series (statistical inefficiency
about 19) and, as the worst case for MBAR's size, with none at all.

Each run is what the command does by default: read, decorrelate, the KDE PMF
through pymbar's FES with 100 bootstrap resamples (whole replicas as blocks)
for all replicas and for each alone, forward/reverse convergence, what to run
next, then every CSV, upstream-style .dat file and plot, and the HTML report.
Prints the median wall time of 3 runs against the 60 s budget, and where the
time of the median run went.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT / "umbrella-scripts"), str(REPO_ROOT)]

from protbench_nrp.analysis import (DEFAULT_BOOTSTRAPS, DEFAULT_METHOD,  # noqa: E402
                                    analyze_campaign, load_campaign, write_outputs)
from protbench_nrp.store import LocalStore  # noqa: E402
from tests.analysis.synthetic import write_synthetic_campaign  # noqa: E402

BUDGET_S = 60.0
REPEATS = 3


def time_once(root: Path, campaign) -> tuple[float, dict[str, float]]:
    parts = {}
    start = time.perf_counter()
    samples = load_campaign(LocalStore(root), campaign)
    parts["reading CV and parameter files"] = time.perf_counter() - start
    analysis = analyze_campaign(samples, method=DEFAULT_METHOD, n_bootstraps=DEFAULT_BOOTSTRAPS)
    parts.update(analysis.timings_s)
    written = time.perf_counter()
    write_outputs(analysis, root, report=True)
    parts["writing tables, .dat files, plots and report"] = time.perf_counter() - written
    total = time.perf_counter() - start
    parts["other (holes, overlap, next steps)"] = total - sum(parts.values())
    return total, parts


CASES = {"typical": ("typical Q autocorrelation (g ~ 19)", 0.9),
         "uncorrelated": ("uncorrelated frames (largest MBAR)", 0.0)}


def main(cases=tuple(CASES)) -> None:
    logging.getLogger("pymbar").setLevel(logging.ERROR)  # the no-JAX banner is not a result
    for label, correlation in (CASES[case] for case in cases):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            synthetic = write_synthetic_campaign(root, replicas=(1, 2, 3), n_windows=31,
                                                 k_kcal_per_mol=800.0, n_frames=5000,
                                                 correlation=correlation)
            runs = [time_once(root, synthetic.campaign) for _ in range(REPEATS)]
        times = [total for total, _ in runs]
        median = statistics.median(times)
        print(f"93 windows x 5000 frames, {label}, {DEFAULT_METHOD} + {DEFAULT_BOOTSTRAPS} bootstrap "
              f"resamples: median {median:.2f} s over {REPEATS} runs (min {min(times):.2f}, max "
              f"{max(times):.2f}); {median / BUDGET_S:.2f} of the {BUDGET_S:.0f} s budget")
        _, parts = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        for name, seconds in sorted(parts.items(), key=lambda item: -item[1]):
            print(f"    {seconds:6.2f} s  {seconds / median:5.1%}  {name}", flush=True)


if __name__ == "__main__":
    # Optional arguments choose the cases: typical, uncorrelated (default: both).
    main(tuple(sys.argv[1:]) or tuple(CASES))
