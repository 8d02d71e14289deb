"""Windows from any engine through a WHAM metadata file: GROMACS ``.xvg`` and PLUMED ``COLVAR`` series,
the factor ½ of its force constant, the files it writes, and every refusal naming the line and the fix."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from protbench_nrp.analysis import analyze_campaign, load_campaign
from protbench_nrp.analysis_cli import build_command
from protbench_nrp.cvaxis import CVAxis
from protbench_nrp.metadata import MetadataError, read_metadata
from protbench_nrp.store import LocalStore

from .conftest import CHEAP
from .synthetic import (COLVAR_HEADER, XVG_HEADER, DoubleWell, Torsion, bin_averaged_pmf,
                        write_engine_windows, write_synthetic_campaign)

TEMPERATURE = 300.0


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run(*arguments):
    return CliRunner().invoke(build_command(), [str(a) for a in arguments])


# -- the series formats --------------------------------------------------------------------------


def test_a_gromacs_xvg_series_is_read_past_its_hash_and_at_lines(tmp_path):
    metadata = write_engine_windows(tmp_path, Torsion(), [-165.0, 165.0], 0.004, TEMPERATURE, 40, seed=3)
    text = (tmp_path / "series" / "window00.xvg").read_text()
    assert text.startswith("# This file was created") and "@    title" in text and "@ s0 legend" in text
    samples = read_metadata(metadata, axis=CVAxis(360.0))
    first = samples.windows[0]
    data = [line.split() for line in text.splitlines() if line and line[0] not in "#@"]
    assert len(first.series) == len(data) == 40
    np.testing.assert_allclose(first.series.values, [float(v) for _, v in data])
    assert (first.centre, first.spring_kcal_per_mol, first.k_kcal_per_mol) == (-165.0, 0.004, 0.002)
    assert first.temperature_kelvin == TEMPERATURE and first.correlation_time == 5.0
    assert first.source_line == "windows.meta line 3: window00.xvg"
    assert samples.cv_name == "cv" and samples.campaign.name == "windows"


def test_a_plumed_colvar_series_is_read_by_field_name_or_number(tmp_path):
    pmf = Torsion(degrees=False)
    metadata = write_engine_windows(tmp_path, pmf, [3.0, -3.0], 20.0, TEMPERATURE, 30, engine="plumed", seed=4)
    assert (tmp_path / "series" / "COLVAR.0").read_text().startswith(COLVAR_HEADER)
    by_name = read_metadata(metadata, cv_column="phi", axis=CVAxis(pmf.period))
    by_number = read_metadata(metadata, cv_column=3, axis=CVAxis(pmf.period))
    np.testing.assert_array_equal(by_name.windows[1].series.values, by_number.windows[1].series.values)
    assert by_name.cv_name == "phi"  # the field's name, for the outputs to say
    assert by_number.cv_name == "phi"
    psi = read_metadata(metadata, cv_column="psi", axis=CVAxis(pmf.period))
    assert not np.array_equal(psi.windows[0].series.values, by_name.windows[0].series.values)


def test_values_beyond_one_period_are_wrapped_into_it(tmp_path):
    series = tmp_path / "w.dat"
    series.write_text("".join(f"{t} {v}\n" for t, v in enumerate([190.0, -181.0, 540.0, 10.0] * 3)))
    (tmp_path / "m.meta").write_text("w.dat 180 0.01 0 300\n")
    values = read_metadata(tmp_path / "m.meta", axis=CVAxis(360.0)).windows[0].series.values
    np.testing.assert_allclose(values[:4], [-170.0, 179.0, -180.0, 10.0])
    shifted = read_metadata(tmp_path / "m.meta", axis=CVAxis(360.0, 0.0)).windows[0].series.values
    np.testing.assert_allclose(shifted[:4], [190.0, 179.0, 180.0, 10.0])


# -- the factor ½ ----------------------------------------------------------------------------------


def test_a_metadata_k_is_twice_the_campaigns_k_and_gives_the_same_pmf(tmp_path):
    # A campaign's windows (bias k (Q - Q0)^2) written as a metadata file with K = 2k
    # (bias ½K (Q - Q0)^2) are the same windows: the same PMF and dG_fold.
    campaign = write_synthetic_campaign(tmp_path / "results", replicas=(1,), n_windows=12, n_frames=600,
                                        correlation=0.3, k_kcal_per_mol=300.0, pmf=DoubleWell(tilt_kcal_per_mol=-2.0))
    samples = load_campaign(LocalStore(campaign.root), campaign.campaign)
    lines = []
    for window in samples.windows:
        path = tmp_path / "engine" / f"w{window.window:02d}.dat"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(f"{t} {v:.6f}\n" for t, v in zip(window.series.steps, window.series.values)))
        lines.append(f"{path.name} {window.centre!r} {2 * window.k_kcal_per_mol!r} 0 {TEMPERATURE}")
    (tmp_path / "engine" / "right.meta").write_text("\n".join(lines) + "\n")
    (tmp_path / "engine" / "wrong.meta").write_text(
        "\n".join(line.replace(f" {2 * 300.0!r} ", f" {300.0!r} ") for line in lines) + "\n")

    reference = analyze_campaign(samples, fold_boundary=0.7, convergence_fractions=(), **CHEAP)
    right = analyze_campaign(read_metadata(tmp_path / "engine" / "right.meta"), convergence_fractions=(), **CHEAP)
    np.testing.assert_allclose(right.combined.mbar.f_k, reference.combined.mbar.f_k, atol=1e-6)
    np.testing.assert_allclose(right.combined.pmf_kcal_per_mol, reference.combined.pmf_kcal_per_mol, atol=1e-6)
    # Without the ½ the windows look half as stiff: the PMF is far off the truth.
    wrong = analyze_campaign(read_metadata(tmp_path / "engine" / "wrong.meta"), convergence_fractions=(),
                             n_bins=len(reference.combined.bin_centres), **CHEAP)
    truth = bin_averaged_pmf(campaign.pmf, wrong.combined.bin_edges, TEMPERATURE)
    used = wrong.combined.samples_per_bin >= 30
    error = wrong.combined.pmf_kcal_per_mol[used] - truth[used]
    assert np.ptp(error) > 1.0


# -- the command -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gromacs(tmp_path_factory):
    """12 windows of the torsion in degrees, two straddling ±180°, as GROMACS writes them."""
    directory = tmp_path_factory.mktemp("gromacs")
    pmf = Torsion()
    centres = -180.0 + 30.0 * (np.arange(12) + 0.5)
    metadata = write_engine_windows(directory, pmf, centres, 0.596 / 18.0 ** 2, TEMPERATURE, 3000,
                                    correlation=0.0, seed=11, metadata_name="butane-phi.meta",
                                    temperature_on_lines=False)
    return pmf, metadata


def test_the_command_analyses_a_metadata_file_into_its_named_files(gromacs, tmp_path):
    pmf, metadata = gromacs
    out = tmp_path / "out"
    result = run("--metadata", metadata, "--period", 360, "--temperature", TEMPERATURE, "-o", out,
                 "--state", "gauche=0:120", "--state", "trans=120:-120", "--report")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr, result.stderr
    assert f"butane-phi: 12 windows from {metadata} (periodic, period 360 from -180 to 180" in result.stdout
    assert "free-energy difference dG(trans - gauche) = G_trans - G_gauche = " in result.stdout
    assert "fold" not in result.stdout  # nothing is called folding unless the user says so
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"butane-phi-{suffix}" for suffix in (
        "pmf.csv", "windows.csv", "delta-g.csv", "convergence.csv", "next-steps.txt", "mbar-windows.dat",
        "mbar-free-energy.dat", "mbar-samples.dat", "mbar-uncorrelated-samples.dat", "pmf.png",
        "cv-histograms.png", "overlap.png", "convergence.png", "report.html"))
    rows = read_csv(out / "butane-phi-pmf.csv")
    x = np.array([float(r["cv"]) for r in rows])
    assert x.min() > -180 and x.max() < 180 and len(rows) == 24
    y = np.array([float(r["pmf_kcal_per_mol"]) for r in rows])
    error = y - pmf(x)
    assert np.max(np.abs(error - error.mean())) < 0.15
    (difference,) = read_csv(out / "butane-phi-delta-g.csv")
    assert (difference["scope"], difference["first_state"], difference["second_state"]) == (
        "all", "gauche=0:120", "trans=120:-120")
    windows = read_csv(out / "butane-phi-windows.csv")
    assert windows[0]["source"] == "butane-phi.meta line 3: window00.xvg"
    assert float(windows[0]["k_kcal_per_mol"]) == pytest.approx(0.596 / 18.0 ** 2 / 2, rel=1e-5)
    convergence = read_csv(out / "butane-phi-convergence.csv")
    assert "dg_kcal_per_mol" in convergence[0] and len(convergence) == 10
    assert "<title>butane-phi: umbrella sampling along cv</title>" in (out / "butane-phi-report.html").read_text()


def test_a_period_from_cv_min_puts_the_seam_elsewhere(gromacs, tmp_path):
    _, metadata = gromacs
    result = run("--metadata", metadata, "--period", 360, "--cv-min", 0, "--temperature", TEMPERATURE,
                 "-o", tmp_path, "--name", "from-zero")
    assert result.exit_code == 0, result.output
    assert "no free-energy difference: round a periodic CV give the two states" in result.stdout
    x = np.array([float(r["cv"]) for r in read_csv(tmp_path / "from-zero-pmf.csv")])
    assert 0 < x.min() < 15 and 345 < x.max() < 360
    assert not (tmp_path / "from-zero-delta-g.csv").exists()


# -- refusals ----------------------------------------------------------------------------------------


def small_set(directory, *, lines=None, series=None):
    """Three windows of 20 frames each, unless told otherwise; returns the metadata path."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        (directory / f"w{i}.xvg").write_text(XVG_HEADER.format(date="today", window=i) + "".join(
            f"{t:.1f} {v:.4f}\n" for t, v in zip(np.arange(20.0), rng.normal(10 * i, 3, 20))))
    for name, text in (series or {}).items():
        (directory / name).write_text(text)
    metadata = directory / "set.meta"
    metadata.write_text("\n".join(lines if lines is not None else
                                  [f"w{i}.xvg {10 * i} 0.1 1 300" for i in range(3)]) + "\n")
    return metadata


@pytest.mark.parametrize("lines, series, arguments, message", [
    (None, {}, ["--metadata", "{dir}/absent.meta"], "metadata file {dir}/absent.meta not found"),
    ([""], {}, [], "metadata file {dir}/set.meta is empty"),
    (["# only a comment"], {}, [], "{dir}/set.meta holds no window lines"),
    (["w0.xvg 0 0.1 1 300", "w1.xvg 10"], {}, [], "{dir}/set.meta, line 2: 2 fields ('w1.xvg 10'); a window "
     "line is 'path centre K [correlation_time [temperature]]'. Add the missing fields"),
    (["w0.xvg zero 0.1"], {}, [], "line 1: centre 'zero' is not a number"),
    (["w0.xvg 0 0.1 1 300 7"], {}, [], "line 1: 6 fields"),
    (["w0.xvg 0 -0.1 1 300"], {}, [], "line 1: K -0.1 is negative; K is the force constant of the bias "
     "½K(x−c)² in kcal/mol per CV unit², zero or more"),
    (["w0.xvg 0 0.1 1 -300"], {}, [], "line 1: temperature -300 K is not positive"),
    (["w0.xvg 0 0.1 -1 300"], {}, [], "line 1: correlation_time -1 is negative"),
    (["w0.xvg 0 0.1", "w1.xvg 10 0.1"], {}, [], "line 1: no temperature on the line and no --temperature"),
    (["w0.xvg 0 0.1 1 300", "w1.xvg 10 0.1 1 310"], {}, [], "windows at different temperatures "
     "(line 1: 300 K; line 2: 310 K)"),
    (["missing.xvg 0 0.1 1 300"], {}, [], "time series named by {dir}/set.meta, line 1 {dir}/missing.xvg "
     "not found"),
    (["w0.xvg 0 0.1 1 300"], {"w0.xvg": "0 1\n1 2\n2 3\n3 4\n4 5\n"}, [], "{dir}/w0.xvg (named by "
     "{dir}/set.meta, line 1) has 5 frames; at least 10 are needed"),
    (["w0.xvg 0 0.1 1 300"], {"w0.xvg": "0 1\n1 2\nnan-free? 3\n"}, [], "{dir}/w0.xvg, line 3: expected "
     "numbers (time first, the CV in column 2)"),
    (["w0.xvg 0 0.1 1 300"], {"w0.xvg": "\n"}, [], "is empty"),
    (None, {}, ["--cv-column", "4"], "{dir}/w0.xvg, line 17: 2 columns, but the CV is column 4"),
    (None, {}, ["--cv-column", "phi"], "no PLUMED '#! FIELDS' header"),
    (None, {}, ["--cv-column", "1"], "--cv-column 1: column 1 is the time"),
    (None, {}, ["--name", "a/b"], "--name 'a/b' cannot name output files"),
    (None, {}, ["--state", "a=100:200", "--state", "b=0:5"], "--state a=100:200: no sample lies in "
     "100 < cv <= 200"),
    (None, {}, ["--period", "-5"], "Invalid value for '--period'"),
])
def test_a_metadata_set_the_analysis_cannot_use_is_refused_and_nothing_is_written(
        tmp_path, lines, series, arguments, message):
    metadata = small_set(tmp_path / "in", lines=lines, series=series)
    out = tmp_path / "out"
    arguments = [a.format(dir=tmp_path / "in") for a in arguments]
    if "--metadata" not in arguments:
        arguments = ["--metadata", metadata, *arguments]
    result = run(*arguments, "-o", out)
    assert result.exit_code in (1, 2), result.output
    assert message.format(dir=tmp_path / "in") in result.output
    assert not out.exists()


@pytest.mark.parametrize("arguments, message", [
    (["--target", "villin", "--ff", "x", "--period", "360"], "--period describes windows read with --metadata"),
    (["--target", "villin", "--ff", "x", "--cv-column", "3", "--temperature", "300"],
     "--cv-column, --temperature describe windows read with --metadata"),
    (["--metadata", "{meta}", "--target", "villin"], "--target belongs to a campaign's analysis"),
    (["--metadata", "{meta}", "--fold-boundary", "3"], "--fold-boundary belongs to a campaign's analysis"),
])
def test_options_of_the_other_kind_of_analysis_are_refused(tmp_path, arguments, message):
    metadata = small_set(tmp_path / "in")
    result = run(*[a.format(meta=metadata) for a in arguments], "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_a_refusal_names_the_line_even_when_earlier_lines_are_fine(tmp_path):
    metadata = small_set(tmp_path, lines=["# path centre K", "w0.xvg 0 0.1 1 300", "", "w1.xvg 10 K 1 300"])
    with pytest.raises(MetadataError, match=r"set.meta, line 4: K 'K' is not a number"):
        read_metadata(metadata)
