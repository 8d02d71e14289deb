"""The benchmark's answer: dG_fold against exact integrals, the KDE against the histogram,
upstream-style files that rebuild the PMF, convergence, hysteresis, and what to run next."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from protbench_nrp.analysis import analyze_campaign, load_campaign
from protbench_nrp.analysis_cli import build_command
from protbench_nrp.store import LocalStore
from protbench_nrp.outputs import (FREE_ENERGY_DAT_COLUMNS, SAMPLES_DAT_COLUMNS, WINDOWS_DAT_COLUMNS,
                                   read_dat, rebuild_pmf)
from protbench_nrp.pmf import solve_mbar_from

from .conftest import CHEAP
from .synthetic import DoubleWell, exact_folding_free_energy, sample_window, write_cv_file, \
    write_synthetic_campaign

#: Folded (high CV) well 0.9 kcal/mol deeper than the unfolded one.
TILTED = DoubleWell(tilt_kcal_per_mol=-3.0)
#: Few resamples keep the suite quick; the command's default is 100.
BOOTSTRAPS = 20


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module", params=[300.0, 350.0], ids=["300K", "350K"])
def tilted(request, tmp_path_factory):
    temperature = request.param
    synthetic = write_synthetic_campaign(tmp_path_factory.mktemp("tilted") / "results", pmf=TILTED,
                                         temperature_kelvin=temperature, seed=int(temperature))
    samples = load_campaign(LocalStore(synthetic.root), synthetic.campaign)
    analyses = {method: analyze_campaign(samples, method=method, n_bootstraps=BOOTSTRAPS,
                                         convergence_fractions=())
                for method in ("histogram", "kde")}
    return synthetic, analyses


@pytest.mark.parametrize("method", ["histogram", "kde"])
def test_folding_free_energy_matches_the_exact_integral_within_its_error(tilted, method):
    synthetic, analyses = tilted
    folding = analyses[method].folding
    exact = exact_folding_free_energy(TILTED, folding.boundary, synthetic.temperature_kelvin)
    assert exact < -0.5  # the check has teeth: the folded well is the deeper one
    error = folding.dg_kcal_per_mol - exact
    assert abs(error) < 0.15, (folding, exact)
    assert abs(error) < 3 * folding.uncertainty_kcal_per_mol, (folding, exact)
    assert 0.01 < folding.uncertainty_kcal_per_mol < 0.5
    # The default boundary is the barrier top, which lies near the middle of the double well.
    assert folding.boundary == pytest.approx(TILTED.middle, abs=0.03)
    assert folding.boundary_source.startswith("the barrier top of the PMF")


def test_the_kde_pmfs_errors_are_no_worse_than_the_histograms(tilted):
    # The rule of KDE_BANDWIDTH_PER_WINDOW_SPACING, tested: inside the windows' range,
    # one spacing in from each end (where a window's tail is all there is), each PMF
    # against the exact F at the histogram's bin centres (the KDE read there from its
    # finer grid), aligned by its mean offset: the KDE's largest and RMS errors are the
    # histogram's or less.
    synthetic, analyses = tilted
    histogram = analyses["histogram"].combined
    kde = analyses["kde"].combined
    x = histogram.bin_centres
    spacing = abs(synthetic.centres[1] - synthetic.centres[0])
    inside = (x > min(synthetic.centres) + 1.5 * spacing) & (x < max(synthetic.centres) - 1.5 * spacing)
    inside &= np.isfinite(histogram.pmf_kcal_per_mol)
    assert inside.sum() >= 20

    def errors(values):
        error = values[inside] - TILTED(x[inside])
        error -= error.mean()
        return float(np.max(np.abs(error))), float(np.sqrt(np.mean(error ** 2)))

    shown = np.isfinite(kde.pmf_kcal_per_mol)
    kde_max, kde_rms = errors(np.interp(x, kde.bin_centres[shown], kde.pmf_kcal_per_mol[shown]))
    histogram_max, histogram_rms = errors(histogram.pmf_kcal_per_mol)
    # The KDE's grid is one kernel width, an eighth of the spacing; the bins half of it.
    assert len(kde.bin_centres) > 3.5 * len(histogram.bin_centres)
    assert kde.bandwidth == pytest.approx(spacing / 8)
    assert kde_max <= histogram_max, f"KDE off by up to {kde_max:.3f}, histogram by {histogram_max:.3f} kcal/mol"
    assert kde_rms <= histogram_rms, f"KDE RMS error {kde_rms:.3f}, histogram {histogram_rms:.3f} kcal/mol"
    assert kde_max < 0.3


def test_replicas_each_get_a_folding_free_energy_and_agree_without_hysteresis(tilted):
    synthetic, analyses = tilted
    analysis = analyses["kde"]
    assert analysis.hysteresis == ""
    exact = exact_folding_free_energy(TILTED, analysis.folding.boundary, synthetic.temperature_kelvin)
    for pmf in analysis.per_replica.values():
        assert pmf.folding.boundary == analysis.folding.boundary
        assert abs(pmf.folding.dg_kcal_per_mol - exact) < 3 * pmf.folding.uncertainty_kcal_per_mol
    # One replica knows less than three.
    assert all(p.folding.uncertainty_kcal_per_mol > 0.4 * analysis.folding.uncertainty_kcal_per_mol
               for p in analysis.per_replica.values())


def test_bootstrap_newton_steps_solve_mbar_as_pymbar_does():
    import pymbar

    rng = np.random.default_rng(3)
    centres = np.linspace(0.4, 1.0, 12)
    x = np.concatenate([c + rng.normal(0, 0.03, 150) for c in centres])
    n_k = np.full(len(centres), 150)
    u_kn = 400 * (x[None] - centres[:, None]) ** 2 / 0.596
    f_k = pymbar.MBAR(u_kn, n_k, initialize="BAR").f_k
    pick = np.concatenate([150 * k + rng.integers(0, 150, 150) for k in range(len(centres))])
    expected = pymbar.MBAR(u_kn[:, pick], n_k, initial_f_k=f_k).f_k
    np.testing.assert_allclose(solve_mbar_from(u_kn[:, pick], n_k, f_k), expected, atol=1e-8)
    # A state without samples (a replica block that lacks a window) still gets its free energy.
    n_gap = n_k.copy()
    n_gap[4] = 0
    kept = np.concatenate([np.arange(150 * k, 150 * (k + 1)) for k in range(len(centres)) if k != 4])
    expected = pymbar.MBAR(u_kn[:, kept], n_gap, initial_f_k=f_k).f_k
    np.testing.assert_allclose(solve_mbar_from(u_kn[:, kept], n_gap, f_k), expected, atol=1e-8)


# -- the command's files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def command_run(tmp_path_factory):
    """The command on a tilted campaign at 300 K with the KDE and a few bootstrap resamples."""
    root = tmp_path_factory.mktemp("command") / "results"
    synthetic = write_synthetic_campaign(root, pmf=TILTED, replicas=(1, 2), n_frames=1500, seed=11)
    runner = CliRunner()
    result = runner.invoke(build_command(), [
        "-o", str(root), "--target", synthetic.campaign.target, "--ff", synthetic.campaign.ff,
        "--method", "kde", "--bootstrap", "12", "--report"])
    assert result.exit_code == 0, result.output
    return synthetic, result


def test_command_prints_and_writes_the_folding_free_energy(command_run):
    synthetic, result = command_run
    campaign = synthetic.campaign
    rows = read_csv(synthetic.root / campaign.analysis_file("folding.csv"))
    assert [r["scope"] for r in rows] == ["all", "replica_1", "replica_2"]
    for column in ("dg_fold_kcal_per_mol", "uncertainty_kcal_per_mol", "boundary"):
        assert column in rows[0]
    combined = float(rows[0]["dg_fold_kcal_per_mol"])
    sigma = float(rows[0]["uncertainty_kcal_per_mol"])
    boundary = float(rows[0]["boundary"])
    exact = exact_folding_free_energy(TILTED, boundary, synthetic.temperature_kelvin)
    assert abs(combined - exact) < max(0.15, 3 * sigma)
    assert {r["boundary"] for r in rows} == {rows[0]["boundary"]}
    assert f"folding free energy dG_fold = G_folded - G_unfolded = {combined:+.2f} ± {sigma:.2f} kcal/mol" \
        in result.stdout
    assert f"fold boundary Q = {boundary:.3g}: the barrier top of the PMF" in result.stdout
    assert "errors bootstrap (12 resamples of the uncorrelated samples, whole replicas as blocks)" \
        in result.stdout


def test_an_explicit_fold_boundary_is_used_and_said(synthetic_results):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    result = CliRunner().invoke(build_command(), [
        "-o", str(root), "--target", campaign.target, "--ff", campaign.ff, "-r", "1",
        "--fold-boundary", "0.85"])
    assert result.exit_code == 0, result.output
    assert "fold boundary Q = 0.85: given with --fold-boundary" in result.stdout
    rows = read_csv(root / campaign.analysis_file("folding.csv"))
    assert [float(r["boundary"]) for r in rows] == [0.85]
    # Folded = Q above the upper well's bottom: a quarter of all, so folding costs free energy.
    exact = exact_folding_free_energy(synthetic_results.pmf, 0.85, synthetic_results.temperature_kelvin)
    assert exact > 0.5
    assert abs(float(rows[0]["dg_fold_kcal_per_mol"]) - exact) < max(
        0.15, 3 * float(rows[0]["uncertainty_kcal_per_mol"]))


@pytest.mark.parametrize("method", ["histogram", "kde"])
def test_upstream_style_files_rebuild_the_pmf_from_the_weights_alone(synthetic_results, method):
    root, campaign = synthetic_results.root, synthetic_results.campaign
    result = CliRunner().invoke(build_command(), [
        "-o", str(root), "--target", campaign.target, "--ff", campaign.ff, "-r", "1", "-r", "2",
        "--method", method, "--bootstrap", "4"])
    assert result.exit_code == 0, result.output
    free_energy, settings = read_dat(root / campaign.analysis_file("mbar-free-energy.dat"))
    assert tuple(free_energy) == FREE_ENERGY_DAT_COLUMNS
    assert settings["method"] == method
    samples, _ = read_dat(root / campaign.analysis_file("mbar-samples.dat"))
    assert tuple(samples) == SAMPLES_DAT_COLUMNS
    assert set(samples["replica"]) == {1.0, 2.0}

    grid, rebuilt = rebuild_pmf(root / campaign.analysis_file("mbar-samples.dat"), free_energy["cv"])
    np.testing.assert_allclose(grid, free_energy["cv"])
    written = free_energy["free_energy_kcal_per_mol"]
    shown = np.isfinite(written)
    assert shown.sum() > 20
    offset = np.nanmin(rebuilt[shown])  # both zero at the lowest point shown
    np.testing.assert_allclose(rebuilt[shown] - offset, written[shown], atol=2e-3)

    windows, _ = read_dat(root / campaign.analysis_file("mbar-windows.dat"))
    assert tuple(windows) == WINDOWS_DAT_COLUMNS
    assert windows["window"].tolist() == list(range(15, -1, -1))  # in order of centre, as MBAR's states
    assert windows["samples"].sum() == len(samples["cv"])
    assert windows["offset_kcal_per_mol"][0] == 0.0
    assert np.all(windows["offset_uncertainty_kcal_per_mol"][1:] > 0)

    boots, _ = read_dat(root / campaign.analysis_file("mbar-uncorrelated-samples.dat"))
    columns = list(boots)
    assert columns[:4] == ["sample", "replica", "window", "frame"]
    assert columns[4:] == ["bootstrap_001", "bootstrap_002", "bootstrap_003", "bootstrap_004"]
    n = len(samples["cv"])
    np.testing.assert_array_equal(boots["sample"][:n], np.arange(n))
    np.testing.assert_array_equal(boots["window"][:n], samples["window"])
    for column in columns[4:]:
        drawn = boots[column][boots[column] >= 0].astype(int)
        assert len(drawn) > 0.3 * n and drawn.max() < n
        # A resample draws within windows: each drawn sample keeps its window.
        assert np.all(np.diff(samples["window"][drawn]) <= 0)


def test_convergence_is_written_forward_and_reverse_with_a_plot(command_run):
    synthetic, result = command_run
    campaign = synthetic.campaign
    rows = read_csv(synthetic.root / campaign.analysis_file("convergence.csv"))
    assert [(r["direction"], r["fraction"]) for r in rows] == [
        (d, f) for d in ("forward", "reverse") for f in ("0.2", "0.4", "0.6", "0.8", "1")]
    samples = [int(r["samples"]) for r in rows[:5]]
    assert samples == sorted(samples) and samples[0] < 0.3 * samples[-1]
    full = read_csv(synthetic.root / campaign.analysis_file("folding.csv"))[0]
    # All of production forward and backward is the whole analysis again.
    for row in (rows[4], rows[9]):
        assert float(row["dg_fold_kcal_per_mol"]) == pytest.approx(float(full["dg_fold_kcal_per_mol"]), abs=1e-6)
        assert float(row["pmf_rmsd_kcal_per_mol"]) < 1e-6
    # Less data, larger error.
    assert float(rows[0]["uncertainty_kcal_per_mol"]) > float(rows[4]["uncertainty_kcal_per_mol"])
    plot = synthetic.root / campaign.analysis_file("convergence.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    assert f"wrote {plot}" in result.stdout


def test_windows_table_reports_statistical_inefficiency_and_effective_samples(command_run):
    synthetic, _ = command_run
    rows = read_csv(synthetic.root / synthetic.campaign.analysis_file("windows.csv"))
    assert len(rows) == 2 * 16
    # AR(1) coefficient 0.8: g = 9 for the Gaussian, somewhat less after the map to the CV.
    assert 5 < np.median([float(row["statistical_inefficiency"]) for row in rows]) < 11
    for row in rows:
        kept = int(row["frames"]) - int(row["discarded_frames"])
        g = float(row["statistical_inefficiency"])
        assert float(row["effective_samples"]) == pytest.approx(kept / g, rel=1e-2)
        assert int(row["samples_used"]) == pytest.approx(kept / g, rel=0.1, abs=2)


# -- hysteresis --------------------------------------------------------------------------------


def test_replicas_that_disagree_beyond_their_errors_are_called_hysteresis(tmp_path):
    root = tmp_path / "results"
    write_synthetic_campaign(root, replicas=(1, 2), pmf=TILTED, n_frames=1200, seed=2)
    # Replica 3 samples a well tilted the other way, as windows stuck near their
    # steered-MD start would.
    synthetic = write_synthetic_campaign(root, replicas=(3,), pmf=DoubleWell(tilt_kcal_per_mol=3.0),
                                         n_frames=1200, seed=3)
    result = CliRunner().invoke(build_command(), [
        "-o", str(root), "--target", synthetic.campaign.target, "--ff", synthetic.campaign.ff,
        "--bootstrap", "10"])
    assert result.exit_code == 0, result.output
    assert "warning: hysteresis: the replicas' dG_fold disagree beyond their bootstrap errors" in result.stderr
    assert "replica 3 +" in result.stderr
    assert "steered-MD starts" in result.stderr


# -- what to run next --------------------------------------------------------------------------


def test_next_steps_name_the_windows_that_dominate_the_error_and_the_launcher_settings(tmp_path):
    root = tmp_path / "results"
    synthetic = write_synthetic_campaign(root, pmf=TILTED, n_frames=1000, correlation=0.7)
    # Windows 07 and 08, astride the barrier, are nearly frozen: a handful of
    # independent samples each, where their neighbours have a hundred.
    rng = np.random.default_rng(5)
    for replica in synthetic.replicas:
        for window in (7, 8):
            values = sample_window(TILTED, synthetic.centres[window], synthetic.k_kcal_per_mol,
                                   synthetic.temperature_kelvin, 1000, rng, 0.995)
            write_cv_file(root / synthetic.campaign.window_files(replica, window).cv_timeseries, values)
    result = CliRunner().invoke(build_command(), [
        "-o", str(root), "--target", synthetic.campaign.target, "--ff", synthetic.campaign.ff,
        "--bootstrap", "40"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = lines.index("what to run next:")
    advice = "\n".join(lines[start:])
    assert "extend these windows to shrink the error of dG_fold most" in advice
    named = {int(w) for line in lines[start:] if line.strip().startswith("window") and ": production" in line
             for w in line.split(":")[0].split(None, 1)[1].split(",")}
    assert {7, 8} <= named <= set(range(5, 11)), advice
    # 1000 frames of 100 ps: 100 ns today; the suggestion is a multiple of it.
    assert "production 400 ns (4 x today's)" in advice or "production 200 ns (2 x today's)" in advice
    # Results with no trace of --local (no window logs) came from the bucket: the cluster's command.
    assert "run them on the cluster, where these results were made, one command per length:" in advice
    (command,) = [line.strip() for line in lines[start:] if "--windows" in line]
    assert command.startswith("./run-umbrella-windows.py --relaunch --extend --stage window --replicas 1,2,3 "
                              "--windows ")
    windows_flag, length = command.split("--windows ")[1].split(" --production-length ")
    assert {7, 8} <= {int(w) for w in windows_flag.split(",")}
    assert f"production {length} ns" in advice
    text = (root / synthetic.campaign.analysis_file("next-steps.txt")).read_text()
    assert command in text


def test_next_steps_name_the_command_that_works_where_the_results_were_made(tmp_path):
    """Results of the demo get the demo's command, which --demo accepts (tests/launcher/test_dry_run.py
    runs it), not the cluster's --relaunch --extend, which --demo refuses."""
    from protbench_nrp.layout import JOB_LOG_LAUNCHER

    root = tmp_path / "results"
    synthetic = write_synthetic_campaign(root, pmf=TILTED, replicas=(1, 2), n_windows=12, n_frames=400,
                                         correlation=0.7)
    rng = np.random.default_rng(5)
    for replica in synthetic.replicas:  # two nearly frozen windows: there is something to extend
        for window in (5, 6):
            values = sample_window(TILTED, synthetic.centres[window], synthetic.k_kcal_per_mol,
                                   synthetic.temperature_kelvin, 400, rng, 0.995)
            write_cv_file(root / synthetic.campaign.window_files(replica, window).cv_timeseries, values)
    # What --demo --local leaves beside each window: its log, naming the command that ran it
    # (tests/campaign/test_local.py checks a real run writes it).
    log = root / synthetic.campaign.job_log("window", 1, 0)
    log.write_text(f"# 2030-01-01 00:00:00 pb-jm-villin-amber14-vacuum-1-00: python ...\n"
                   f"{JOB_LOG_LAUNCHER}./run-umbrella-windows.py --demo --local\n# environment: {{}}\n")
    result = CliRunner().invoke(build_command(), [
        "-o", str(root), "--target", synthetic.campaign.target, "--ff", synthetic.campaign.ff,
        "--bootstrap", "10"])  # the extension estimate needs bootstrap errors
    assert result.exit_code == 0, result.output
    advice = result.stdout[result.stdout.index("what to run next:"):]
    assert "run them in the demo, where these results were made, one command per length:" in advice
    commands = [line.strip() for line in advice.splitlines() if line.strip().startswith("./run-umbrella")]
    assert commands and all(c.startswith("./run-umbrella-windows.py --demo --local --replicas 1,2 --windows ")
                            for c in commands), advice
    assert "--relaunch" not in advice and "--extend" not in advice
    text = (root / synthetic.campaign.analysis_file("next-steps.txt")).read_text()
    assert all(command in text for command in commands)


def test_next_steps_name_the_cv_ranges_that_need_more_windows(tmp_path):
    holed = write_synthetic_campaign(tmp_path / "results", replicas=(1,), n_frames=600, correlation=0.3)
    for window in range(len(holed.centres)):
        path = holed.root / holed.campaign.window_files(1, window).cv_timeseries
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if line.startswith("#")
                                or not 0.69 <= float(line.split()[1]) <= 0.75))
    analysis = analyze_campaign(load_campaign(LocalStore(holed.root), holed.campaign), **CHEAP)
    text = "\n".join(analysis.next_steps.lines())
    assert "CV ranges that need more windows:" in text
    assert "no samples (a hole) between windows 06 and 08; new windows 13,15 of 31" in text
    assert "N_WINDOWS = 31 keeps today's 16 centres as the even windows" in text
    assert "lower PROTBENCH_UMBRELLA_K, which widens every window" in text


@pytest.mark.parametrize("origin, command", [
    ("cluster", "./run-umbrella-windows.py --relaunch --extend --stage window --replicas 1,3 --windows 2,5 "
                "--production-length 200"),
    ("local", "./run-umbrella-windows.py --local --stage window --replicas 1,3 --windows 2,5 --production-length 200"),
    ("demo", "./run-umbrella-windows.py --demo --local --replicas 1,3 --windows 2,5 --production-length 200"),
])
def test_each_place_results_are_made_gets_its_own_command(origin, command):
    from protbench_nrp.analysis import Extension, NextSteps

    steps = NextSteps([Extension((2, 5), 200.0, 2.0)], 0.5, 0.4, ["Q 0.5-0.6: a hole"], (1, 3), 16, origin=origin)
    lines = [line.strip() for line in steps.lines()]
    assert command in lines
    fixed = "(the demo's windows are fixed: do this in a campaign of your own)"
    assert any(line.startswith("N_WINDOWS = 31") and line.endswith(fixed) for line in lines) == (origin == "demo")


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("arguments, message", [
    (["--method", "kde", "--analytical-errors"], "--method kde has no analytical uncertainties"),
    (["--method", "kde", "--bootstrap", "0"], "use bootstrap errors (--bootstrap 100) or --method histogram"),
    (["--bootstrap", "1"], "--bootstrap 1: use 0 (analytical errors) or at least 2"),
    (["--bin-width", "0.0000001"], "use a wider one"),
    (["--upload-report"], "--upload-report needs --bucket and --report"),
])
def test_settings_the_estimator_cannot_honour_are_refused(synthetic, arguments, message):
    result = CliRunner().invoke(build_command(), [
        "-o", str(synthetic.root), "--target", synthetic.campaign.target, "--ff", synthetic.campaign.ff,
        "-r", "1", *arguments])
    assert result.exit_code != 0
    assert message in result.output


def test_the_command_and_the_api_default_to_the_kde_with_100_bootstrap_resamples(tmp_path, monkeypatch):
    monkeypatch.delenv("PROTBENCH_PMF_METHOD")
    monkeypatch.delenv("PROTBENCH_BOOTSTRAP")
    small = write_synthetic_campaign(tmp_path / "results", replicas=(1,), n_windows=8, n_frames=300,
                                     correlation=0.3, k_kcal_per_mol=200.0)
    result = CliRunner().invoke(build_command(), ["-o", str(small.root), "--target", small.campaign.target,
                                                  "--ff", small.campaign.ff])
    assert result.exit_code == 0, result.output
    assert "PMF (kde)" in result.stdout
    assert "errors bootstrap (100 resamples of the uncorrelated samples)" in result.stdout
    boots, _ = read_dat(small.root / small.campaign.analysis_file("mbar-uncorrelated-samples.dat"))
    assert len([c for c in boots if c.startswith("bootstrap_")]) == 100
    # The API's default is the command's: one default everywhere.
    api = analyze_campaign(load_campaign(LocalStore(small.root), small.campaign), convergence_fractions=())
    assert api.combined.method == "kde"
    assert api.combined.error_method == "bootstrap (100 resamples of the uncorrelated samples)"
    assert api.combined.bandwidth == pytest.approx((small.centres[0] - small.centres[1]) / 8)


def test_the_reweighter_solves_resamples_and_parts_as_pymbar_does():
    import pymbar

    from protbench_nrp.mbar import Reweighter, Reweighting, log_denominator

    class Samples:  # the two attributes a Reweighter reads of a StateSystem
        pass

    rng = np.random.default_rng(4)
    centres = np.linspace(0.4, 1.0, 12)
    x = np.concatenate([c + rng.normal(0, 0.03, 150) for c in centres])
    system = Samples()
    system.n_k = np.full(len(centres), 150)
    system.u_kn = 400 * (x[None] - centres[:, None]) ** 2 / 0.596
    f_k = pymbar.MBAR(system.u_kn, system.n_k, initialize="BAR").f_k
    reweighter = Reweighter(system, f_k)
    full = Reweighting(f_k, log_denominator(f_k, system.u_kn, system.n_k), np.ones(len(x)),
                       system.n_k.astype(float), np.zeros(len(centres)))
    jacobian = reweighter.jacobian(full)
    # A bootstrap resample, as counts of the samples it drew.
    pick = np.concatenate([150 * k + rng.integers(0, 150, 150) for k in range(len(centres))])
    expected = pymbar.MBAR(system.u_kn[:, pick], system.n_k, initial_f_k=f_k).f_k
    solution = reweighter.solve(np.bincount(pick, minlength=len(x)), system.n_k, start=full, jacobian=jacobian)
    np.testing.assert_allclose(solution.f_k, expected - expected[0], atol=1e-7)
    log_den = log_denominator(solution.f_k, system.u_kn, system.n_k)
    np.testing.assert_allclose(solution.log_den, log_den, atol=1e-7)
    # A part (one window left out): Newton steps, and the left-out state's free energy too.
    keep = np.ones(len(x))
    keep[150 * 4:150 * 5] = 0
    n_gap = system.n_k.copy()
    n_gap[4] = 0
    expected = pymbar.MBAR(system.u_kn[:, keep > 0], n_gap, initial_f_k=f_k).f_k
    np.testing.assert_allclose(reweighter.solve(keep, n_gap, start=full).f_k, expected - expected[0], atol=1e-7)


@pytest.mark.parametrize("method", ["histogram", "kde"])
def test_a_part_holding_every_sample_gets_pymbars_estimate_and_analytical_errors(synthetic, method):
    # estimate_part re-solves MBAR and builds the profile, overlap and analytical errors itself;
    # with every sample kept they are pymbar's own (FES, compute_overlap, the perturbed free energies).
    from protbench_nrp.pmf import PMFEstimator

    samples = load_campaign(LocalStore(synthetic.root), synthetic.campaign, replicas=(1,))
    analysis = analyze_campaign(samples, convergence_fractions=(), method=method,
                                n_bootstraps=0 if method == "histogram" else 2)
    combined = analysis.combined
    estimator = PMFEstimator(synthetic.temperature_kelvin, combined.bin_edges, method=method, n_bootstraps=0 if
                             method == "histogram" else 2, bandwidth=combined.bandwidth,
                             coverage_edges=combined.coverage_edges)
    part = estimator.estimate_part(combined, np.ones(len(combined.mbar.cv), dtype=bool), n_bootstraps=0)
    np.testing.assert_allclose(part.overlap, combined.overlap, atol=1e-9)
    assert part.delta_g.boundary == combined.delta_g.boundary
    assert part.delta_g.dg_kcal_per_mol == pytest.approx(combined.delta_g.dg_kcal_per_mol, abs=1e-9)
    shown = np.isfinite(combined.pmf_kcal_per_mol)
    # The histogram is FES's exactly; the KDE FES's to ~1e-3 of its density inside the
    # sampled range, ~1e-2 in the tails at its ends.
    np.testing.assert_allclose(part.pmf_kcal_per_mol[shown], combined.pmf_kcal_per_mol[shown],
                               atol=1e-9 if method == "histogram" else 1e-2)
    inside = np.flatnonzero(shown)[3:-3]
    np.testing.assert_allclose(part.pmf_kcal_per_mol[inside], combined.pmf_kcal_per_mol[inside],
                               atol=1e-9 if method == "histogram" else 2e-3)
    if method == "histogram":
        np.testing.assert_allclose(part.uncertainty_kcal_per_mol[shown], combined.uncertainty_kcal_per_mol[shown],
                                   rtol=1e-5)
        assert part.delta_g.uncertainty_kcal_per_mol == pytest.approx(combined.delta_g.uncertainty_kcal_per_mol,
                                                                       rel=1e-5)
