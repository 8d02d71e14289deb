"""One pod of the simulated cluster: its init containers in order, then its main container.

Run as ``python podrun.py POD_DIR`` in a session of its own, by the
controller (:mod:`tests.simcluster.cluster`). ``POD_DIR/plan.json`` holds
each container's command and environment, already resolved as the kubelet
would (:class:`tests.pod.harness.Pod`); this runner writes
``POD_DIR/status.json`` (atomically) as the kubelet reports a pod: phase
``Pending`` while init containers run, ``Running`` once the main container
starts, then ``Succeeded`` or ``Failed`` with every container's exit code.

SIGTERM (a preemption, or the Job deleted) reaches the running container as
the kubelet sends it; a container still running ``grace_s`` later is
SIGKILLed. No container starts after SIGTERM. A lost node is this whole
session SIGKILLed by the controller: nothing is written any more.

``plan["hold_when"]`` (a fault's trigger, see ``SimCluster.add_fault``): once
one of these results files exists and holds its text, the main container's
processes are frozen (SIGSTOP, as a cgroup freezer would) until the
controller's fault lands, and thawed (SIGCONT) right after its SIGTERM. The
controller polls and may run late on a loaded machine; without the freeze,
the window could finish its production before the fault and the test would
fail by chance. This runner's watcher checks every 20 ms in a process of its
own, and the pod cannot get further than where the trigger fired while the
controller catches up, so where the fault lands no longer depends on load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


HOLD_POLL_S = 0.02


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the containers' processes and theirs), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _held(pod_dir: Path, triggers: list[dict]) -> bool:
    for trigger in triggers:
        try:
            if trigger.get("text", "").encode() in (pod_dir / "results" / trigger["file"]).read_bytes():
                return True
        except OSError:
            continue
    return False


def main(pod_dir: Path) -> None:
    plan = json.loads((pod_dir / "plan.json").read_text())
    status = {"phase": "Pending", "containers": {}}
    current: dict = {"process": None}
    stopping = threading.Event()
    freezing = threading.RLock()  # a second SIGTERM may arrive while on_term holds it

    def write() -> None:
        (pod_dir / "status.json.new").write_text(json.dumps(status))
        os.replace(pod_dir / "status.json.new", pod_dir / "status.json")

    def kill_late(process: subprocess.Popen) -> None:
        try:
            process.wait(timeout=plan["grace_s"])
        except subprocess.TimeoutExpired:
            process.kill()

    def hold(process: subprocess.Popen) -> None:
        while process.poll() is None and not stopping.is_set():
            if _held(pod_dir, plan["hold_when"]):
                with freezing:  # never freeze after on_term has thawed: SIGTERM must be seen
                    if not stopping.is_set():
                        # twice: a process forked while the first pass ran is caught by the second
                        for _ in range(2):
                            _signal_all(_descendants(os.getpid()), signal.SIGSTOP)
                return
            stopping.wait(HOLD_POLL_S)

    def on_term(_signum, _frame) -> None:
        stopping.set()
        process = current["process"]
        if process is not None and process.poll() is None:
            with freezing:
                process.send_signal(signal.SIGTERM)
                _signal_all(_descendants(os.getpid()), signal.SIGCONT)  # a held container now sees its SIGTERM
            threading.Thread(target=kill_late, args=(process,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    write()
    for container in plan["containers"]:
        name = container["name"]
        if stopping.is_set():
            break
        argv = container["argv"]
        if name in plan.get("exit_faults", {}):  # the fault: this container exits with a chosen status
            argv = ["/bin/sh", "-c", f"exit {int(plan['exit_faults'][name])}"]
        with open(pod_dir / f"{name}.log", "w") as log:
            current["process"] = subprocess.Popen(argv, env=container["env"], stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, cwd=container["env"].get("HOME"))
            status["containers"][name] = {"state": "running", "startedAt": now_iso()}
            if not container["init"]:
                status["phase"] = "Running"
            write()
            if not container["init"] and plan.get("hold_when"):
                threading.Thread(target=hold, args=(current["process"],), daemon=True).start()
            code = current["process"].wait()
        status["containers"][name] = {"state": "terminated", "exitCode": code,
                                      "reason": "Completed" if code == 0 else "Error", "finishedAt": now_iso()}
        if code != 0:
            break
    else:
        status["phase"] = "Succeeded"
        write()
        return
    status["phase"] = "Failed"
    write()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
