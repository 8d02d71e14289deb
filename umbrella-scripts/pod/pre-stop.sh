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
# Environment: PROTBENCH_RESULTS_DIR (default /results), and what copy-out.sh reads.
set -uo pipefail

log() { printf 'pre-stop: %s\n' "$*"; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
results=${PROTBENCH_RESULTS_DIR:-/results}
state_dir=$results/.protbench-pod
done_marker=$state_dir/final-upload.done
waiting=$state_dir/prestop.waiting

pid=$(cat "$state_dir/run-job.pid" 2>/dev/null) || pid=""
if [[ ! $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
    log "run-job.sh is not running; uploading directly"
    exec bash "$here/copy-out.sh" prestop
fi
if [[ -e $done_marker ]]; then
    log "the final upload is already done"
    exit 0
fi

touch "$waiting"
trap 'rm -f "$waiting"' EXIT
log "asking run-job.sh (pid $pid) to checkpoint, upload and stop"
kill -TERM "$pid" 2>/dev/null
# No timeout of our own: the kubelet ends everything at the grace period.
while kill -0 "$pid" 2>/dev/null && [[ ! -e $done_marker ]]; do
    sleep 0.5
done
if [[ -e $done_marker ]]; then
    log "final upload finished (script and upload status: $(cat "$done_marker"))"
else
    log "run-job.sh exited"
fi
