"""The resume contract of a solvated window (PME, barostat), through the real window script.

OpenMM's CPU platform is not deterministic with PME: two runs from one
checkpoint drift apart by ~1e-6 nm in a dozen steps. So the contract is
checked against a spread this test measures, never a guessed tolerance:

1. a base run of the window script ends with a production checkpoint (the
   fork): the integrator's and the barostat's random streams are in it;
2. copies of it are continued by the script to a longer production: two
   uninterrupted (their difference is the platform's run-to-run spread), one
   SIGKILLed at a frame it had written and then resumed;
3. the resumed run keeps every frame it had checkpointed byte for byte (a
   frame written but not yet checkpointed when the kill came is written
   again, its segment with a new header date), loses and repeats none, and
   its later frames stay within ``SPREAD_MULTIPLE`` times the measured spread
   of each frame. On Reference, which sums its forces in one fixed order, the
   resumed run is the uninterrupted one to the last bit.

A control shows the check can fail: resuming from the portable State (the
path to another platform, which restarts the random streams) lands far
outside the tolerance.

Solvated villin on CPU runs ~12 steps/s here, on Reference ~1 s per step:
every run is a few frames of 4 fs steps.
"""

from __future__ import annotations

import re
import shutil
import signal

import numpy as np
import pytest

from protbench_nrp.dcd import read_dcd
from protbench_nrp.engine import read_production_frames
from protbench_nrp.reporters import read_cv_file
from tests.conftest import SOLVATED_FF, write_solvated_inputs

from .conftest import run_window, start_window, wait_for_step

pytestmark = pytest.mark.slow

#: |resumed - uninterrupted| may reach this many times |uninterrupted - uninterrupted| at each frame.
#: Six runs of 12 steps from one checkpoint of this System on CPU (OpenMM 8.6.1, 2 threads) differed
#: pairwise by 2.5e-7 to 3.0e-6 nm: one pair can sit 12 times closer than another. 100 covers that
#: with room; a resume that lost the random streams lands 250 times or more beyond it (the control:
#: 0.012 nm after 4 steps against a tolerance of 4.8e-5 nm).
SPREAD_MULTIPLE = 100

#: Per platform: production frame (ps, 4 fs steps), frames at the fork, frames in all, and the frame
#: after which the interrupted run is killed. Equilibration is 8 steps of 1 fs in frames of 4.
PLANS = {
    "CPU": dict(frame_ps=0.016, fork_frames=2, total_frames=8, kill_after=4),
    "Reference": dict(frame_ps=0.008, fork_frames=1, total_frames=3, kill_after=1),
}


def _env(platform: str, plan: dict, frames: int) -> dict:
    return dict(PROTBENCH_FF=SOLVATED_FF, PROTBENCH_WINDOW="00", PROTBENCH_N_WINDOWS="2",
                PROTBENCH_PLATFORM=platform, PROTBENCH_PRECISION="mixed",
                PROTBENCH_REQUIRED_FILES=f"villin-{SOLVATED_FF}/setup/\nvillin-{SOLVATED_FF}/replica-1/",
                PROTBENCH_EQUIL_LENGTH="0.000008", PROTBENCH_EQUIL_TIMESTEP="1", PROTBENCH_EQUIL_FRAME="0.004",
                PROTBENCH_TIMESTEP="4", PROTBENCH_FRAME=str(plan["frame_ps"]),
                PROTBENCH_CHECKPOINT=str(plan["frame_ps"]), PROTBENCH_SAVE_STATE=str(plan["frame_ps"]),
                PROTBENCH_PRODUCTION_LENGTH=f"{plan['frame_ps'] * frames / 1000:.10g}")


def _frames(root, files):
    frames = read_production_frames(root, files)
    return frames.steps, frames.positions_nm.astype(np.float64), frames.box_lengths_nm.astype(np.float64)


def _deviation_nm(a, b, box_nm) -> np.ndarray:
    """Largest distance, over atoms, between two imaged frames, per frame (nearest images)."""
    d = a - b
    d -= box_nm[:, None, :] * np.round(d / box_nm[:, None, :])  # a water imaged the other way
    return np.abs(d).max(axis=(1, 2))


@pytest.fixture(scope="module")
def forked(solvated_villin, tmp_path_factory):
    """Per platform: a window whose production stopped, finished, at its fork frame."""
    made = {}

    def fork(platform: str):
        if platform not in made:
            plan = PLANS[platform]
            root = write_solvated_inputs(tmp_path_factory.mktemp(f"fork-{platform}"), solvated_villin,
                                         n_windows=2).root
            done = run_window(root, **_env(platform, plan, plan["fork_frames"]))
            assert done.returncode == 0, done.stdout + done.stderr
            made[platform] = root
        return made[platform]
    return fork


@pytest.mark.parametrize("platform", ["CPU", "Reference"])
def test_a_killed_solvated_window_resumes_within_the_platforms_own_spread(platform, forked, tmp_path):
    from protbench_nrp.layout import Campaign

    plan = PLANS[platform]
    fork, files = forked(platform), Campaign("villin", SOLVATED_FF).window_files(1, 0)
    env = _env(platform, plan, plan["total_frames"])
    runs = {name: tmp_path / name for name in ("a", "b", "killed", "portable")}
    for root in runs.values():
        shutil.copytree(fork, root)
    frame_steps = round(plan["frame_ps"] / 0.004)
    fork_step = plan["fork_frames"] * frame_steps

    for name in ("a", "b") if platform == "CPU" else ("a",):
        done = run_window(runs[name], **env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"at step {fork_step} " in done.stdout  # continued from the fork's checkpoint

    # -- the interrupted run: SIGKILL once it has written a frame past the chosen one
    killed = runs["killed"]
    process = start_window(killed, **env)
    wait_for_step(killed / files.progress, "production", (plan["kill_after"] + 1) * frame_steps, process,
                  timeout=300)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    segments = sorted((killed / files.directory).glob("*production-segment-*.dcd"))
    written = {p.name: p.read_bytes() for p in segments if len(read_dcd(p).steps) == 1}
    assert len(written) > plan["kill_after"]
    done = run_window(killed, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed_at = int(re.findall(r"starting from .* at step (\d+)", done.stdout)[-1])
    resumed_frame = resumed_at // frame_steps
    assert resumed_frame >= len(written) - 1  # a kill loses at most the frame it was checkpointing
    kept = [name for name in written if int(name.rsplit("-", 1)[1].removesuffix(".dcd")) < resumed_frame]
    assert len(kept) >= plan["kill_after"]
    for name in kept:
        assert (killed / files.directory / name).read_bytes() == written[name], name

    # -- no frame lost or repeated, in the trajectory and the CV file
    steps, killed_xyz, killed_box = _frames(killed, files)
    expected = [frame_steps * (k + 1) for k in range(plan["total_frames"])]
    assert steps.tolist() == expected
    assert read_cv_file(killed / files.cv_timeseries)[0].tolist() == expected
    a_steps, a_xyz, a_box = _frames(runs["a"], files)
    assert a_steps.tolist() == expected
    before = slice(0, plan["fork_frames"])  # the fork's own frames: the same file in every copy
    np.testing.assert_array_equal(killed_xyz[before], a_xyz[before])

    after = slice(plan["fork_frames"], None)
    deviation = _deviation_nm(killed_xyz[after], a_xyz[after], a_box[after])
    if platform == "Reference":
        np.testing.assert_array_equal(killed_xyz, a_xyz)  # to the last bit
        np.testing.assert_array_equal(killed_box, a_box)
        assert (killed / files.portable_checkpoint).read_bytes() == (runs["a"] / files.portable_checkpoint).read_bytes()
        return
    _, b_xyz, _ = _frames(runs["b"], files)
    spread = _deviation_nm(b_xyz[after], a_xyz[after], a_box[after])
    # the DCD holds float32 Angstrom: below one unit in the last place nothing can be told apart
    resolution_nm = float(np.spacing(np.float32(10 * np.abs(a_xyz).max()))) / 10
    tolerance = SPREAD_MULTIPLE * np.maximum(spread, resolution_nm)
    print(f"{platform}: run-to-run spread per frame after the fork {spread.tolist()} nm; "
          f"resumed vs uninterrupted {deviation.tolist()} nm; tolerance {tolerance.tolist()} nm")
    assert np.all(deviation <= tolerance), (deviation, tolerance)
    np.testing.assert_allclose(killed_box[after], a_box[after], atol=SPREAD_MULTIPLE * resolution_nm)

    # -- control: the portable State restarts the random streams, and the check sees it
    portable = runs["portable"]
    (portable / files.production("chk")).unlink()
    done = run_window(portable, **env)
    assert done.returncode == 0 and "production-checkpoint.xml at step" in done.stdout, done.stdout + done.stderr
    _, p_xyz, _ = _frames(portable, files)
    lost = _deviation_nm(p_xyz[after], a_xyz[after], a_box[after])
    print(f"{platform}: resumed without the random streams vs uninterrupted {lost.tolist()} nm")
    assert np.all(lost > tolerance), (lost, tolerance)
