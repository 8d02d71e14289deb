"""The registry of PROTBENCH_* variables is the one description of them: code and docs/settings.md follow it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import click
import pytest

from protbench_nrp import variables
from protbench_nrp.variables import BY_NAME, SCRIPT_NAMES, SCRIPT_VARIABLES, VARIABLES
from tests.conftest import REPO_ROOT, SCRIPTS_DIR


def load_command(script: str) -> click.Command:
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py").replace("-", "_"),
                                                  SCRIPTS_DIR / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def commands() -> dict[str, click.Command]:
    from protbench_nrp.analysis_cli import build_command
    from protbench_nrp.command import cli

    found = {name: load_command(name) for name in SCRIPT_NAMES.values()}
    found.update({"analyze-umbrella-windows.py": build_command(), "run-umbrella-windows.py": cli})
    return found


def test_the_settings_page_table_is_the_registry():
    page = (REPO_ROOT / "docs" / "settings.md").read_text()
    match = re.search(r"<!-- settings-table:start[^\n]*-->\n(.*?)<!-- settings-table:end -->", page, re.S)
    assert match, "docs/settings.md lacks the settings-table markers"
    assert match.group(1) == variables.markdown_table(), (
        "docs/settings.md's table differs from variables.py; regenerate it with the command in its start marker")


def test_every_option_that_reads_a_protbench_variable_reads_a_registered_one():
    for script, command in commands().items():
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str) and envvar.startswith("PROTBENCH_"):
                assert envvar in BY_NAME, f"{script} {param.opts[0]} reads {envvar}, which variables.py lacks"


def test_the_defaults_of_what_only_analysis_and_status_read_are_the_registrys(monkeypatch):
    for name in BY_NAME:
        monkeypatch.delenv(name, raising=False)
    for script, args in (("analyze-umbrella-windows.py", ["--target", "t", "--ff", "f"]),
                         ("run-umbrella-windows.py", [])):
        command = commands()[script]
        given = command.make_context(script, args, obj=None).params
        for param in command.params:
            variable = BY_NAME.get(getattr(param, "envvar", None) or "")
            if variable is not None and variable.stages in (("analysis",), ("status",)):
                expected = () if param.multiple and variable.default is None else variable.default
                assert given[param.name] == expected, variable.name


@pytest.mark.parametrize("stage", SCRIPT_VARIABLES)
def test_each_stage_scripts_options_are_its_registry_entries(stage, monkeypatch):
    for name in BY_NAME:
        monkeypatch.delenv(name, raising=False)
    command = load_command(SCRIPT_NAMES[stage])
    options = [p for p in command.params if p.name != "output_directory"]
    assert [p.envvar for p in options] == list(SCRIPT_VARIABLES[stage])
    required = ["-o", "results"]
    for param in options:
        variable = BY_NAME[param.envvar]
        assert stage in variable.stages, f"{variable.name} does not list {stage} among its readers"
        assert (param.opts, param.name, param.required) == ([variable.flag], variable.field, variable.required)
        assert variable.meaning.split(";")[0].rstrip(".") in param.help
        if variable.required:
            required += [variable.flag, "1"]
    given = command.make_context(SCRIPT_NAMES[stage], required).params
    assert {p.name: given[p.name] for p in options if not p.required} == {
        BY_NAME[p.envvar].field: BY_NAME[p.envvar].default for p in options if not p.required}


def test_every_protbench_name_in_the_code_is_registered():
    sources = [*SCRIPTS_DIR.rglob("*.py"), *SCRIPTS_DIR.rglob("*.sh"), REPO_ROOT / "k8s_template.yaml",
               REPO_ROOT / "run-umbrella-windows.py"]
    unknown = {}
    for path in sources:
        for name in re.findall(r"PROTBENCH_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
            if name not in BY_NAME and name != "PROTBENCH_EQUIL":  # "PROTBENCH_EQUIL_*" in prose
                unknown.setdefault(name, path.relative_to(REPO_ROOT))
    assert not unknown, f"PROTBENCH_* names that variables.py lacks: {unknown}"


def test_the_launcher_refuses_exactly_the_names_it_and_the_template_set():
    from protbench_nrp import jobs

    assert set(jobs.LAUNCHER_ENV) == {v.name for v in VARIABLES if v.set_by == "launcher"}
    assert {"PROTBENCH_RESULTS_DIR", "PROTBENCH_REPO_DIR"} <= set(jobs.TEMPLATE_ENV)
    assert not any(v.settable for v in VARIABLES if v.set_by)


def test_run_job_sh_checks_the_sync_interval_with_the_registrys_pattern():
    text = (SCRIPTS_DIR / "pod" / "run-job.sh").read_text()
    assert f"[[ $sync_minutes =~ {variables.SyncMinutes.PATTERN} ]]" in text


def test_the_demo_sets_only_registered_settings():
    from protbench_nrp.local import DEMO_ENV

    assert DEMO_ENV and all(BY_NAME[name].settable for name in DEMO_ENV)
    with pytest.raises(KeyError, match="PROTBENCH_PRODUCTION_LENGHT"):
        variables.settings_env(PROTBENCH_PRODUCTION_LENGHT=1)


JOB = {"PROTBENCH_TARGET": "villin", "PROTBENCH_FF": "amber14-vacuum", "PROTBENCH_REPLICA": "1",
       "PROTBENCH_WINDOW": "03", "PROTBENCH_PLATFORM": "Reference"}

#: What a pod's script refuses, and the launcher with it: stage, bad settings, the script's words.
REFUSALS = {
    "not a number": ("window", {"PROTBENCH_TIMESTEP": "four"}, "'four' is not a valid float."),
    "negative length": ("window", {"PROTBENCH_PRODUCTION_LENGTH": "-1"},
                        "PROTBENCH_PRODUCTION_LENGTH = -1.0 ns must be a positive number"),
    "frame longer than its run": ("window", {"PROTBENCH_FRAME": "200", "PROTBENCH_PRODUCTION_LENGTH": "0.1"},
                                  "PROTBENCH_FRAME = 200.0 ps does not divide PROTBENCH_PRODUCTION_LENGTH"),
    "unknown platform": ("window", {"PROTBENCH_PLATFORM": "Metal"},
                         "unknown platform 'Metal'; set PROTBENCH_PLATFORM to one of"),
    "unknown precision": ("steered", {"PROTBENCH_PRECISION": "quad"},
                          "unknown precision 'quad'; set PROTBENCH_PRECISION to one of single, mixed, double"),
    "zero pull timestep": ("steered", {"PROTBENCH_PULL_TIMESTEP": "0"},
                           "PROTBENCH_PULL_TIMESTEP = 0.0 fs must be a positive number"),
    "seed beyond OpenMM's": ("window", {"PROTBENCH_SEED": "2147483648"},
                             "2147483648 is not in the range 0<=x<=2147483647"),
}


@pytest.mark.parametrize("stage, bad, message", REFUSALS.values(), ids=REFUSALS.keys())
def test_the_launcher_refuses_a_value_with_the_message_the_pods_script_prints(tmp_path, stage, bad, message):
    job = {**JOB, **bad}
    problems = variables.value_problems(job, (stage,))
    assert len(problems) == 1 and message in problems[0] and next(iter(bad)) in problems[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTBENCH_")}
    script = subprocess.run([sys.executable, str(SCRIPTS_DIR / SCRIPT_NAMES[stage]), "-o", str(tmp_path / "r")],
                            env={**env, **job}, capture_output=True, text=True, timeout=120)
    assert script.returncode != 0 and message in script.stderr, script.stderr
    assert not (tmp_path / "r").exists()


def test_the_launcher_leaves_only_the_platforms_presence_to_the_pod():
    # No CUDA here, yet a Job asking for it is fine: the node it lands on has one.
    assert variables.value_problems({**JOB, "PROTBENCH_PLATFORM": "cuda"}, ("window", "steered", "setup")) == []
