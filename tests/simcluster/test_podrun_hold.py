"""The stand-in kubelet's hold: a fault's trigger freezes the pod until its SIGTERM, which it then sees.

``test_follow_faults`` relies on it so that a preemption lands where its
trigger fired, however late a loaded controller comes; this shows the freeze
and the thaw on their own, with a container that counts as fast as it can.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.simcluster.cluster import PODRUN

#: Counts, makes the trigger at 5, and on SIGTERM writes where it stopped.
COUNTER = """
r="$PROTBENCH_RESULTS_DIR"; i=0
trap 'echo "$i" > "$r/term"; exit 143' TERM
while :; do
  i=$((i + 1)); echo "$i" > "$r/count.new"; mv "$r/count.new" "$r/count"  # never read half-written
  [ "$i" -eq 5 ] && : > "$r/trigger"; sleep 0.01
done
"""


def read_count(path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def test_the_trigger_freezes_the_main_container_and_sigterm_thaws_it_to_stop(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PROTBENCH_RESULTS_DIR": str(results)}
    plan = {"containers": [{"name": "main", "init": False, "argv": ["/bin/sh", "-c", COUNTER], "env": env}],
            "grace_s": 10, "exit_faults": {}, "hold_when": [{"file": "trigger", "text": ""}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    pod = subprocess.Popen([sys.executable, str(PODRUN), str(tmp_path)], start_new_session=True)
    try:
        # frozen: the count stops changing (within 20 s however loaded the machine), and stays put
        deadline, last, since = time.monotonic() + 20, None, time.monotonic()
        while time.monotonic() - since < 0.5:
            assert time.monotonic() < deadline, f"the container was never frozen (count {last})"
            count = read_count(results / "count")
            if count != last:
                last, since = count, time.monotonic()
            time.sleep(0.02)
        assert last is not None and last >= 5 and (results / "trigger").exists()
        time.sleep(0.5)
        assert read_count(results / "count") == last
        # SIGTERM reaches the frozen container, which runs again just to stop where it was
        os.kill(pod.pid, signal.SIGTERM)
        assert pod.wait(timeout=20) == 0
        assert read_count(results / "term") == last
        status = json.loads((tmp_path / "status.json").read_text())
        assert status["phase"] == "Failed" and status["containers"]["main"]["exitCode"] == 143
    finally:
        if pod.poll() is None:
            os.killpg(pod.pid, signal.SIGKILL)
            pod.wait()
