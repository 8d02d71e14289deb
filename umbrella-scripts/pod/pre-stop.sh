#!/usr/bin/env bash
# preStop hook of the main container.
#
# Kubernetes runs this hook first and sends SIGTERM to PID 1 only after it
# returns, all within terminationGracePeriodSeconds. Uploading from here would
# race the window, which is still running and writing: the bucket could get a
# state older than the checkpoint the window is about to write, and then the
# final upload of run-job.sh would overlap this one. So the hook only starts
# the one shutdown path early: it sends SIGTERM to run-job.sh (PID 1), which
# has the script checkpoint, uploads once (copy-out.sh final) and writes a
# marker; the hook returns when that marker appears or run-job.sh is gone.
# Should run-job.sh not be running, the hook uploads by itself, under the same
# lock as every other upload.
#
# The volume outlives the container: a pid file and a marker may be left by
# the run before (whose PID 1 had the same pid as this one's). run-job.sh
# records PID:START (lib.sh process_run_id), and the hook trusts a pid file
# only while a live process has that pid and start time, and a marker only
# when it names that run.
#
# Environment: PROTBENCH_RESULTS_DIR (default /results), and what copy-out.sh reads.
#
# Exit status (protbench_nrp/exits.py): 0; 2 lib.sh missing; when it uploads by
# itself, copy-out.sh's (1, 67, 75). The kubelet only logs a hook's status.
set -uo pipefail

log() { printf 'pre-stop: %s\n' "$*"; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh" || { log "ERROR: cannot read $here/lib.sh; run this script from the repository checkout" >&2; exit 2; }
results=${PROTBENCH_RESULTS_DIR:-/results}
state_dir=$results/.protbench-pod
done_marker=$state_dir/final-upload.done
waiting=$state_dir/prestop.waiting

# Succeeds when the marker is this run's (see the header).
upload_done() {
    local marker_run=""
    [[ -r $done_marker ]] && read -r marker_run _ <"$done_marker"
    [[ $marker_run == "$run_id" ]]
}

run_id=$(cat "$state_dir/run-job.pid" 2>/dev/null) || run_id=""
pid=${run_id%%:*}
if [[ ! $run_id =~ ^[0-9]+:[0-9]+$ ]] || [[ $(process_run_id "$pid") != "$run_id" ]]; then
    log "run-job.sh is not running; uploading directly"
    exec bash "$here/copy-out.sh" prestop
fi
if upload_done; then
    log "the final upload is already done"
    exit 0
fi

touch "$waiting"
trap 'rm -f "$waiting"' EXIT
log "asking run-job.sh (pid $pid) to checkpoint, upload and stop"
kill -TERM "$pid" 2>/dev/null
# No timeout of our own: the kubelet ends everything at the grace period.
while kill -0 "$pid" 2>/dev/null && ! upload_done; do
    sleep 0.5
done
if upload_done; then
    read -r _ script_status upload_status <"$done_marker"
    log "final upload finished (script status $script_status, upload status $upload_status)"
else
    log "run-job.sh exited"
fi
