"""The library's modules form layers: no import cycle, and ``--local`` plans without the Kubernetes side."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = "protbench_nrp"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "umbrella-scripts" / PACKAGE

#: What a --local run has no use for: the launch, the manifests, the cluster and the command line.
KUBERNETES_SIDE = (f"{PACKAGE}.launcher", f"{PACKAGE}.cluster", f"{PACKAGE}.manifest", f"{PACKAGE}.policy",
                   f"{PACKAGE}.pinning", f"{PACKAGE}.command", "kubernetes_validate")


def import_graph(package_dir: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its body (a lazy import is a dependency too)."""
    modules = {path.stem for path in package_dir.glob("*.py")}
    graph = {}
    for path in sorted(package_dir.glob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    base = node.module
                elif node.level == 0 and node.module and node.module.split(".")[0] == package:
                    base = node.module.partition(".")[2]
                else:
                    continue
                if base:  # from .layout import x, from protbench_nrp.layout import x
                    imported.add(base.split(".")[0])
                else:  # from . import layout, from protbench_nrp import layout
                    imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[1] for alias in node.names
                             if alias.name.startswith(f"{package}.")}
        graph[path.stem] = {name for name in imported if name in modules and name != path.stem}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted: every cycle's modules."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.get(module, ())):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(groups)


def _describe(cycles: list[list[str]], graph: dict[str, set[str]]) -> str:
    lines = []
    for group in cycles:
        edges = [f"{module} -> {other}" for module in group for other in sorted(graph[module] & set(group))]
        lines.append(f"{', '.join(group)} (imports: {'; '.join(edges)})")
    return "\n  ".join(lines)


def test_no_import_cycle_among_the_librarys_modules():
    graph = import_graph(PACKAGE_DIR)
    cycles = import_cycles(graph)
    assert not cycles, f"import cycles among {PACKAGE}'s modules:\n  {_describe(cycles, graph)}"


def test_the_graph_counts_imports_inside_functions_and_every_spelling_of_them():
    graph = import_graph(PACKAGE_DIR)
    # command imports local and status only inside cli(), when --local or --status asks for them.
    assert {"local", "status", "launcher", "jobs"} <= graph["command"]
    assert "jobs" in graph["local"] and "launcher" not in graph["local"]
    assert "cluster" in graph["status"] and "status" not in graph["cluster"]


@pytest.mark.parametrize("files, expected", [
    ({"a": "def f():\n    from .b import x\n", "b": "from . import a\n"}, [["a", "b"]]),
    ({"a": "import protbench_nrp.b\n", "b": "from protbench_nrp.c import y\n", "c": "from protbench_nrp import a\n"},
     [["a", "b", "c"]]),
    ({"a": "from .b import x\n", "b": "from .c import y\n", "c": "import json\n"}, []),
    ({"a": "from .b import x\n", "b": "from .a import y\n", "c": "from .d import z\n", "d": "from . import c\n"},
     [["a", "b"], ["c", "d"]]),
])
def test_a_cycle_is_found_and_named_with_its_modules(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
    assert import_cycles(import_graph(tmp_path)) == expected


def test_local_plans_its_jobs_without_loading_the_kubernetes_side(tmp_path):
    """Importing protbench_nrp.local and planning a campaign (every stage it needs) loads no launcher,
    cluster, manifest or command line: checked in a fresh interpreter, whose sys.modules holds only that."""
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from protbench_nrp import local
        from protbench_nrp.jobs import CampaignConfig, jobs_for_this_machine

        config = CampaignConfig(initials="jm", target="villin", ff="amber14-vacuum", n_replicas=2, n_windows=4,
                                local_result_dir=Path({str(tmp_path)!r}), stage="window", replicas=(2,),
                                windows=(1, 2), bucket="bucket-name", rclone_remote="nrp", rclone_secret="rclone",
                                openeye_secret="oe", image="image:tag", repo_url="https://example.org/r.git",
                                proteinbenchmark_ref="main", cuda_version="12.4")
        jobs = local.campaign_jobs(jobs_for_this_machine(config, Path({str(tmp_path)!r})), config)
        envs = [local.local_environment(job, config.local_result_dir, base={{}}, threads=1) for job in jobs]
        print(json.dumps({{"jobs": [[job.stage, job.replica, job.window] for job in jobs],
                          "platforms": sorted({{env["PROTBENCH_PLATFORM"] for env in envs}}),
                          "modules": sorted(sys.modules)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE_DIR.parent, env={"PYTHONPATH": str(PACKAGE_DIR.parent), "PATH": ""})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["jobs"] == [["setup", None, None], ["steered", 2, None], ["window", 2, 1], ["window", 2, 2]]
    assert seen["platforms"] == ["CPU"]
    assert f"{PACKAGE}.jobs" in seen["modules"] and f"{PACKAGE}.local" in seen["modules"]
    loaded = [name for name in KUBERNETES_SIDE if name in seen["modules"]]
    assert loaded == [], f"--local's planning loaded {', '.join(loaded)}"


@pytest.mark.parametrize("options, results", [(["--local"], "results"),
                                              (["--demo", "--local"], "demo-results")],
                         ids=["local", "demo-local"])
def test_the_command_lines_local_run_loads_nothing_of_the_kubernetes_side(tmp_path, options, results):
    """``run-umbrella-windows.py --local`` (and ``--demo --local``), through the real command line, on a
    setup already done (so nothing runs) loads no launcher, cluster, manifest, policy, pinning or preflight."""
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from protbench_nrp import command
        from protbench_nrp.jobs import CampaignConfig
        from protbench_nrp.layout import Campaign
        from protbench_nrp.products import setup_products

        tmp = Path({str(tmp_path)!r})
        for product in setup_products(Campaign("villin", "amber14-vacuum")):
            (tmp / {results!r} / product).parent.mkdir(parents=True, exist_ok=True)
            (tmp / {results!r} / product).write_text("done\\n")
        config = CampaignConfig(initials="jm", target="villin", ff="amber14-vacuum", n_replicas=2, n_windows=4,
                                local_result_dir=tmp / "results", stage="window", bucket="bucket-name",
                                rclone_remote="nrp", rclone_secret="rclone", openeye_secret="oe",
                                image="image:tag", repo_url="https://example.org/r.git",
                                proteinbenchmark_ref="main", cuda_version="12.4")
        try:
            command.main(config, repo_dir=tmp, template_path=tmp / "k8s_template.yaml",
                         argv={options!r} + ["--stage", "setup"])
        except SystemExit as exit:
            code = exit.code
        print(json.dumps({{"code": code, "modules": sorted(sys.modules)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE_DIR.parent, env={"PYTHONPATH": str(PACKAGE_DIR.parent), "PATH": ""})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["code"] == 0, done.stdout + done.stderr
    assert "0 run, 1 already finished" in done.stdout
    side = [name for name in KUBERNETES_SIDE if name != f"{PACKAGE}.command"] + [f"{PACKAGE}.preflight"]
    loaded = [name for name in side if name in seen["modules"]]
    assert loaded == [], f"{' '.join(options)} loaded {', '.join(loaded)}"
