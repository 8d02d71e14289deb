"""A campaign as short as the ``--follow`` tests': two windows of 50 frames."""

from __future__ import annotations

from protbench_nrp.analysis import CONVERGENCE_FRACTIONS, analyze_campaign, load_campaign
from protbench_nrp.store import LocalStore

from .synthetic import write_synthetic_campaign


def test_convergence_parts_with_samples_in_one_window_are_skipped_and_said(tmp_path):
    # Decorrelated, each window keeps a handful of samples: the early forward parts hold samples of
    # one window only, where MBAR's overlap matrix has no second state (pymbar raised IndexError).
    short = write_synthetic_campaign(tmp_path / "results", replicas=(1,), n_windows=2, n_frames=50,
                                     correlation=0.9, seed=3)
    analysis = analyze_campaign(load_campaign(LocalStore(short.root), short.campaign))
    said = [w for w in analysis.warnings if w.startswith("convergence:") and "were skipped" in w]
    assert len(said) == 1, analysis.warnings
    assert "forward 0.2" in said[0] and "fewer than two windows, too few for MBAR" in said[0]
    assert "Run the windows longer" in said[0]
    skipped = said[0].split("the parts ", 1)[1].split(" of production", 1)[0].split(", ")
    # These two windows (Q0 1.0 and 0.4) do not overlap at all: a part holding both cannot be
    # estimated either, and is named with MBAR's reason rather than dropped unsaid.
    unestimated = [w for w in analysis.warnings if w.startswith("convergence:") and "could not be estimated" in w]
    failed = ([part.split(" (", 1)[0] for part in
               unestimated[0].split("the parts ", 1)[1].split(" of production could", 1)[0].split("; ")]
              if unestimated else [])
    kept = {f"{p.direction} {p.fraction:g}" for p in analysis.convergence}
    # every part is computed, with two states at least, or named as skipped or as not estimable
    assert not kept & set(skipped) and not kept & set(failed) and not set(skipped) & set(failed)
    assert all(len(p.pmf.state_windows) >= 2 for p in analysis.convergence)
    assert len(kept) + len(skipped) + len(failed) == 2 * len(CONVERGENCE_FRACTIONS), (kept, skipped, failed)
