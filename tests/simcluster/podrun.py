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


def main(pod_dir: Path) -> None:
    plan = json.loads((pod_dir / "plan.json").read_text())
    status = {"phase": "Pending", "containers": {}}
    current: dict = {"process": None}
    stopping = threading.Event()

    def write() -> None:
        (pod_dir / "status.json.new").write_text(json.dumps(status))
        os.replace(pod_dir / "status.json.new", pod_dir / "status.json")

    def kill_late(process: subprocess.Popen) -> None:
        try:
            process.wait(timeout=plan["grace_s"])
        except subprocess.TimeoutExpired:
            process.kill()

    def on_term(_signum, _frame) -> None:
        stopping.set()
        process = current["process"]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
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
