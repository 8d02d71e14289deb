"""The follower as a small CPU-only Job in the namespace (``--follow --print-follower-job``).

``--follow`` needs to run for the two weeks a campaign takes. Instead of a
workstation, it can run in the campaign's own namespace, as one Job with:

* a ServiceAccount, and a Role bound to it that grants only what the follower
  calls (``policy.ROLE_RULES_ALLOWED``: Jobs get/list/watch/create/delete,
  pods get/list/watch/delete), in this namespace only;
* a PersistentVolumeClaim for ``LOCAL_RESULT_DIR``: the provenance files the
  attempts are counted from, the journal and the report outlive a follower pod
  that is preempted or evicted (the pod's own disk would not);
* the Job: the template's ``init-git`` (the pushed commit, as the campaign's
  pods clone it), then the follower in the pinned IMAGE, CPU only, with the
  rclone secret mounted as the campaign's pods mount it. It fetches kubectl
  (checked against its published SHA-256) and the launcher's Python packages
  (``requirements.txt`` up to its tests section) when it starts: IMAGE holds
  the simulation's software, not the launcher's.

The follower is stateless, so its pod can be preempted and retried at will:
a disruption is Ignored by the podFailurePolicy, a refused start (exit 1)
or "nothing more can progress" (exit 4) fails the Job (a new pod would say
the same), anything else counts against ``backoffLimit``.

Every manifest is checked as the campaign's Jobs are, before it is printed:
the strict Kubernetes schema (:func:`manifest.schema_errors`) and NRP's policy
(:func:`policy.lint` without a GPU, :func:`policy.lint_role`).
"""

from __future__ import annotations

import contextlib
import copy
import shlex
import sys
from pathlib import Path

from . import policy
from .errors import ProtbenchError
from .jobs import EXIT_REFUSED, EXIT_STOPPED, CampaignConfig
from .layout import LABEL_PREFIX, follower_name, label_value
from .manifest import SchemaUnavailable, schema_errors

#: kubectl the follower pod fetches (a release within one minor version of NRP's API servers).
KUBECTL_VERSION = "v1.31.4"
KUBECTL_URL = f"https://dl.k8s.io/release/{KUBECTL_VERSION}/bin/linux/amd64/kubectl"

#: The follower container's resources: the passes are light; the closing analysis (pymbar's
#: bootstrap) is what needs the memory. Limits within NRP's 20 %.
FOLLOWER_RESOURCES = {
    "requests": {"cpu": "1", "memory": "4Gi", "ephemeral-storage": "4Gi"},
    "limits": {"cpu": "1200m", "memory": "4800Mi", "ephemeral-storage": "4800Mi"},
}
#: The claim holding LOCAL_RESULT_DIR (provenance, journal, analysis and report).
RESULTS_CLAIM_SIZE = "5Gi"
#: Counted failures (crashes, a kubectl or bucket outage outlasting its retries) before the Job fails.
FOLLOWER_BACKOFF_LIMIT = 20

REPO_MOUNT = "/opt/repo"
SECRETS_MOUNT = "/secrets"
TOOLS_MOUNT = "/tools"

#: The follower container: fetch kubectl and the launcher's packages, then run the follower.
FOLLOWER_SCRIPT = """\
set -euo pipefail
cd "{repo}"
mkdir -p "{tools}/bin"
python - <<'PY'
import hashlib, os, urllib.request
url = {url!r}
data = urllib.request.urlopen(url, timeout=120).read()
expected = urllib.request.urlopen(url + ".sha256", timeout=120).read().decode().split()[0]
if hashlib.sha256(data).hexdigest() != expected:
    raise SystemExit(f"kubectl from {{url}} does not match its published SHA-256; not running it")
with open("{tools}/bin/kubectl", "wb") as out:
    out.write(data)
os.chmod("{tools}/bin/kubectl", 0o755)
PY
sed -n '1,/^# Tests/p' requirements.txt | grep -v '^#' > "{tools}/requirements.txt"
PYTHONUSERBASE="{tools}/python" python -m pip install --quiet --user -r "{tools}/requirements.txt"
export PYTHONUSERBASE="{tools}/python" PATH="{tools}/bin:$PATH"
exec python run-umbrella-windows.py --follow {options}
"""


class FollowerJobError(ProtbenchError, ValueError):
    """The follower's manifests cannot be made, or break the schema or NRP's policy."""


def follower_manifests(config: CampaignConfig, commit: str, init_git: dict, repo_dir: Path,
                       options: list[str]) -> list[dict]:
    """ServiceAccount, Role, RoleBinding, PersistentVolumeClaim and Job of the follower.

    Parameters
    ----------
    config : CampaignConfig
        The campaign, its IMAGE already pinned (a launch's checks have run).
    commit : str
        The pushed commit the follower pod checks out.
    init_git : dict
        The template's ``init-git`` container, reused as it is.
    repo_dir : Path
        The launcher's repository (``LOCAL_RESULT_DIR`` must be inside it).
    options : list of str
        The ``--follow`` options the pod passes on (selection, ``--poll``, ``--max-attempts``).
    """
    name = follower_name(config.initials, config.target, config.ff)
    try:
        results = Path(config.local_result_dir).resolve().relative_to(Path(repo_dir).resolve())
    except ValueError:
        raise FollowerJobError(f"LOCAL_RESULT_DIR {config.local_result_dir} is outside the repository "
                               f"{repo_dir}; the follower Job keeps it on a claim mounted inside its checkout: "
                               f"set LOCAL_RESULT_DIR to a relative path such as 'results'") from None
    labels = {f"{LABEL_PREFIX}/follower": label_value(f"{config.initials.lower()}-{config.target}-{config.ff}")}
    metadata = {"name": name, "labels": labels}
    service_account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": copy.deepcopy(metadata)}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": copy.deepcopy(metadata),
            "rules": [{"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
                      for (group, resource), verbs in policy.ROLE_RULES_ALLOWED.items()]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": copy.deepcopy(metadata),
               # no namespace: a RoleBinding's ServiceAccount subject is in the binding's own
               "subjects": [{"kind": "ServiceAccount", "name": name}],
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": copy.deepcopy(metadata),
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": RESULTS_CLAIM_SIZE}}}}
    script = FOLLOWER_SCRIPT.format(repo=REPO_MOUNT, tools=TOOLS_MOUNT, url=KUBECTL_URL,
                                    options=" ".join(shlex.quote(o) for o in options))
    git = copy.deepcopy(init_git)
    git["env"] = [{"name": "PROTBENCH_REPO_URL", "value": config.repo_url},
                  {"name": "PROTBENCH_SCRIPT_COMMIT", "value": commit}]
    follower = {
        "name": "follower", "image": config.image, "command": ["/bin/bash", "-c"], "args": [script],
        "env": [{"name": "RCLONE_CONFIG", "value": f"{SECRETS_MOUNT}/rclone.conf"},
                {"name": "HOME", "value": f"{TOOLS_MOUNT}/home"}],
        "resources": copy.deepcopy(FOLLOWER_RESOURCES),
        "volumeMounts": [{"name": "repo", "mountPath": REPO_MOUNT},
                         {"name": "results", "mountPath": f"{REPO_MOUNT}/{results.as_posix()}"},
                         {"name": "tools", "mountPath": TOOLS_MOUNT},
                         {"name": "rclone-config", "mountPath": SECRETS_MOUNT, "readOnly": True}],
    }
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": copy.deepcopy(metadata),
        "spec": {
            "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": "follower", "operator": "In",
                                                      "values": [EXIT_REFUSED, EXIT_STOPPED]}},
            ]},
            "backoffLimit": FOLLOWER_BACKOFF_LIMIT,
            "podReplacementPolicy": "Failed",  # one follower pod at a time, as a podFailurePolicy requires
            "ttlSecondsAfterFinished": 604800,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "serviceAccountName": name,
                    "restartPolicy": "Never",
                    "securityContext": {"runAsUser": 57439, "runAsGroup": 57439, "fsGroup": 57439,
                                        "runAsNonRoot": True},
                    "initContainers": [git],
                    "containers": [follower],
                    "volumes": [{"name": "repo", "emptyDir": {}}, {"name": "tools", "emptyDir": {}},
                                {"name": "results", "persistentVolumeClaim": {"claimName": name}},
                                {"name": "rclone-config", "secret": {"secretName": config.rclone_secret}}],
                },
            },
        },
    }
    return [service_account, role, binding, claim, job]


def check_follower_manifests(manifests: list[dict]) -> None:
    """The schema and NRP's policy, as for the campaign's Jobs; :class:`FollowerJobError` naming every finding."""
    findings = []
    for item in manifests:
        who = f"{item.get('kind')} {item.get('metadata', {}).get('name', '?')}"
        try:
            findings += [f"{who}: Kubernetes schema: {error}" for error in schema_errors(item)]
        except SchemaUnavailable as error:
            raise FollowerJobError(f"cannot check the follower's manifests against the Kubernetes schema: "
                                   f"{error}") from None
        if item.get("kind") == "Job":
            findings += [f"{who}: NRP policy: {v}" for v in policy.lint(item, gpu=False, where="follower_job.py")]
    roles = {m["metadata"].get("name"): m for m in manifests if m.get("kind") in ("Role", "ClusterRole")}
    bindings = [m for m in manifests if m.get("kind") in ("RoleBinding", "ClusterRoleBinding")]
    for role in roles.values():
        findings += [f"NRP policy: {v}" for v in policy.lint_role(role)]
    for binding in bindings:
        name = binding["metadata"].get("name")
        role = roles.get(binding.get("roleRef", {}).get("name"))
        if binding.get("kind") != "RoleBinding" or role is None:
            findings.append(f"NRP policy: {binding.get('kind')} {name!r} grants {binding.get('roleRef')}; only a "
                            f"RoleBinding of the follower's own Role is allowed")
        else:
            findings += [f"NRP policy: {v}" for v in policy.lint_role(role, binding) if v.startswith("RoleBinding")]
    if findings:
        raise FollowerJobError("the follower's manifests are not fit for the cluster:\n  - " + "\n  - ".join(findings))


def follower_options(config: CampaignConfig, follow_settings) -> list[str]:
    """The ``--follow`` options the pod runs with: this selection, poll, cap and budget, spelled out."""
    options = ["--stage", config.stage]
    if config.replicas is not None:
        options += ["--replicas", ",".join(str(r) for r in config.replicas)]
    if config.windows is not None:
        options += ["--windows", ",".join(str(w) for w in config.windows)]
    options += ["--poll", f"{follow_settings.poll_s:g}", "--max-attempts", str(follow_settings.max_attempts)]
    if follow_settings.max_gpu_hours is not None:
        options += ["--max-gpu-hours", f"{follow_settings.max_gpu_hours:g}"]
    return options


def print_follower_job(config: CampaignConfig, settings, follow_settings) -> int:
    """Every check ``--follow`` makes, then the follower's manifests, checked, on stdout.

    The follower Job is built from what those checks resolve (the pushed
    commit, IMAGE by its digest), so it is printed only once they pass.
    """
    import click

    from . import follow, launcher
    from .manifest import load_template, yaml_stream

    # stdout is the manifests alone, for `| kubectl apply -f -`: what the checks say goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        ready = launcher.prepare(config, settings, select=follow.select_campaign, verb="Checking the follower of")
    pod = load_template(settings.template_path)["spec"]["template"]["spec"]
    init_git = next((c for c in pod.get("initContainers") or [] if c.get("name") == "init-git"), None)
    if init_git is None:
        raise FollowerJobError(f"{Path(settings.template_path).name} has no init container 'init-git'; the "
                               f"follower Job clones the repository with it: restore it from the repository")
    manifests = follower_manifests(ready.config, ready.commit, init_git, settings.repo_dir,
                                   follower_options(ready.config, follow_settings))
    check_follower_manifests(manifests)
    click.echo(yaml_stream(manifests), nl=False)
    click.echo(f"# apply in the campaign's namespace: ./run-umbrella-windows.py --follow --print-follower-job "
               f"| kubectl apply -f -   (follow it: kubectl logs -f job/{manifests[-1]['metadata']['name']})",
               err=True)
    return 0
