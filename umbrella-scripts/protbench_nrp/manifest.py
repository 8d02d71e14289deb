"""Kubernetes manifests of a campaign: the template, its rendering, its checks, its files.

A pod clones the repository at a commit and runs one script with one
environment; everything that makes one Job differ from another is in its
:class:`~protbench_nrp.jobs.JobSpec`. :func:`render_manifest` pours a JobSpec
into a copy of ``k8s_template.yaml``; :func:`schema_errors` checks the result
against the Kubernetes OpenAPI schema (offline, strict, for
:data:`KUBERNETES_VERSION`); :func:`files.write_new_file` keeps it as provenance
without ever replacing an existing file.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path

import yaml

from . import exits
from .errors import ProtbenchError
from .jobs import CUDA_VERSION_FORMAT, CampaignConfig, JobSpec
from .layout import LABEL_PREFIX, job_annotations, job_labels

#: The Kubernetes version manifests are validated against (NRP Nautilus runs 1.31+).
KUBERNETES_VERSION = "1.31"

#: Marks a template value the launcher must fill in.
PLACEHOLDER = "set-by-the-launcher"

#: Template volumes whose secret the launcher names, and the CampaignConfig field naming it.
SECRET_VOLUMES = {"rclone-config": "rclone_secret", "openeye-license": "openeye_secret"}

#: Node labels published by NVIDIA GPU feature discovery with the node's CUDA runtime
#: version, (major, minor) per family: older releases publish the first, newer ones the
#: second (and some both). A node with either family qualifies.
CUDA_LABEL_FAMILIES = (
    ("nvidia.com/cuda.runtime.major", "nvidia.com/cuda.runtime.minor"),
    ("nvidia.com/cuda.runtime-version.major", "nvidia.com/cuda.runtime-version.minor"),
)
CUDA_MAJOR_LABEL, CUDA_MINOR_LABEL = CUDA_LABEL_FAMILIES[0]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TemplateError(ProtbenchError, ValueError):
    """``k8s_template.yaml`` cannot be turned into a Job."""


class SchemaUnavailable(ProtbenchError, RuntimeError):
    """The installed kubernetes-validate cannot check manifests for :data:`KUBERNETES_VERSION`."""


# -- the template -----------------------------------------------------------------

def load_template(path: Path | str) -> dict:
    """Read the Job template once; :func:`render_manifest` copies it per Job.

    Raises
    ------
    TemplateError
        When the file is missing, is not YAML, or is not a ``batch/v1`` Job
        with a pod template and containers.
    """
    path = Path(path)
    try:
        template = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except FileNotFoundError:
        raise TemplateError(f"Job template {path} does not exist; restore k8s_template.yaml "
                            f"or set TEMPLATE_PATH to it") from None
    except yaml.YAMLError as error:
        raise TemplateError(f"Job template {path} is not valid YAML: {error}") from None
    if not isinstance(template, dict) or (template.get("apiVersion"), template.get("kind")) != ("batch/v1", "Job"):
        raise TemplateError(f"Job template {path} must be one 'apiVersion: batch/v1', 'kind: Job' document")
    pod = (template.get("spec") or {}).get("template") or {}
    if not isinstance(pod.get("spec"), dict) or not pod["spec"].get("containers"):
        raise TemplateError(f"Job template {path} has no spec.template.spec.containers; "
                            f"the launcher needs at least the main container")
    return template


# -- rendering -----------------------------------------------------------------------

def render_manifest(job: JobSpec, config: CampaignConfig, template: dict) -> dict:
    """The Kubernetes Job for ``job``: a copy of ``template`` with every launcher value filled.

    Every init container and container receives exactly ``job.env`` after the
    variables the template itself defines (such as ``OE_LICENSE``).

    Raises
    ------
    TemplateError
        When the template defines a variable the launcher sets, names a secret
        volume the launcher does not know, or keeps a placeholder the launcher
        cannot fill.
    """
    _check_failure_policy(template)
    manifest = copy.deepcopy(template)
    identity = (config.initials, config.target, config.ff, job.stage, job.replica, job.window)
    labels = job_labels(*identity)

    metadata = manifest.setdefault("metadata", {})
    metadata["name"] = job.name
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    metadata["annotations"] = {**(metadata.get("annotations") or {}),
                               **job_annotations(*identity), **provenance_annotations(job, config)}
    pod_template = manifest["spec"]["template"]
    pod_metadata = pod_template.get("metadata") or {}
    pod_metadata["labels"] = {**(pod_metadata.get("labels") or {}), **labels}
    pod_template["metadata"] = pod_metadata

    pod = pod_template["spec"]
    _require_cuda_nodes(pod, config.cuda_version)
    for container in (pod.get("initContainers") or []) + pod["containers"]:
        if container.get("image") == PLACEHOLDER:
            container["image"] = config.image
        container["env"] = _with_job_env(container, job.env, config.extra_env)
    for volume in pod.get("volumes") or []:
        _name_secret(volume, config)

    leftover = list(_placeholder_paths(manifest))
    if leftover:
        raise TemplateError(
            f"k8s_template.yaml marks {', '.join(leftover)} as {PLACEHOLDER!r}, but the launcher "
            f"sets only metadata.name, container images and the secrets of volumes "
            f"{', '.join(SECRET_VOLUMES)}; write a value there"
        )
    return manifest


def _check_failure_policy(template: dict) -> None:
    """The template's restartPolicy and podFailurePolicy are the exit-status table's."""
    spec = template.get("spec") or {}
    expected = exits.pod_failure_policy()
    if spec.get("podFailurePolicy") != expected:
        raise TemplateError(
            "k8s_template.yaml's spec.podFailurePolicy differs from the exit-status table "
            "(protbench_nrp/exits.py); set it to " + json.dumps(expected) + ", or change the table")
    restart = ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
    if restart != "Never":
        raise TemplateError(f"k8s_template.yaml sets restartPolicy {restart!r}; a podFailurePolicy needs "
                            f"'Never' (every retry is a new pod that resumes from the bucket)")


def provenance_annotations(job: JobSpec, config: CampaignConfig) -> dict[str, str]:
    """What a Job ran, kept on the Job so the manifest alone can reproduce it."""
    pinned = config.pinned  # pinning.PinnedSoftware of a launch; None for a dry run
    return {
        f"{LABEL_PREFIX}/script-commit": job.env["PROTBENCH_SCRIPT_COMMIT"],
        f"{LABEL_PREFIX}/script-path": job.script_path,
        f"{LABEL_PREFIX}/repo-url": config.repo_url,
        f"{LABEL_PREFIX}/image": config.image,
        f"{LABEL_PREFIX}/image-tag": pinned.image.tag_reference if pinned else config.image,
        f"{LABEL_PREFIX}/proteinbenchmark-ref": config.proteinbenchmark_ref,
        f"{LABEL_PREFIX}/proteinbenchmark-requested-ref":
            pinned.proteinbenchmark_ref if pinned else config.proteinbenchmark_ref,
        f"{LABEL_PREFIX}/proteinbenchmark-repo": config.proteinbenchmark_repo,
        f"{LABEL_PREFIX}/results": f"{config.rclone_remote}:{config.bucket}",
        f"{LABEL_PREFIX}/provenance-path": str(job.provenance_path),
    }


def cuda_node_selector_terms(cuda_version: str) -> list[dict]:
    """Node selector terms admitting nodes whose CUDA runtime is at least ``cuda_version``.

    Terms are ORed, expressions within a term ANDed, and ``Gt`` compares
    integers, so "at least M.m" is "major > M" or "major = M and minor > m - 1",
    written once for each label family of :data:`CUDA_LABEL_FAMILIES`.
    """
    match = CUDA_VERSION_FORMAT.match(cuda_version)
    if not match:
        raise ValueError(f"CUDA version {cuda_version!r} is not MAJOR.MINOR (e.g. '12.4')")
    major, minor = int(match.group(1)), int(match.group(2))
    terms = []
    for major_label, minor_label in CUDA_LABEL_FAMILIES:
        newer_major = {"matchExpressions": [{"key": major_label, "operator": "Gt", "values": [str(major)]}]}
        same_major = [{"key": major_label, "operator": "In", "values": [str(major)]}]
        if minor > 0:
            same_major.append({"key": minor_label, "operator": "Gt", "values": [str(minor - 1)]})
        terms += [newer_major, {"matchExpressions": same_major}]
    return terms


def _require_cuda_nodes(pod: dict, cuda_version: str) -> None:
    """AND the CUDA requirement into every node selector term the template may already have."""
    required = (pod.setdefault("affinity", {}).setdefault("nodeAffinity", {})
                .setdefault("requiredDuringSchedulingIgnoredDuringExecution", {}))
    existing = required.get("nodeSelectorTerms") or [{}]
    required["nodeSelectorTerms"] = [
        {**term, "matchExpressions": list(term.get("matchExpressions") or []) + cuda["matchExpressions"]}
        for term in existing
        for cuda in cuda_node_selector_terms(cuda_version)
    ]


def _with_job_env(container: dict, env: dict[str, str], extra_env: dict[str, str]) -> list[dict]:
    template_env = list(container.get("env") or [])
    clashes = sorted({entry.get("name") for entry in template_env} & set(env))
    from_extra = [name for name in clashes if name in extra_env]
    if from_extra:
        raise TemplateError(
            f"EXTRA_ENV sets {', '.join(from_extra)}, which k8s_template.yaml already sets in container "
            f"{container.get('name')!r}; remove it from EXTRA_ENV (or from the template)"
        )
    if clashes:
        raise TemplateError(
            f"k8s_template.yaml sets {', '.join(clashes)} in container {container.get('name')!r}, "
            f"but the launcher sets it for every Job; remove it from the template "
            f"(per-simulation settings belong in EXTRA_ENV)"
        )
    return template_env + [{"name": name, "value": value} for name, value in env.items()]


def _name_secret(volume: dict, config: CampaignConfig) -> None:
    secret = volume.get("secret")
    if not secret or secret.get("secretName") != PLACEHOLDER:
        return
    field = SECRET_VOLUMES.get(volume.get("name"))
    if field is None:
        raise TemplateError(
            f"k8s_template.yaml volume {volume.get('name')!r} has secretName {PLACEHOLDER!r}, but the "
            f"launcher only names the secrets of volumes {', '.join(SECRET_VOLUMES)}; name the secret "
            f"in the template or rename the volume"
        )
    secret["secretName"] = getattr(config, field)


def _placeholder_paths(node: object, path: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _placeholder_paths(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _placeholder_paths(value, f"{path}[{index}]")
    elif node == PLACEHOLDER:
        yield path


# -- schema validation -------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _validator(kind: str, api_version: str, kubernetes_version: str):
    """A JSON-schema validator for one kind, built once: loading the schemas is the slow part."""
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    known = [v for v in utils.all_versions() if utils.major_minor(v) == kubernetes_version]
    if not known:
        raise SchemaUnavailable(
            f"kubernetes-validate {utils.__version__} has no schema for Kubernetes {kubernetes_version}; "
            f"upgrade it (pip install -U kubernetes-validate) or change manifest.KUBERNETES_VERSION"
        )
    schema_dir = f"kubernetes-json-schema/v{known[-1]}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = utils.schema_contents(f"{schema_dir}/{kind.lower()}-{group}.json", kubernetes_version)
    definitions = utils.schema_contents(f"{schema_dir}/_definitions.json", kubernetes_version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_errors(manifest: dict, kubernetes_version: str = KUBERNETES_VERSION) -> list[str]:
    """Every way ``manifest`` breaks the strict Kubernetes OpenAPI schema, as ``path: message``.

    Raises
    ------
    SchemaUnavailable
        When the installed kubernetes-validate has no schema for ``kubernetes_version``.
    """
    validator = _validator(manifest.get("kind", ""), manifest.get("apiVersion", ""), kubernetes_version)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(str(p) for p in error.absolute_path) or '(top level)'}: {error.message}"
            for error in errors]


# -- YAML text and files -------------------------------------------------------------

class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    """Block style for multi-line strings, so scripts and file lists stay readable."""


def _represent_str(dumper, text: str):
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(manifest: dict) -> str:
    """One manifest as a YAML document, keys in template order."""
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1000)


def yaml_stream(manifests: list[dict]) -> str:
    """Several manifests as one YAML stream, each document opened by ``---``."""
    return "".join(f"---\n{to_yaml(m)}" for m in manifests)


