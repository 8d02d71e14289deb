"""NRP Nautilus usage policy, checked on a rendered Job before it is applied.

Nautilus is shared: it asks that pods do not reserve far more than they use,
that GPU pods really are GPU work, and that nothing idles on a node. The
cluster enforces some of this only after the fact (by throttling or banning a
namespace), so the launcher refuses a Job that breaks these rules instead:

* every container (init containers included) requests and limits ``cpu`` and
  ``memory``, with the limit between the request and 1.2 times the request;
* the main container requests ``nvidia.com/gpu``, with the limit equal to the
  request (Kubernetes requires this of extended resources);
* no command, argument or hook runs ``sleep infinity``.

A CPU-only Job (the follower, ``--print-follower-job``) is held to the same
rules, but asks for no GPU at all. Its Role (:func:`lint_role`) may grant
only :data:`ROLE_RULES_ALLOWED`: the follower's own calls, in its namespace.

:func:`lint` returns every violation as a sentence naming the container and
the fix, so all of them can be reported at once.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

#: How far above its request a cpu or memory limit may be (NRP: within 20 %).
MAX_LIMIT_OVER_REQUEST = Decimal("1.2")

#: Resources every container must request and limit.
BOUNDED_RESOURCES = ("cpu", "memory")

#: The extended resource the main container must ask for.
GPU_RESOURCE = "nvidia.com/gpu"

#: The container that runs the simulation (the others prepare its volumes).
MAIN_CONTAINER = "main"

#: What a namespaced Role of this project may grant: (API group, resource) -> the verbs. The
#: follower reads, creates and deletes Jobs (``kubectl get``, ``create -f``, ``delete --wait``),
#: and reads and force-deletes pods (a pod stuck on a lost node); nothing else, and no wildcard.
ROLE_RULES_ALLOWED = {
    ("batch", "jobs"): frozenset({"get", "list", "watch", "create", "delete"}),
    ("", "pods"): frozenset({"get", "list", "watch", "delete"}),
}

_SUFFIXES = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"),
    "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE])?$")
_IDLE = re.compile(r"\bsleep\s+inf(inity)?\b", re.IGNORECASE)


def parse_quantity(value: object) -> Decimal:
    """Value of a Kubernetes resource quantity (``"2400m"`` -> 2.4, ``"8Gi"`` -> 8589934592).

    Raises
    ------
    ValueError
        When ``value`` is not a Kubernetes quantity.
    """
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 2, 500m, 8Gi)")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIXES[suffix]
    except InvalidOperation as error:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from error


def lint(manifest: dict, *, gpu: bool = True, where: str = "k8s_template.yaml") -> list[str]:
    """Every NRP policy violation of a rendered Job manifest (empty when it complies).

    Parameters
    ----------
    manifest : dict
        The Job.
    gpu : bool
        True: its main container must request a GPU (a simulation); False: no
        container may (a CPU-only Job such as the follower).
    where : str
        What the fix of a violation should be made in, for the messages.
    """
    pod = manifest.get("spec", {}).get("template", {}).get("spec", {})
    containers = [("init container", c) for c in pod.get("initContainers") or []]
    containers += [("container", c) for c in pod.get("containers") or []]
    problems: list[str] = []
    for kind, container in containers:
        problems += _resource_bounds(kind, container, where)
        problems += _idle_commands(kind, container, where)
    if gpu:
        problems += _main_gpu(pod.get("containers") or [])
    else:
        problems += [f"{kind} {c.get('name', '?')!r} asks for a GPU ({GPU_RESOURCE}); this Job is CPU-only: "
                     f"remove it in {where}" for kind, c in containers if _asks_gpu(c)]
    return problems


def lint_role(role: dict, binding: dict | None = None) -> list[str]:
    """Every way a Role (and the RoleBinding granting it) exceeds :data:`ROLE_RULES_ALLOWED`."""
    name = role.get("metadata", {}).get("name", "?")
    problems = []
    if role.get("kind") != "Role":
        problems.append(f"{role.get('kind')} {name!r}: only a namespaced Role may be granted, never a "
                        f"ClusterRole")
    for index, rule in enumerate(role.get("rules") or []):
        who = f"Role {name!r} rule {index}"
        if rule.get("resourceNames") or rule.get("nonResourceURLs"):
            problems.append(f"{who}: resourceNames and nonResourceURLs are not used; remove them")
        groups, resources, verbs = (rule.get(key) or [] for key in ("apiGroups", "resources", "verbs"))
        if "*" in groups or "*" in resources or "*" in verbs:
            problems.append(f"{who} grants '*'; name the groups, resources and verbs: at most "
                            f"{_allowed_text()}")
            continue
        for group in groups:
            for resource in resources:
                allowed = ROLE_RULES_ALLOWED.get((group, resource), frozenset())
                extra = sorted(set(verbs) - allowed)
                if extra:
                    problems.append(f"{who} grants {', '.join(extra)} on {resource or '?'} (API group "
                                    f"{group or 'core'!r}); allowed: {_allowed_text()}")
    if binding is not None:
        ref = binding.get("roleRef") or {}
        if ref.get("kind") != "Role" or ref.get("name") != name:
            problems.append(f"RoleBinding {binding.get('metadata', {}).get('name', '?')!r} grants "
                            f"{ref.get('kind')} {ref.get('name')!r}; it must grant the Role {name!r} only")
    return problems


def _allowed_text() -> str:
    return "; ".join(f"{resource} ({group or 'core'}): {', '.join(sorted(verbs))}"
                     for (group, resource), verbs in ROLE_RULES_ALLOWED.items())


def _asks_gpu(container: dict) -> bool:
    resources = container.get("resources") or {}
    return any(GPU_RESOURCE in (resources.get(part) or {}) for part in ("requests", "limits"))


def _resource_bounds(kind: str, container: dict, where: str) -> list[str]:
    """Requests and limits of cpu and memory present, with limit within 20 % of request."""
    who = f"{kind} {container.get('name', '?')!r}"
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    problems = []
    for resource in BOUNDED_RESOURCES:
        missing = [part for part, table in (("request", requests), ("limit", limits)) if resource not in table]
        if missing:
            problems.append(
                f"{who}: no {resource} {' or '.join(missing)}; NRP needs both, with the limit "
                f"at most {MAX_LIMIT_OVER_REQUEST} x the request: set resources in {where}"
            )
            continue
        try:
            request, limit = parse_quantity(requests[resource]), parse_quantity(limits[resource])
        except ValueError as error:
            problems.append(f"{who}: {resource}: {error}; fix resources in {where}")
            continue
        if limit < request:
            problems.append(
                f"{who}: {resource} limit {limits[resource]} is below its request "
                f"{requests[resource]}; raise the limit in {where}"
            )
        elif limit > request * MAX_LIMIT_OVER_REQUEST:
            problems.append(
                f"{who}: {resource} limit {limits[resource]} is more than 20 % above its request "
                f"{requests[resource]} (NRP allows at most {MAX_LIMIT_OVER_REQUEST} x); lower the "
                f"limit or raise the request in {where}"
            )
    return problems


def _main_gpu(containers: list[dict]) -> list[str]:
    """The main container asks for a GPU, with equal request and limit."""
    main = next((c for c in containers if c.get("name") == MAIN_CONTAINER), None)
    if main is None:
        return [f"no container named {MAIN_CONTAINER!r}: the simulation container must be "
                f"called {MAIN_CONTAINER!r} in k8s_template.yaml"]
    resources = main.get("resources") or {}
    request = (resources.get("requests") or {}).get(GPU_RESOURCE)
    limit = (resources.get("limits") or {}).get(GPU_RESOURCE)
    try:
        request_n = parse_quantity(request) if request is not None else Decimal(0)
        limit_n = parse_quantity(limit) if limit is not None else None
    except ValueError as error:
        return [f"container {MAIN_CONTAINER!r}: {GPU_RESOURCE}: {error}"]
    if request_n < 1:
        return [f"container {MAIN_CONTAINER!r} requests no GPU; NRP GPU nodes are for GPU work: "
                f"set resources.requests.{GPU_RESOURCE}: \"1\" in k8s_template.yaml"]
    if limit_n != request_n:
        return [f"container {MAIN_CONTAINER!r}: {GPU_RESOURCE} limit {limit} differs from its "
                f"request {request}; Kubernetes needs them equal: set both in k8s_template.yaml"]
    return []


def _idle_commands(kind: str, container: dict, where: str) -> list[str]:
    """No ``sleep infinity`` in command, args or lifecycle hooks."""
    texts = _strings([container.get("command"), container.get("args"), container.get("lifecycle"),
                      container.get("livenessProbe"), container.get("readinessProbe"),
                      container.get("startupProbe")])
    if any(_IDLE.search(text) for text in texts):
        return [f"{kind} {container.get('name', '?')!r} runs 'sleep infinity'; NRP bans idle pods "
                f"that hold resources: remove it from {where}"]
    return []


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    return []
