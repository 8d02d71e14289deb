"""One table of exit statuses: exits.py, lib.sh, the Job's podFailurePolicy, docs/failures.md and what scripts do.

Every (script, status) of :data:`exits.SCRIPT_EXITS` has a driver below that
runs the real script into that status, against the real S3 server; the test
checks the status is the one the table names and that the rendered Job's
podFailurePolicy gives it the table's rule.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protbench_nrp import exits
from tests.conftest import REPO_ROOT
from tests.pod.harness import POD_SCRIPTS, REMOTE, TINY_WINDOW, make_fake_repo, render_job, seed_inputs

FAST_RETRIES = dict(PROTBENCH_TRANSFER_TRIES="2", PROTBENCH_TRANSFER_RETRY_SECONDS="0.1",
                    RCLONE_RETRIES="1", RCLONE_LOW_LEVEL_RETRIES="1", RCLONE_CONTIMEOUT="2s")
PYTHON_SCRIPTS = "setup-umbrella-system.py, run-steered-md.py, run-umbrella-window.py"


# -- the table, lib.sh, the template, the docs --------------------------------------------------

def test_lib_sh_spells_every_status_of_the_table():
    script = f'. "{REPO_ROOT / POD_SCRIPTS / "lib.sh"}"; ' + "; ".join(
        f'echo {name}=${name}' for name in exits.lib_sh_constants())
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert dict(line.split("=") for line in result.stdout.split()) == {
        name: str(code) for name, code in exits.lib_sh_constants().items()}


def action_for(policy: dict, container_exit: dict[str, int], disrupted: bool = False) -> str:
    """What Kubernetes does with a failed pod: the first matching rule's action, else Count."""
    for rule in policy["rules"]:
        if "onPodConditions" in rule:
            if disrupted and any(c["type"] == "DisruptionTarget" and c.get("status", "True") == "True"
                                 for c in rule["onPodConditions"]):
                return rule["action"]
            continue
        codes = rule["onExitCodes"]
        names = [rule["onExitCodes"]["containerName"]] if "containerName" in codes else list(container_exit)
        for name in names:
            code = container_exit.get(name, 0)
            if code == 0:
                continue
            inside = code in codes["values"]
            if inside == (codes["operator"] == "In"):
                return rule["action"]
    return exits.COUNT


@pytest.fixture(scope="module")
def rendered_policy() -> dict:
    manifest, _job = render_job("policy-check")
    assert manifest["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    return manifest["spec"]["podFailurePolicy"]


def test_the_rendered_job_carries_the_tables_rules(rendered_policy):
    assert rendered_policy == exits.pod_failure_policy()
    for script, codes in exits.SCRIPT_EXITS.items():
        container = "init-rclone" if script == "copy-in.sh" else "init-git" if "init-git" in script else "main"
        for code in codes:
            if code == 0:
                continue
            expected = exits.BY_CODE[code].rule
            assert action_for(rendered_policy, {container: code}) == expected, (script, code)
            # a disrupted pod is ignored whatever its status: a preempted window exits 143
            assert action_for(rendered_policy, {container: code}, disrupted=True) == exits.IGNORE
    assert action_for(rendered_policy, {"main": 137}) == exits.COUNT  # an OOM kill: not in the table
    assert exits.codes_with(exits.FAIL_JOB) == [2, 65, 66, 67]


def test_the_template_with_other_rules_is_refused():
    import copy

    from protbench_nrp.manifest import TemplateError, load_template, render_manifest
    from tests.pod.harness import campaign_config

    template = load_template(REPO_ROOT / "k8s_template.yaml")
    config = campaign_config("policy-check")
    from protbench_nrp.jobs import build_jobs

    [job] = build_jobs(config, "0" * 40)
    changed = copy.deepcopy(template)
    changed["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"] = [2, 66, 67]
    with pytest.raises(TemplateError, match="podFailurePolicy differs from the exit-status table"):
        render_manifest(job, config, changed)
    changed = copy.deepcopy(template)
    changed["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    with pytest.raises(TemplateError, match="restartPolicy 'OnFailure'; a podFailurePolicy needs 'Never'"):
        render_manifest(job, config, changed)


def test_the_failures_page_lists_every_status_of_every_script():
    assert exits.readme_table() in (REPO_ROOT / "docs" / "failures.md").read_text()


# -- every script into every status -------------------------------------------------------------

def _origin(root: Path) -> str:
    root.mkdir()
    for args in (["init", "--quiet"], ["commit", "--quiet", "--allow-empty", "-m", "one"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                       env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e.invalid", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "t@e.invalid", "PATH": "/usr/bin:/bin", "HOME": str(root)})
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


def init_git(ctx, code):
    commit = _origin(ctx.tmp / "origin")
    url = {exits.EXIT_TRANSIENT: f"http://127.0.0.1:{ctx.closed_port}/repo.git"}.get(code, str(ctx.tmp / "origin"))
    pod = ctx.make_pod()
    wanted = "1" * 40 if code == exits.EXIT_BAD_INPUT else commit
    return pod.run("init-git", PROTBENCH_REPO_DIR=str(ctx.tmp / "checkout"), PROTBENCH_REPO_URL=url,
                   PROTBENCH_SCRIPT_COMMIT=wanted, **FAST_RETRIES).returncode


def copy_in(ctx, code):
    if code in (exits.EXIT_OK, exits.EXIT_BAD_INPUT):
        seed_inputs(ctx.bucket, ctx.villin_inputs)
    elif code == exits.EXIT_INPUTS_MISSING:
        ctx.bucket.put_tree(ctx.villin_inputs.root, str(ctx.villin_inputs.campaign.setup_dir))
    kwargs = {"bucket_name": "no-such-bucket"} if code == exits.EXIT_BUCKET_UNUSABLE else {}
    if code == exits.EXIT_TRANSIENT:
        kwargs["endpoint"] = f"http://127.0.0.1:{ctx.closed_port}"
    pod = ctx.make_pod(**kwargs)
    extra = {"PROTBENCH_REQUIRED_FILES": "../outside/"} if code == exits.EXIT_BAD_INPUT else {}
    return pod.run("init-rclone", **FAST_RETRIES, **extra).returncode


def _fake_pod(ctx, **kwargs):
    seed_inputs(ctx.bucket, ctx.villin_inputs)
    pod = ctx.make_pod(window=5, **kwargs)
    pod.repo = make_fake_repo(ctx.tmp / "repo", pod.job.script_path)
    assert pod.run("init-rclone").returncode == 0
    return pod


def _break_bucket(ctx, pod, code):
    if code == exits.EXIT_BUCKET_UNUSABLE:
        pod.rclone_config.write_text(pod.rclone_config.read_text().replace(ctx.s3.secret_access_key, "revoked"))
    else:
        ctx.s3.rclone_config(pod.rclone_config, REMOTE, endpoint=f"http://127.0.0.1:{ctx.closed_port}")


def run_job(ctx, code):
    pod = _fake_pod(ctx)
    env = dict(FAKE_OUTPUT_DIR=pod.output_files[0].rstrip("/"), PROTBENCH_SYNC_MINUTES="0", FAKE_FRAMES="3",
               FAKE_FRAME_SECONDS="0.01", **FAST_RETRIES)
    if code in (exits.EXIT_UNEXPECTED, exits.EXIT_BLOWN_UP, exits.EXIT_SIGINT):
        env["FAKE_EXIT"] = str(code)
    elif code == exits.EXIT_BAD_INPUT:
        env["PROTBENCH_SYNC_MINUTES"] = "soon"
    elif code in (exits.EXIT_BUCKET_UNUSABLE, exits.EXIT_TRANSIENT):
        _break_bucket(ctx, pod, code)
    elif code == exits.EXIT_SIGTERM:
        env["FAKE_FRAMES"] = "100000"
    main = pod.start("main", **env)
    if code == exits.EXIT_SIGTERM:
        deadline = time.monotonic() + 30
        while not (pod.results / pod.output_files[0] / "fake-production.out").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        main.signal(signal.SIGTERM)
    return main.wait(timeout=120)


def _full_volume(ctx, upload=lambda pod: pod.copy_out("final", **FAST_RETRIES)):
    """An upload on a results volume too small for its snapshot: a real ENOSPC (tmpfs, root only)."""
    import os

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as a full volume needs root (CI runs as root)")
    pod = ctx.make_pod(window=5)
    pod.results.mkdir(parents=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(pod.results)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        (pod.results / pod.output_files[0]).mkdir(parents=True)
        (pod.results / pod.output_files[0] / "fake-production.out").write_bytes(b"f" * 60_000)
        result = upload(pod)
        assert "could not snapshot" in result.stderr, result.stderr
        return result.returncode
    finally:
        subprocess.run(["umount", str(pod.results)], check=True)


def copy_out(ctx, code):
    if code == exits.EXIT_UNEXPECTED:
        return _full_volume(ctx)
    pod = _fake_pod(ctx)
    (pod.results / pod.output_files[0]).mkdir(parents=True, exist_ok=True)
    (pod.results / pod.output_files[0] / "fake-production.out").write_text("frame 0\n")
    if code in (exits.EXIT_BUCKET_UNUSABLE, exits.EXIT_TRANSIENT):
        _break_bucket(ctx, pod, code)
    return pod.copy_out("no-such-mode" if code == exits.EXIT_BAD_INPUT else "final", **FAST_RETRIES).returncode


def pre_stop(ctx, code):
    if code == exits.EXIT_UNEXPECTED:
        return _full_volume(ctx, lambda pod: pod.run_prestop(**FAST_RETRIES))
    pod = _fake_pod(ctx)
    (pod.results / pod.output_files[0]).mkdir(parents=True, exist_ok=True)
    (pod.results / pod.output_files[0] / "fake-production.out").write_text("frame 0\n")
    if code in (exits.EXIT_BUCKET_UNUSABLE, exits.EXIT_TRANSIENT):  # run-job.sh is not running: it uploads
        _break_bucket(ctx, pod, code)
    if code == exits.EXIT_BAD_INPUT:  # a checkout without lib.sh
        lonely = ctx.tmp / "lonely" / POD_SCRIPTS
        lonely.mkdir(parents=True)
        shutil.copy2(REPO_ROOT / POD_SCRIPTS / "pre-stop.sh", lonely / "pre-stop.sh")
        pod.repo = ctx.tmp / "lonely"
    return pod.run_prestop(**FAST_RETRIES).returncode


def python_script(ctx, code):
    results = ctx.villin_inputs.copy_to(ctx.tmp / "results").root
    pod = ctx.make_pod(window=0)
    env = {**pod.env("main", PROTBENCH_RESULTS_DIR=str(results)), **TINY_WINDOW}
    script = [sys.executable, str(REPO_ROOT / pod.job.script_path), "-o", str(results)]
    if code == exits.EXIT_BAD_INPUT:
        env["PROTBENCH_FRAME"] = "0.3"  # does not divide the production
    if code == exits.EXIT_BLOWN_UP:  # 10 fs steps: villin's coordinates become NaN within a picosecond
        env.update(PROTBENCH_EQUIL_TIMESTEP="10", PROTBENCH_EQUIL_LENGTH="0.001", PROTBENCH_MAX_BLOWUPS="1")
    if code == exits.EXIT_UNEXPECTED:  # a directory where the window writes a file: an OSError nobody expects
        (results / ctx.villin_inputs.campaign.window_files(1, 0).parameters).mkdir(parents=True)
    if code in (exits.EXIT_SIGINT, exits.EXIT_SIGTERM):
        env["PROTBENCH_PRODUCTION_LENGTH"] = "2"  # long enough to be stopped
    process = subprocess.Popen(script, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if code in (exits.EXIT_SIGINT, exits.EXIT_SIGTERM):
        progress = results / ctx.villin_inputs.campaign.window_files(1, 0).progress
        deadline = time.monotonic() + 120
        while not progress.exists():
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()[0]
            time.sleep(0.1)
        process.send_signal(signal.SIGINT if code == exits.EXIT_SIGINT else signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    if code == exits.EXIT_UNEXPECTED:
        assert "Traceback" in output
    return process.returncode


DRIVERS = {"init-git (k8s_template.yaml)": init_git, "copy-in.sh": copy_in, "run-job.sh": run_job,
           "copy-out.sh": copy_out, "pre-stop.sh": pre_stop, PYTHON_SCRIPTS: python_script}
CASES = [(script, code) for script, codes in exits.SCRIPT_EXITS.items() for code in codes]


def test_every_script_of_the_table_has_a_driver():
    assert set(DRIVERS) == set(exits.SCRIPT_EXITS)


class Context:
    def __init__(self, **items):
        self.__dict__.update(items)


@pytest.mark.parametrize("script, code", CASES, ids=[f"{s.split()[0].rstrip(',')}-{c}" for s, c in CASES])
def test_each_script_exits_with_the_status_the_table_names(script, code, make_pod, bucket, s3, villin_inputs,
                                                           tmp_path, rendered_policy, closed_port):
    ctx = Context(make_pod=make_pod, bucket=bucket, s3=s3, villin_inputs=villin_inputs, tmp=tmp_path,
                  closed_port=closed_port)
    assert DRIVERS[script](ctx, code) == code
