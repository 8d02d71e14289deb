"""EXTRA_ENV is checked against the registry of PROTBENCH_* variables before anything is written or applied.

A misspelt name would otherwise reach every Job and be ignored by all of them
(each window silently running the 500 ns default); a value a script refuses
would be found only when a pod runs, hours or days later.
"""

from __future__ import annotations

import pytest

from .conftest import all_containers, assert_refused_untouched, documents, env_of

CASES = {
    "misspelt name": ({"PROTBENCH_PRODUCTION_LENGHT": "100"}, "window",
                      "EXTRA_ENV sets PROTBENCH_PRODUCTION_LENGHT, which no stage reads; "
                      "did you mean PROTBENCH_PRODUCTION_LENGTH?"),
    "name with a unit suffix": ({"PROTBENCH_TIMESTEP_FS": "2"}, "window",
                                "did you mean PROTBENCH_TIMESTEP"),
    "name nothing is close to": ({"PROTBENCH_XYZZY": "1"}, "window",
                                 "EXTRA_ENV sets PROTBENCH_XYZZY, which no stage reads; see the settings table"),
    "analysis setting": ({"PROTBENCH_PMF_BINS": "40"}, "window",
                         "EXTRA_ENV sets PROTBENCH_PMF_BINS, which no Job reads"),
    "not a number": ({"PROTBENCH_PRODUCTION_LENGTH": "a hundred"}, "window",
                     "Invalid value for PROTBENCH_PRODUCTION_LENGTH (--production-length of "
                     "run-umbrella-window.py): 'a hundred' is not a valid float."),
    "negative length": ({"PROTBENCH_PRODUCTION_LENGTH": "-100"}, "window",
                        "PROTBENCH_PRODUCTION_LENGTH = -100.0 ns must be a positive number"),
    "zero timestep": ({"PROTBENCH_TIMESTEP": "0"}, "window", "PROTBENCH_TIMESTEP = 0.0 fs must be a positive number"),
    "frame longer than the run": ({"PROTBENCH_FRAME": "200", "PROTBENCH_PRODUCTION_LENGTH": "0.1"}, "window",
                                  "PROTBENCH_FRAME = 200.0 ps does not divide PROTBENCH_PRODUCTION_LENGTH = "
                                  "0.1 ns into whole frames"),
    "equilibration frame longer than its run": ({"PROTBENCH_EQUIL_FRAME": "20", "PROTBENCH_EQUIL_LENGTH": "0.01"},
                                                "window", "PROTBENCH_EQUIL_FRAME = 20.0 ps does not divide"),
    "unknown platform": ({"PROTBENCH_PLATFORM": "Metal"}, "window",
                         "unknown platform 'Metal'; set PROTBENCH_PLATFORM to one of CUDA, OpenCL, CPU, Reference"),
    "unknown precision": ({"PROTBENCH_PRECISION": "half"}, "window",
                          "unknown precision 'half'; set PROTBENCH_PRECISION to one of single, mixed, double"),
    "negative pull length": ({"PROTBENCH_PULL_LENGTH": "-1"}, "steered",
                             "run-steered-md.py would refuse this: PROTBENCH_PULL_LENGTH = -1.0 ns must be a "
                             "positive number"),
    "setup platform": ({"PROTBENCH_PLATFORM": "GPU"}, "setup",
                       "setup-umbrella-system.py would refuse this: unknown platform 'GPU'"),
    "sync interval run-job.sh refuses": ({"PROTBENCH_SYNC_MINUTES": "1e3"}, "window",
                                         "Invalid value for PROTBENCH_SYNC_MINUTES: '1e3' is not a number of "
                                         "minutes"),
    "read by another stage, still a number": ({"PROTBENCH_PULL_LENGTH": "long"}, "window",
                                              "Invalid value for PROTBENCH_PULL_LENGTH: 'long' is not a valid float"),
}


@pytest.mark.parametrize("extra_env, stage, message", CASES.values(), ids=CASES.keys())
def test_a_dry_run_refuses_a_bad_extra_env_naming_the_variable(launcher_repo, extra_env, stage, message):
    launcher_repo.set_constants(EXTRA_ENV=extra_env, STAGE=stage)
    result = launcher_repo.run("--dry-run")
    assert_refused_untouched(launcher_repo, result, message)
    assert result.stdout == ""


@pytest.mark.parametrize("mode", ["launch", "--local"])
@pytest.mark.parametrize("case", ["misspelt name", "negative length", "unknown platform"])
def test_a_launch_and_a_local_run_refuse_it_too(launcher_repo, mode, case):
    extra_env, stage, message = CASES[case]
    launcher_repo.set_constants(EXTRA_ENV=extra_env, STAGE=stage)
    launcher_repo.commit("settings")
    args = () if mode == "launch" else (mode,)
    assert_refused_untouched(launcher_repo, launcher_repo.run(*args, "--windows", "0"), message)


def test_every_problem_of_extra_env_is_named_at_once(launcher_repo):
    launcher_repo.set_constants(EXTRA_ENV={"PROTBENCH_PRODUCTION_LENGHT": "1", "PROTBENCH_FRAM": "2"})
    result = launcher_repo.run("--dry-run")
    assert_refused_untouched(launcher_repo, result, "did you mean PROTBENCH_PRODUCTION_LENGTH?",
                             "did you mean PROTBENCH_FRAME")


def test_good_settings_and_other_variables_pass_through_unchanged(launcher_repo):
    extra_env = {"PROTBENCH_PRODUCTION_LENGTH": "100", "PROTBENCH_TIMESTEP": "2", "PROTBENCH_PLATFORM": "opencl",
                 "PROTBENCH_SYNC_MINUTES": "0.5", "PROTBENCH_MAX_BLOWUPS": "5", "OMP_NUM_THREADS": "2",
                 "OPENMM_CPU_THREADS": "4", "MY_OWN_SETTING": "anything"}
    launcher_repo.set_constants(EXTRA_ENV=extra_env)
    result = launcher_repo.run("--dry-run", "--windows", "0")
    assert result.returncode == 0, result.stderr
    for manifest in documents(result.stdout):
        for container in all_containers(manifest):
            env = env_of(container)
            assert {name: env[name] for name in extra_env} == extra_env


def test_a_target_unknown_here_is_left_to_the_pods_catalog(launcher_repo):
    # proteinbenchmark's catalog is in the image, not necessarily on the launching machine.
    launcher_repo.set_constants(TARGET="T4_lysozyme", EXTRA_ENV={"PROTBENCH_PRODUCTION_LENGTH": "100"})
    result = launcher_repo.run("--dry-run", "--windows", "0")
    assert result.returncode == 0, result.stderr
