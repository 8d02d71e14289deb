#!/usr/bin/env bash
# Main container, PID 1: run one simulation script and keep the bucket up to date.
#
#   1. pip-install proteinbenchmark at PROTBENCH_PROTEINBENCHMARK_REF (skipped when empty)
#   2. start $PROTBENCH_REPO_DIR/$PROTBENCH_SCRIPT_PATH -o $PROTBENCH_RESULTS_DIR as a child
#   3. every PROTBENCH_SYNC_MINUTES, upload what changed (copy-out.sh sync). A
#      lost node loses what was simulated since the newest checkpoint in the
#      bucket, which was up to PROTBENCH_CHECKPOINT_MINUTES old when the last
#      sync sent it: at most PROTBENCH_SYNC_MINUTES + PROTBENCH_CHECKPOINT_MINUTES
#      (default 30 + 15 = 45 minutes), plus the time uploads take
#   4. on SIGTERM or SIGINT, pass SIGTERM to the child: it finishes its frame,
#      writes a checkpoint and exits
#   5. when the child has exited, upload what changed (copy-out.sh final, which
#      retries in place), then exit with the child's status: the Job's
#      podFailurePolicy decides from it whether a new pod resumes the window
#
# Throughout, the pod's run record (protbench_nrp/runrecord.py) is written at
# the start, brought up to date before every sync and completed before the
# final upload, which carries it to the bucket; it never stops the run.
#
# Kubernetes delivers SIGTERM to PID 1 only; a `sh -c` wrapper would swallow
# it and the window would be SIGKILLed at the end of the grace period without
# a checkpoint. This script is exec'ed by the container command, so it is PID 1.
# A PID 1 ignores every signal it has no handler for, so the traps are the
# first thing main does: a stop during start-up then still ends in the upload.
#
# Environment (besides what copy-out.sh and the script read)
#   PROTBENCH_SCRIPT_PATH            script to run, relative to the repository
#   PROTBENCH_REPO_DIR               repository checkout (default /opt/repo)
#   PROTBENCH_RESULTS_DIR            results volume (default /results)
#   PROTBENCH_PROTEINBENCHMARK_REF   branch, tag or commit of proteinbenchmark (a
#                                    launch always gives the full commit it
#                                    resolved), or a pip requirement of its own
#                                    (URL, git+..., /path, ./path, *.whl); empty:
#                                    the image's
#   PROTBENCH_PROTEINBENCHMARK_REPO  the repository that commit is of (default
#                                    proteinbenchmark's on GitHub)
#   PROTBENCH_SYNC_MINUTES           minutes between uploads (default 30,
#                                    fractions allowed, 0 = only the final upload)
#
# Exit status (lib.sh, protbench_nrp/exits.py): the script's; 2 for bad
# environment; 1 when pip or micromamba fails (a pod must not run with another
# proteinbenchmark than the one its manifest records). When the script
# succeeded but its final upload did not (after copy-out.sh's in-place
# retries), the upload's status: 75, so the Job starts a new pod, whose
# copy-in restores what the bucket holds and whose script re-runs only what
# is missing there (or, finding the window finished, exits 0 at once); 67 when
# the bucket or the credentials were rejected, which fails the Job. With
# restartPolicy Never the outputs on this volume go with the pod either way.
set -uo pipefail

readonly PROTEINBENCHMARK_GIT=https://github.com/openforcefield/proteinbenchmark.git

log() { printf 'run-job: %s\n' "$*"; }
die() {
    local status=$1
    shift
    printf 'run-job: ERROR: %s\n' "$*" >&2
    exit "$status"
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -r $here/lib.sh ]] || die 2 "$here/lib.sh is missing; run this script from the repository checkout (umbrella-scripts/pod/)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
results=${PROTBENCH_RESULTS_DIR:-/results}
repo=${PROTBENCH_REPO_DIR:-/opt/repo}
script_path=${PROTBENCH_SCRIPT_PATH:-}
sync_minutes=${PROTBENCH_SYNC_MINUTES:-30}
state_dir=$results/.protbench-pod
# This run's PID:START (lib.sh process_run_id), for pre-stop.sh.
pid_file=$state_dir/run-job.pid
# Written after the final upload, starting with the run id; pre-stop.sh waits
# for it and ignores one left on the volume by an earlier run.
done_marker=$state_dir/final-upload.done
# Present while pre-stop.sh waits; PID 1 lets it return before exiting.
prestop_marker=$state_dir/prestop.waiting

child=""
stopping=""
sync_pid=""
run_id=""
monitor_pid=""

check_environment() {
    [[ -n $script_path ]] || die "$EXIT_BAD_INPUT" "PROTBENCH_SCRIPT_PATH is empty; the launcher sets it (SCRIPT_PATH in run-umbrella-windows.py)"
    [[ -f $repo/$script_path ]] || die "$EXIT_BAD_INPUT" "script $repo/$script_path does not exist; check SCRIPT_PATH and that PROTBENCH_SCRIPT_COMMIT contains it"
    [[ -x $repo/$script_path ]] || die "$EXIT_BAD_INPUT" "script $repo/$script_path is not executable; run 'git update-index --chmod=+x $script_path', commit and push"
    [[ $sync_minutes =~ ^([0-9]+([.][0-9]*)?|[.][0-9]+)$ ]] ||
        die "$EXIT_BAD_INPUT" "PROTBENCH_SYNC_MINUTES '$sync_minutes' is not a number of minutes (e.g. 30 or 0.5; 0 = only the final upload)"
    mkdir -p "$state_dir" || die "$EXIT_BAD_INPUT" "cannot create $state_dir; the results volume must be writable by uid $(id -u)"
}

# shellcheck disable=SC2329  # called by the traps set in main
# SIGTERM/SIGINT: forward once as SIGTERM. SIGINT is translated because
# background children of a non-interactive shell start with SIGINT ignored.
on_signal() {
    if [[ -n $stopping ]]; then
        log "SIG$1 again: already stopping"
        return
    fi
    stopping=$1
    if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then
        log "SIG$1 received: asking pid $child to checkpoint and stop"
        kill -TERM "$child" 2>/dev/null
    else
        log "SIG$1 received"
    fi
}

# The shell's status for death by the signal received (143 TERM, 130 INT).
signal_status() {
    if [[ $stopping == INT ]]; then echo 130; else echo 143; fi
}

# Run a command as a child that signals reach, and return its exit status.
run_child() {
    "$@" &
    child=$!
    # A signal that came before $! was known could not be passed on.
    if [[ -n $stopping ]]; then
        log "passing the earlier SIG$stopping on to pid $child"
        kill -TERM "$child" 2>/dev/null
    fi
    # Poll with a sleep in the foreground rather than block in `wait`: a
    # trapped signal interrupts the wait builtin, and bash (5.x) can then lose
    # the status of a child that exits at that moment (wait returns 143 or 255
    # for good). A foreground command defers the trap instead (by at most the
    # 0.5 s of the sleep), and `wait` for a child already gone does not block.
    while kill -0 "$child" 2>/dev/null; do
        sleep 0.5
    done
    local status
    wait "$child"
    status=$?
    child=""
    return "$status"
}

install_proteinbenchmark() {
    local ref=${PROTBENCH_PROTEINBENCHMARK_REF:-} requirement
    if [[ -z $ref ]]; then
        log "PROTBENCH_PROTEINBENCHMARK_REF is empty: using the image's proteinbenchmark"
        return 0
    fi
    # A branch, tag or commit (branches may contain '/'), unless it is clearly
    # a pip requirement of its own: a URL, a VCS URL, a local path or a wheel.
    case "$ref" in
        *://* | git+* | /* | ./* | ../* | *.whl) requirement=$ref ;;
        *) requirement="git+${PROTBENCH_PROTEINBENCHMARK_REPO:-$PROTEINBENCHMARK_GIT}@$ref" ;;
    esac
    log "installing proteinbenchmark from $requirement"
    # --no-deps: the image carries proteinbenchmark's environment; resolving it
    # again at every pod start would be slow and could change it.
    run_child python -m pip install --quiet --no-deps --disable-pip-version-check "$requirement"
}

# Record in the log what the pod really runs: a moving ref like `main`
# resolves to a commit (pip freeze shows "proteinbenchmark @ git+...@SHA").
log_proteinbenchmark() {
    local installed
    installed=$(python -m pip freeze --disable-pip-version-check 2>/dev/null | grep -i '^proteinbenchmark[ =@]')
    if [[ -n $installed ]]; then
        log "proteinbenchmark installed: $installed"
    else
        log "proteinbenchmark is not installed (pip freeze lists none)"
    fi
}

# -- the run record ------------------------------------------------------------
run_record_helper=$repo/umbrella-scripts/protbench_nrp/runrecord.py

run_record() {
    [[ -f $run_record_helper ]] || return 0
    python "$run_record_helper" "$@" || log "run record: '$1' failed; the run goes on"
}

start_run_record() {
    if [[ ! -f $run_record_helper ]]; then
        log "no $run_record_helper in this checkout: no run record kept"
        return 0
    fi
    run_record start
    python "$run_record_helper" monitor &
    monitor_pid=$!
}

# The monitor writes its findings at every poll; stop it before they are read.
stop_run_record_monitor() {
    [[ -n $monitor_pid ]] || return 0
    kill -TERM "$monitor_pid" 2>/dev/null
    local tries=0
    while kill -0 "$monitor_pid" 2>/dev/null && ((tries++ < 50)); do
        sleep 0.1
    done
    monitor_pid=""
}

sync_loop() {
    local seconds sleeper
    seconds=$(awk -v m="$sync_minutes" 'BEGIN { printf "%.3f", m * 60 }')
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    while :; do
        sleep "$seconds" &
        sleeper=$!
        wait "$sleeper"
        run_record update
        bash "$here/copy-out.sh" sync || log "periodic upload failed; the next one retries"
    done
}

start_sync() {
    if awk -v m="$sync_minutes" 'BEGIN { exit !(m > 0) }'; then
        sync_loop &
        sync_pid=$!
        log "uploading changes every $sync_minutes min"
    else
        log "PROTBENCH_SYNC_MINUTES=0: uploading only when the script exits"
    fi
}

# A sync in flight finishes; the final upload waits for its lock.
stop_sync() {
    [[ -n $sync_pid ]] && kill -TERM "$sync_pid" 2>/dev/null
    sync_pid=""
}

finish() {
    local status=$1 upload_status
    stop_sync
    stop_run_record_monitor
    run_record finish "$status"
    bash "$here/copy-out.sh" final
    upload_status=$?
    printf '%s %s %s\n' "$run_id" "$status" "$upload_status" >"$done_marker"
    # Let a waiting preStop hook see the marker and return before PID 1 exits.
    local tries=0
    while [[ -e $prestop_marker ]] && ((tries++ < 20)); do
        sleep 0.25
    done
    if ((upload_status != 0)); then
        log "final upload failed (copy-out status $upload_status); the bucket keeps its last consistent upload"
        if ((status == 0)); then
            if ((upload_status == EXIT_BUCKET_UNUSABLE)); then
                log "exiting $EXIT_BUCKET_UNUSABLE: fix the bucket or the rclone secret, then --relaunch; the window resumes from the bucket"
                exit "$EXIT_BUCKET_UNUSABLE"
            fi
            log "exiting $EXIT_TRANSIENT so the Job starts a new pod, which resumes from the bucket and re-runs only what is missing there"
            exit "$EXIT_TRANSIENT"
        fi
    fi
    log "exiting with the script's status $status"
    exit "$status"
}

activate_conda() {
    # The template's command replaces the micromamba image's entrypoint, which
    # would have activated the environment; activate it here so that the
    # packages' activation scripts run too. Absent outside the image.
    command -v micromamba >/dev/null 2>&1 && [[ -n ${MAMBA_ROOT_PREFIX:-} ]] || return 0
    local hook
    hook=$(micromamba shell hook --shell bash) || die "$EXIT_UNEXPECTED" "micromamba could not print its shell hook"
    # Activation scripts are not written for nounset.
    set +u
    eval "$hook"
    micromamba activate base || die "$EXIT_UNEXPECTED" "micromamba could not activate the base environment"
    set -u
}

# A stop during start-up: upload what is there and exit with the signal's status.
finish_if_stopping() {
    [[ -z $stopping ]] && return 0
    log "stopped before the script started"
    finish "$(signal_status)"
}

main() {
    # First, before anything that takes time: catch stops (see the header),
    # and drop the previous run's marker, which must not tell pre-stop.sh
    # that this run's final upload is done.
    trap 'on_signal TERM' TERM
    trap 'on_signal INT' INT
    rm -f -- "$done_marker"
    check_environment
    run_id=$(process_run_id "$$") || die "$EXIT_UNEXPECTED" "cannot read /proc/$$/stat to record this run for pre-stop.sh"
    echo "$run_id" >"$pid_file" || die "$EXIT_UNEXPECTED" "cannot write $pid_file"

    activate_conda
    finish_if_stopping
    if ! install_proteinbenchmark; then
        finish_if_stopping
        log "ERROR: pip could not install proteinbenchmark at '$PROTBENCH_PROTEINBENCHMARK_REF'; check PROTEINBENCHMARK_REF in run-umbrella-windows.py"
        finish "$EXIT_UNEXPECTED"
    fi
    log_proteinbenchmark
    finish_if_stopping

    start_run_record
    start_sync
    log "starting $repo/$script_path -o $results"
    run_child "$repo/$script_path" -o "$results"
    local status=$?
    log "script exited with status $status"
    finish "$status"
}

# Sourced (by the tests, to call run_child alone), it only defines.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main
fi
