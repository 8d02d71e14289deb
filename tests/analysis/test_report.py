"""Force fields side by side, and the self-contained HTML report rendered by a real headless Chromium."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import boto3
import numpy as np
import pytest
from click.testing import CliRunner

from protbench_nrp.analysis_cli import build_command
from protbench_nrp.layout import Campaign, comparison_file

from .conftest import upload_tree
from .synthetic import DoubleWell, exact_folding_free_energy, write_synthetic_campaign

BUCKET = "protbench-results"
STABLE = DoubleWell(tilt_kcal_per_mol=-3.0)
UNSTABLE = DoubleWell(tilt_kcal_per_mol=3.0, middle=0.68)

# What the page itself knows once loaded (the load event waits for every image),
# written into the DOM for --dump-dom to show: each image's natural size (0 for
# one that failed to decode) and each table's rows.
PROBE = """
<script>
window.addEventListener("load", () => {
  const sizes = [...document.images].map(i => [i.complete ? i.naturalWidth : 0, i.complete ? i.naturalHeight : 0]);
  const tables = {};
  for (const t of document.querySelectorAll("table")) tables[t.id] = t.tBodies[0].rows.length;
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({images: sizes, tables: tables,
      title: document.title, next: (document.getElementById("next-steps") || {}).textContent || ""});
  document.body.appendChild(probe);
});
</script>
"""


def chromium() -> str:
    """The headless browser; under CI it must be there (``make test`` installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is not installed, so the HTML report cannot be checked: `make test` "
                    "installs it (apt-get install -y chromium) when run as root")
    pytest.skip("chromium is not installed (apt-get install -y chromium); CI fails here instead")


def render(page: Path) -> dict:
    """Open ``page`` (with the probe appended) in headless Chromium and return what the probe saw."""
    probed = page.with_name(page.stem + "-probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
             probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page did not finish loading: {done.stdout[-1000:]}"
    import html

    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def two_force_fields(tmp_path_factory):
    root = tmp_path_factory.mktemp("two") / "results"
    stable = write_synthetic_campaign(root, replicas=(1, 2), n_frames=800, pmf=STABLE, seed=4,
                                      campaign=Campaign("well", "stable-ff"))
    unstable = write_synthetic_campaign(root, replicas=(1, 2), n_frames=800, pmf=UNSTABLE, seed=5,
                                        campaign=Campaign("well", "unstable-ff"))
    return root, stable, unstable


def check_comparison(root, stable, unstable, result):
    campaigns = [stable.campaign, unstable.campaign]
    table = root / comparison_file(campaigns, "folding.csv")
    figure = root / comparison_file(campaigns, "pmf.png")
    assert f"wrote {table}" in result.stdout and f"wrote {figure}" in result.stdout
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 20_000
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["campaign"] for r in rows] == ["well-stable-ff", "well-unstable-ff"]
    for row, synthetic in zip(rows, (stable, unstable)):
        boundary = float(row["boundary"])
        exact = exact_folding_free_energy(synthetic.pmf, boundary, synthetic.temperature_kelvin)
        assert abs(float(row["dg_fold_kcal_per_mol"]) - exact) < max(0.2, 3 * float(row["uncertainty_kcal_per_mol"]))
        # The folded minimum lies at the upper well's bottom.
        assert float(row["folded_minimum"]) == pytest.approx(synthetic.pmf.middle + synthetic.pmf.half_width, abs=0.03)
    assert float(rows[0]["dg_fold_kcal_per_mol"]) < 0 < float(rows[1]["dg_fold_kcal_per_mol"])
    assert "side by side:" in result.stdout
    return rows


def test_two_force_fields_side_by_side_from_the_results_tree(two_force_fields):
    root, stable, unstable = two_force_fields
    result = CliRunner().invoke(build_command(), [
        "-o", str(root), "--bootstrap", "6", "--compare", "well:stable-ff", "well:unstable-ff", "--report"])
    assert result.exit_code == 0, result.output
    check_comparison(root, stable, unstable, result)
    seen = render(root / comparison_file([stable.campaign, unstable.campaign], "report.html"))
    assert seen["tables"]["comparison"] == 2
    assert len(seen["images"]) == 1 and min(seen["images"][0]) > 100


def test_two_force_fields_side_by_side_from_the_bucket(s3_server, two_force_fields, tmp_path):
    root, stable, unstable = two_force_fields
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=BUCKET)
    for synthetic in (stable, unstable):
        upload_tree(client, BUCKET, root / synthetic.campaign.root, prefix=f"results/{synthetic.campaign.root}")
    out = tmp_path / "out"
    result = CliRunner().invoke(build_command(), [
        "-o", str(out), "--bucket", BUCKET, "--bootstrap", "6",
        "--compare", "well:stable-ff", "well:unstable-ff"])
    assert result.exit_code == 0, result.output
    check_comparison(out, stable, unstable, result)


@pytest.mark.parametrize("arguments, message", [
    (["--compare", "well:stable-ff"], "--compare needs at least two campaigns"),
    (["--compare", "well:stable-ff", "well"], "give each campaign as TARGET:FF"),
    (["--compare", "well:stable-ff", "well:nothing-here"], "no replica directories under"),
    (["well:stable-ff"], "campaigns as TARGET:FF go with --compare"),
    ([], "missing --target and --ff"),
])
def test_comparison_mistakes_are_refused_with_the_fix(two_force_fields, arguments, message):
    root, _, _ = two_force_fields
    result = CliRunner().invoke(build_command(), ["-o", str(root), *arguments],
                                env={"PROTBENCH_TARGET": None, "PROTBENCH_FF": None})
    assert result.exit_code != 0
    assert message in result.output


def test_the_report_is_one_page_that_chromium_renders_with_its_plots_and_tables(two_force_fields):
    root, stable, _ = two_force_fields
    campaign = stable.campaign
    result = CliRunner().invoke(build_command(), [
        "-o", str(root), "--target", campaign.target, "--ff", campaign.ff, "--bootstrap", "6", "--report"])
    assert result.exit_code == 0, result.output
    page = root / campaign.analysis_file("report.html")
    assert f"wrote {page}" in result.stdout
    text = page.read_text()
    # Self-contained: nothing fetched from anywhere, no script of its own.
    assert not re.search(r'(src|href)="(?!data:)', text)
    assert "<script" not in text

    seen = render(page)
    assert seen["title"] == "well-stable-ff: umbrella sampling along Q"
    images = seen["images"]
    assert len(images) == 4  # PMF, convergence, CV histograms, overlap
    assert all(width > 300 and height > 200 for width, height in images), images
    tables = seen["tables"]
    assert tables["folding"] == 3  # all, replica_1, replica_2
    assert tables["convergence"] == 10
    assert tables["windows"] == 2 * 16
    assert "one command per length:" in seen["next"] or "no single window dominates" in seen["next"]
    folding = next(line for line in result.stdout.splitlines() if line.startswith("folding free energy"))
    value = re.search(r"= ([+-]\d+\.\d\d) ± (\d+\.\d\d) kcal/mol", folding).groups()
    assert f"{value[0]} ± {value[1]} kcal/mol" in text.replace("−", "-")


def test_the_report_is_uploaded_to_the_bucket_as_a_web_page(s3_server, two_force_fields, tmp_path):
    root, stable, _ = two_force_fields
    campaign = stable.campaign
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=BUCKET)
    upload_tree(client, BUCKET, root / campaign.root, prefix=f"results/{campaign.root}")
    out = tmp_path / "out"
    result = CliRunner().invoke(build_command(), [
        "-o", str(out), "--target", campaign.target, "--ff", campaign.ff, "--bucket", BUCKET,
        "--bootstrap", "4", "--report", "--upload-report"])
    assert result.exit_code == 0, result.output
    key = f"results/{campaign.analysis_file('report.html')}"
    assert f"wrote s3://{BUCKET}/{key}" in result.stdout
    stored = client.get_object(Bucket=BUCKET, Key=key)
    assert stored["ContentType"] == "text/html; charset=utf-8"
    assert stored["Body"].read() == (out / campaign.analysis_file("report.html")).read_bytes()
    # Served over plain HTTP as is, once the bucket allows public reads.
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}))
    with urllib.request.urlopen(f"{s3_server}/{BUCKET}/{key}", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert b"<img" in response.read()
    assert np.isfinite(float(re.search(r"dG_fold = [^=]*= ([+-][\d.]+)", result.stdout).group(1)))
