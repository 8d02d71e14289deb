"""Exit statuses of every script a pod runs, and what the Job does with each: the one table.

A Job is retried by Kubernetes as a whole new pod (``restartPolicy: Never``),
and its ``podFailurePolicy`` decides per failed pod:

* ``Ignore``: the pod was disrupted (preemption, eviction, drain, a lost
  node): it does not count towards ``backoffLimit``, a new pod resumes;
* ``FailJob``: no retry can help (bad settings or inputs, missing bucket or
  rejected credentials, a blow-up that could not be recovered): the Job
  fails at once, with its GPU free, and ``--status`` names the reason;
* ``Count``: anything else, a transient failure: a new pod resumes, and it
  counts towards ``backoffLimit``.

:data:`EXIT_STATUSES` is the source; :func:`pod_failure_policy` renders the
rules that ``k8s_template.yaml`` must carry (the launcher refuses a template
whose rules differ), ``umbrella-scripts/pod/lib.sh`` spells the same numbers
as shell constants (a test compares them), and the README's table lists
:data:`SCRIPT_EXITS`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Rules of a podFailurePolicy.
IGNORE, FAIL_JOB, COUNT = "Ignore", "FailJob", "Count"


@dataclass(frozen=True)
class ExitStatus:
    """One exit status of the team's table.

    Attributes
    ----------
    code : int
    name : str
        The constant's name (``EXIT_BAD_INPUT``), here and in lib.sh.
    meaning : str
        What a person reading ``--status`` is told.
    rule : str
        :data:`COUNT` or :data:`FAIL_JOB` (0 is no failure: ``""``).
    """

    code: int
    name: str
    meaning: str
    rule: str


EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
#: A blow-up the engine could not recover from (engine.BlownUpError).
EXIT_BLOWN_UP = 65
EXIT_INPUTS_MISSING = 66
EXIT_BUCKET_UNUSABLE = 67
EXIT_TRANSIENT = 75
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

EXIT_STATUSES = (
    ExitStatus(EXIT_OK, "EXIT_OK", "done", ""),
    ExitStatus(EXIT_UNEXPECTED, "EXIT_UNEXPECTED",
               "unexpected failure (a bug, a traceback, a failed tool): see the pod's log", COUNT),
    ExitStatus(EXIT_BAD_INPUT, "EXIT_BAD_INPUT",
               "bad settings or inputs (a PROTBENCH_* value, a missing or invalid input file, "
               "a bad rclone config): fix them, then --relaunch", FAIL_JOB),
    ExitStatus(EXIT_BLOWN_UP, "EXIT_BLOWN_UP",
               "the simulation blew up and could not be recovered: look at the window's settings "
               "and last frames, then --relaunch", FAIL_JOB),
    ExitStatus(EXIT_INPUTS_MISSING, "EXIT_INPUTS_MISSING",
               "inputs missing from the bucket (an earlier stage has not written them): run that "
               "stage, then --relaunch", FAIL_JOB),
    ExitStatus(EXIT_BUCKET_UNUSABLE, "EXIT_BUCKET_UNUSABLE",
               "bucket missing or credentials rejected: fix BUCKET or the rclone secret, then "
               "--relaunch", FAIL_JOB),
    ExitStatus(EXIT_TRANSIENT, "EXIT_TRANSIENT",
               "a transient error (bucket unreachable, upload failed) outlasted the in-place "
               "retries: a new pod resumes from the bucket", COUNT),
    ExitStatus(EXIT_SIGINT, "EXIT_SIGINT", "stopped by SIGINT with a checkpoint written", COUNT),
    ExitStatus(EXIT_SIGTERM, "EXIT_SIGTERM",
               "stopped by SIGTERM with a checkpoint written (a preemption's pod is Ignored by "
               "the DisruptionTarget rule)", COUNT),
)

BY_CODE = {status.code: status for status in EXIT_STATUSES}

#: Which script exits with which status, and when: the README's table, and what
#: tests/pod/test_exit_statuses.py drives each script into.
SCRIPT_EXITS: dict[str, dict[int, str]] = {
    "init-git (k8s_template.yaml)": {
        EXIT_OK: "the commit is checked out",
        EXIT_TRANSIENT: "clone or fetch failed after its in-place retries (network, GitHub down)",
        EXIT_BAD_INPUT: "PROTBENCH_SCRIPT_COMMIT is not in the repository (not pushed?)",
    },
    "copy-in.sh": {
        EXIT_OK: "inputs (and the window's earlier outputs, if any) copied",
        EXIT_BAD_INPUT: "bad environment or rclone config (no remote of that name, a path outside results/)",
        EXIT_INPUTS_MISSING: "an input an earlier stage writes is not in the bucket",
        EXIT_BUCKET_UNUSABLE: "bucket missing, or the S3 server rejected the credentials",
        EXIT_TRANSIENT: "endpoint unreachable or a copy failed, after the in-place retries",
    },
    "run-job.sh": {
        EXIT_OK: "the script finished and its outputs are in the bucket",
        EXIT_UNEXPECTED: "the script's 1, or pip/micromamba failed",
        EXIT_BAD_INPUT: "the script's 2, or a bad PROTBENCH_SCRIPT_PATH / PROTBENCH_SYNC_MINUTES",
        EXIT_BLOWN_UP: "the script's 65",
        EXIT_BUCKET_UNUSABLE: "the script finished, but the bucket rejected its final upload",
        EXIT_TRANSIENT: "the script finished, but its final upload failed after the in-place retries",
        EXIT_SIGINT: "the script's 130",
        EXIT_SIGTERM: "the script's 143",
    },
    "copy-out.sh": {
        EXIT_OK: "uploaded (or nothing to upload, or a sync skipped for a running upload)",
        EXIT_UNEXPECTED: "a local error while snapshotting the outputs (the volume is full)",
        EXIT_BAD_INPUT: "bad environment or usage",
        EXIT_BUCKET_UNUSABLE: "bucket missing, or the S3 server rejected the credentials",
        EXIT_TRANSIENT: "an upload failed (final/prestop: after the in-place retries)",
    },
    "pre-stop.sh": {
        EXIT_OK: "run-job.sh finished its final upload, or exited; or, run-job.sh gone, its own upload went up",
        EXIT_UNEXPECTED: "run-job.sh gone, and its own upload could not snapshot the outputs (copy-out.sh's 1)",
        EXIT_BAD_INPUT: "lib.sh missing",
        EXIT_BUCKET_UNUSABLE: "run-job.sh gone, and the bucket rejected its own upload (copy-out.sh's 67)",
        EXIT_TRANSIENT: "run-job.sh gone, and its own upload failed after the in-place retries (copy-out.sh's 75)",
        # A hook's status fails no pod (the kubelet only logs it); listed for completeness.
    },
    "setup-umbrella-system.py, run-steered-md.py, run-umbrella-window.py": {
        EXIT_OK: "done (or already done)",
        EXIT_UNEXPECTED: "a traceback",
        EXIT_BAD_INPUT: "a setting, input file or checkpoint it cannot use, or click usage",
        EXIT_BLOWN_UP: "a blow-up it could not recover from (see docs/resuming.md)",
        EXIT_SIGINT: "stopped by SIGINT, checkpoint written",
        EXIT_SIGTERM: "stopped by SIGTERM, checkpoint written",
    },
}


def codes_with(rule: str) -> list[int]:
    """The exit statuses the table gives ``rule``, in order."""
    return [status.code for status in EXIT_STATUSES if status.rule == rule]


def pod_failure_policy() -> dict:
    """The Job's ``spec.podFailurePolicy``, from :data:`EXIT_STATUSES`.

    Rules are tried in order and the first match wins: a disrupted pod is
    ignored whatever its exit status (a preempted window exits 143); a status
    no retry can help fails the Job; the rest count. Statuses the table does
    not list (137 for an OOM kill, say) match no rule and count, which is
    Kubernetes' default.
    """
    return {"rules": [
        {"action": IGNORE, "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": FAIL_JOB, "onExitCodes": {"operator": "In", "values": codes_with(FAIL_JOB)}},
        {"action": COUNT, "onExitCodes": {"operator": "In", "values": codes_with(COUNT)}},
    ]}


def describe(code: int | None) -> str:
    """``"exit 66: inputs missing from the bucket ..."`` for a status, or a plain one when unknown."""
    if code is None:
        return ""
    status = BY_CODE.get(code)
    if status is None:
        if code > 128:
            return f"exit {code}: killed by signal {code - 128} (137: out of memory or SIGKILL)"
        return f"exit {code}: not in the exit-status table (see the pod's log)"
    return f"exit {code}: {status.meaning}"


def lib_sh_constants() -> dict[str, int]:
    """``NAME=code`` lines lib.sh must hold, one per status."""
    return {status.name: status.code for status in EXIT_STATUSES}


def readme_table() -> str:
    """The README's table: every script, every status, its meaning and its rule."""
    lines = ["| script | exit | meaning | rule |", "|---|---|---|---|"]
    for script, codes in SCRIPT_EXITS.items():
        for code, when in codes.items():
            rule = BY_CODE[code].rule or "-"
            if script == "pre-stop.sh":
                rule = "- (a hook's status fails no pod)"
            lines.append(f"| {script} | {code} | {when} | {rule} |")
    return "\n".join(lines) + "\n"
