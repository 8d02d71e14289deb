#!/bin/sh
# Init container `init-rclone`: copy a Job's inputs from the S3 bucket into the
# results volume before the main container starts.
#
# POSIX sh on purpose: it runs in the rclone/rclone image, whose shell is busybox.
#
# Environment
#   PROTBENCH_RCLONE_REMOTE   rclone remote of the bucket (a section of the rclone config)
#   PROTBENCH_BUCKET          bucket name; everything lives under {remote}:{bucket}/results/
#   PROTBENCH_REQUIRED_FILES  newline-separated paths below results/; directories end in '/'
#   PROTBENCH_RESULTS_DIR     results volume (default /results)
#   RCLONE_CONFIG             rclone config file (default /secrets/rclone.conf, the mounted secret)
#
# A Job's own outputs (the entries also in PROTBENCH_OUTPUT_FILES) are among its
# required files so that a new pod resumes; they do not exist before the first
# pod ran, so their absence is logged and skipped. Every other entry is an input
# an earlier stage writes: its absence fails the pod (66) naming each missing
# one. Anything else that goes wrong fails the container with a message naming
# the cause, and an exit status the Job's podFailurePolicy acts on (lib.sh,
# protbench_nrp/exits.py): no retry helps a bad config (2), missing inputs (66),
# a missing bucket or rejected credentials (67), so those fail the Job at once;
# an unreachable endpoint or a failed copy is retried here, in place, with
# backoff (PROTBENCH_TRANSFER_TRIES, PROTBENCH_TRANSFER_RETRY_SECONDS), and only
# then exits 75 for the Job to try again with a new pod.
#
# Exit status: 0 done; 2 bad environment or config; 66 inputs missing from the
# bucket; 67 bucket missing or credentials rejected; 75 endpoint unreachable or
# a copy failed, after the in-place retries.
#
# Files are written as the pod's user (the Job template's securityContext runs
# every container as the main image's user), so the main container can change
# them without any chmod.
set -u

log() { printf 'copy-in: %s\n' "$*"; }
die() {
    status=$1
    shift
    printf 'copy-in: ERROR: %s\n' "$*" >&2
    exit "$status"
}

here=$(dirname "$0")
[ -r "$here/lib.sh" ] || die 2 "$here/lib.sh is missing; run this script from the repository checkout (umbrella-scripts/pod/)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

results=${PROTBENCH_RESULTS_DIR:-/results}
RCLONE_CONFIG=${RCLONE_CONFIG:-/secrets/rclone.conf}
export RCLONE_CONFIG
remote=${PROTBENCH_RCLONE_REMOTE:-}
bucket=${PROTBENCH_BUCKET:-}
required=${PROTBENCH_REQUIRED_FILES:-}
outputs=${PROTBENCH_OUTPUT_FILES:-}
missing_inputs=""
# The pod's bookkeeping (see copy-out.sh); never uploaded.
state_dir=$results/.protbench-pod
errors=$(mktemp "${TMPDIR:-/tmp}/copy-in.XXXXXX") || die "$EXIT_BAD_INPUT" "cannot create a temporary file in ${TMPDIR:-/tmp}"
trap 'rm -f "$errors"' EXIT

check_environment() {
    [ -n "$remote" ] || die "$EXIT_BAD_INPUT" "PROTBENCH_RCLONE_REMOTE is empty; the launcher sets it from RCLONE_REMOTE in run-umbrella-windows.py"
    [ -n "$bucket" ] || die "$EXIT_BAD_INPUT" "PROTBENCH_BUCKET is empty; the launcher sets it from BUCKET in run-umbrella-windows.py"
    [ -r "$RCLONE_CONFIG" ] || die "$EXIT_BAD_INPUT" "rclone config $RCLONE_CONFIG is missing or unreadable; mount the rclone secret there (volume rclone-config in k8s_template.yaml) or set RCLONE_CONFIG"
    command -v rclone >/dev/null 2>&1 || die "$EXIT_BAD_INPUT" "rclone is not on PATH; this script runs in the rclone/rclone image"
    mkdir -p "$results" || die "$EXIT_BAD_INPUT" "cannot create the results directory $results (PROTBENCH_RESULTS_DIR)"
    [ -w "$results" ] || die "$EXIT_BAD_INPUT" "results directory $results is not writable by uid $(id -u); the pod's securityContext (fsGroup) must give its user the volume"
    case "$transfer_tries" in '' | *[!0-9]* | 0) die "$EXIT_BAD_INPUT" "PROTBENCH_TRANSFER_TRIES '$transfer_tries' must be a whole number of tries, at least 1" ;; esac
    case "$transfer_delay_s" in '' | *[!0-9.]* | *.*.*) die "$EXIT_BAD_INPUT" "PROTBENCH_TRANSFER_RETRY_SECONDS '$transfer_delay_s' must be a number of seconds" ;; esac
}

# Wait before the next try of a transfer: the delay doubles after each.
delay=""
back_off() {
    [ -n "$delay" ] || delay=$transfer_delay_s
    log "retrying in ${delay} s ($1)"
    sleep "$delay"
    delay=$(awk -v d="$delay" 'BEGIN { print d * 2 }')
}

# Print rclone's error lines; they name the remote, bucket and endpoint but
# never the keys (rclone does not log credentials).
show_errors() {
    grep -E 'ERROR|CRITICAL|Failed' "$errors" | tail -n 3 | sed 's/^/copy-in:   rclone: /' >&2
}

# One cheap listing of the bucket's top level tells a missing bucket, rejected
# credentials and an unreachable endpoint apart before any copy starts. The
# first two are final; anything else is retried in place. RCLONE_LOW_LEVEL_RETRIES,
# when set, wins over the 3 here as it would over rclone's own default.
check_access() {
    try=1
    while :; do
        rclone lsf --max-depth 1 --retries 1 --low-level-retries "${RCLONE_LOW_LEVEL_RETRIES:-3}" \
            --contimeout 15s --timeout 60s \
            "$remote:$bucket" >/dev/null 2>"$errors"
        status=$?
        [ "$status" -eq 0 ] && return 0
        if grep -q "didn't find section in config file" "$errors"; then
            show_errors
            die "$EXIT_BAD_INPUT" "remote '$remote' is not defined in $RCLONE_CONFIG; set RCLONE_REMOTE in run-umbrella-windows.py to a section of the rclone config secret"
        fi
        if bucket_unusable "$errors" && ! grep -q NoSuchBucket "$errors"; then
            show_errors
            die "$EXIT_BUCKET_UNUSABLE" "the S3 server rejected the credentials of remote '$remote' (wrong access key or secret key); refresh the rclone config secret (README: Accessing results), then --relaunch"
        fi
        if [ "$status" -eq 3 ] || grep -q NoSuchBucket "$errors"; then
            show_errors
            die "$EXIT_BUCKET_UNUSABLE" "bucket '$bucket' does not exist on remote '$remote'; check BUCKET in run-umbrella-windows.py or create the bucket, then --relaunch"
        fi
        [ "$try" -ge "$transfer_tries" ] && break
        back_off "listing bucket '$bucket' failed with rclone exit $status, try $try of $transfer_tries"
        try=$((try + 1))
    done
    show_errors
    if [ "$status" -eq 5 ] || grep -qE 'dial tcp|connection refused|no such host|timeout|i/o timeout' "$errors"; then
        die "$EXIT_TRANSIENT" "cannot reach the S3 endpoint of remote '$remote' after $transfer_tries tries; check the endpoint in $RCLONE_CONFIG and the pod's network (the Job tries again with a new pod)"
    fi
    die "$EXIT_TRANSIENT" "cannot list bucket '$bucket' on remote '$remote' after $transfer_tries tries (rclone exit $status); see the rclone error above (the Job tries again with a new pod)"
}

# Succeeds when ENTRY is one of the Job's own outputs (absent before its first pod).
is_output() {
    printf '%s\n' "$outputs" | grep -qxF -- "$1"
}

# A path below results/ must stay below it.
check_entry() {
    inside_results "$1" ||
        die "$EXIT_BAD_INPUT" "PROTBENCH_REQUIRED_FILES entry '$1' is not a relative path inside results/; fix the launcher's required_files"
}

# Copy one entry; absent ones are tolerated. rclone reports an absent source
# as "not found" (exit 3 or 4) in some versions and as an empty copy in others,
# so absence is judged by what arrived.
copy_entry() {
    entry=$1
    try=1
    while :; do
        case "$entry" in
            */) rclone copy "$remote:$bucket/results/$entry" "$results/$entry" 2>"$errors" ;;
            *) rclone copyto "$remote:$bucket/results/$entry" "$results/$entry" 2>"$errors" ;;
        esac
        status=$?
        { [ "$status" -eq 0 ] || [ "$status" -eq 3 ] || [ "$status" -eq 4 ]; } && break
        if bucket_unusable "$errors"; then
            show_errors
            die "$EXIT_BUCKET_UNUSABLE" "the S3 server refused copying results/$entry from '$remote:$bucket' (rclone exit $status): bucket or credentials; fix them, then --relaunch"
        fi
        if [ "$try" -ge "$transfer_tries" ]; then
            show_errors
            die "$EXIT_TRANSIENT" "copying results/$entry from '$remote:$bucket' failed $transfer_tries times (rclone exit $status); the Job tries again with a new pod"
        fi
        back_off "copying results/$entry failed with rclone exit $status, try $try of $transfer_tries"
        try=$((try + 1))
    done
    present=""
    case "$entry" in
        */) if [ -d "$results/$entry" ]; then
                present=1
                log "copied results/$entry ($(find "$results/$entry" -type f | wc -l | tr -d ' ') files)"
            fi ;;
        *) if [ -f "$results/$entry" ]; then
               present=1
               log "copied results/$entry"
           fi ;;
    esac
    [ -n "$present" ] && return 0
    if is_output "$entry"; then
        log "results/$entry is not in the bucket yet; skipped (this Job's own outputs: its first pod writes them)"
    else
        log "results/$entry is not in the bucket: an input an earlier stage writes"
        missing_inputs="$missing_inputs results/$entry"
    fi
}

# Record size and modification time of everything copied, in the format
# copy-out.sh compares against: those files are in the bucket already, so the
# first upload of this pod sends only what the script changed. A failure here
# costs only a fuller first comparison, never a missed upload.
record_baseline() {
    mkdir -p "$state_dir" || return 0
    listing=$state_dir/uploaded.tsv.new
    : >"$listing"
    printf '%s\n' "$required" | while IFS= read -r entry; do
        [ -n "$entry" ] || continue
        list_entry "$entry" >>"$listing" || exit 1
    done || { log "could not record what was copied; the first upload compares everything with the bucket"; rm -f "$listing"; return 0; }
    mv "$listing" "$state_dir/uploaded.tsv"
}

main() {
    check_environment
    log "checking access to bucket '$bucket' on remote '$remote'"
    check_access
    count=0
    # A here-document, not a pipe: die() must end this shell, not a subshell.
    while IFS= read -r entry; do
        [ -n "$entry" ] || continue
        check_entry "$entry"
        copy_entry "$entry"
        count=$((count + 1))
    done <<EOF
$required
EOF
    [ "$count" -gt 0 ] || log "PROTBENCH_REQUIRED_FILES is empty; nothing to copy"
    if [ -n "$missing_inputs" ]; then
        die "$EXIT_INPUTS_MISSING" "inputs missing from '$remote:$bucket':$missing_inputs; run the stage that writes them (setup, steered), then --relaunch this Job"
    fi
    record_baseline
    log "done: $count entries of results/ from '$remote:$bucket' into $results"
}

main
