"""Time the PMF analysis of a full-size campaign: 3 replicas x 31 windows x 5000 frames.

That is the seed's campaign (500 ns windows saved every 100 ps). The CV
series are drawn exactly from a double-well PMF (tests/analysis/synthetic.py)
with the autocorrelation of a typical Q series (statistical inefficiency
about 19) and, as the worst case for MBAR's size, with none at all. Prints
the median wall time of reading, decorrelating, MBAR and writing CSV + plots,
and its ratio to the 30 s budget.
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

from protbench_nrp.analysis import (LocalResults, analyze_campaign, load_campaign,  # noqa: E402
                                    write_outputs)
from tests.analysis.synthetic import write_synthetic_campaign  # noqa: E402

BUDGET_S = 30.0
REPEATS = 3


def time_once(root: Path, campaign) -> float:
    start = time.perf_counter()
    samples = load_campaign(LocalResults(root), campaign)
    analysis = analyze_campaign(samples)
    write_outputs(analysis, root)
    return time.perf_counter() - start


def main() -> None:
    logging.getLogger("pymbar").setLevel(logging.ERROR)  # the no-JAX banner is not a result
    for label, correlation in (("typical Q autocorrelation (g ~ 19)", 0.9),
                               ("uncorrelated frames (largest MBAR)", 0.0)):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            synthetic = write_synthetic_campaign(root, replicas=(1, 2, 3), n_windows=31,
                                                 k_kcal_per_mol=800.0, n_frames=5000,
                                                 correlation=correlation)
            times = [time_once(root, synthetic.campaign) for _ in range(REPEATS)]
        median = statistics.median(times)
        print(f"93 windows x 5000 frames, {label}: median {median:.2f} s over {REPEATS} runs "
              f"(min {min(times):.2f}, max {max(times):.2f}); {median / BUDGET_S:.2f} of the "
              f"{BUDGET_S:.0f} s budget")


if __name__ == "__main__":
    main()
