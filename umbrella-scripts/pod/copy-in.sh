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
# An entry absent from the bucket is logged and skipped: a Job's own outputs are
# among its required files so that a restarted pod resumes, and they do not
# exist before the first pod ran. Anything else that goes wrong (no config, a
# remote that is not in it, rejected credentials, an unreachable endpoint, a
# missing bucket, a failed copy) fails the container with a message naming the
# cause, so Kubernetes shows the pod stuck in Init instead of a window that
# starts from nothing.
#
# Exit status: 0 done; 2 bad environment or config; 3 bucket missing;
# 4 credentials rejected; 5 endpoint unreachable; 1 a copy failed.
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
# The pod's bookkeeping (see copy-out.sh); never uploaded.
state_dir=$results/.protbench-pod
errors=$(mktemp "${TMPDIR:-/tmp}/copy-in.XXXXXX") || die 2 "cannot create a temporary file in ${TMPDIR:-/tmp}"
trap 'rm -f "$errors"' EXIT

check_environment() {
    [ -n "$remote" ] || die 2 "PROTBENCH_RCLONE_REMOTE is empty; the launcher sets it from RCLONE_REMOTE in run-umbrella-windows.py"
    [ -n "$bucket" ] || die 2 "PROTBENCH_BUCKET is empty; the launcher sets it from BUCKET in run-umbrella-windows.py"
    [ -r "$RCLONE_CONFIG" ] || die 2 "rclone config $RCLONE_CONFIG is missing or unreadable; mount the rclone secret there (volume rclone-config in k8s_template.yaml) or set RCLONE_CONFIG"
    command -v rclone >/dev/null 2>&1 || die 2 "rclone is not on PATH; this script runs in the rclone/rclone image"
    mkdir -p "$results" || die 2 "cannot create the results directory $results (PROTBENCH_RESULTS_DIR)"
    [ -w "$results" ] || die 2 "results directory $results is not writable by uid $(id -u); the pod's securityContext (fsGroup) must give its user the volume"
}

# Print rclone's error lines; they name the remote, bucket and endpoint but
# never the keys (rclone does not log credentials).
show_errors() {
    grep -E 'ERROR|CRITICAL|Failed' "$errors" | tail -n 3 | sed 's/^/copy-in:   rclone: /' >&2
}

# One cheap listing of the bucket's top level tells a missing bucket, rejected
# credentials and an unreachable endpoint apart before any copy starts. Few
# retries: the kubelet restarts a failed init container anyway.
check_access() {
    rclone lsf --max-depth 1 --retries 1 --low-level-retries 3 --contimeout 15s --timeout 60s \
        "$remote:$bucket" >/dev/null 2>"$errors"
    status=$?
    [ "$status" -eq 0 ] && return 0
    show_errors
    if grep -q "didn't find section in config file" "$errors"; then
        die 2 "remote '$remote' is not defined in $RCLONE_CONFIG; set RCLONE_REMOTE in run-umbrella-windows.py to a section of the rclone config secret"
    fi
    if grep -qE 'SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied|StatusCode: 40[13]' "$errors"; then
        die 4 "the S3 server rejected the credentials of remote '$remote' (wrong access key or secret key); refresh the rclone config secret (README: Accessing results)"
    fi
    if [ "$status" -eq 3 ]; then
        die 3 "bucket '$bucket' does not exist on remote '$remote'; check BUCKET in run-umbrella-windows.py or create the bucket"
    fi
    if [ "$status" -eq 5 ] || grep -qE 'dial tcp|connection refused|no such host|timeout|i/o timeout' "$errors"; then
        die 5 "cannot reach the S3 endpoint of remote '$remote'; check the endpoint in $RCLONE_CONFIG and the pod's network"
    fi
    die 2 "cannot list bucket '$bucket' on remote '$remote' (rclone exit $status); see the rclone error above"
}

# A path below results/ must stay below it.
check_entry() {
    inside_results "$1" ||
        die 2 "PROTBENCH_REQUIRED_FILES entry '$1' is not a relative path inside results/; fix the launcher's required_files"
}

# Copy one entry; absent ones are tolerated. rclone reports an absent source
# as "not found" (exit 3 or 4) in some versions and as an empty copy in others,
# so absence is judged by what arrived.
copy_entry() {
    entry=$1
    case "$entry" in
        */) rclone copy "$remote:$bucket/results/$entry" "$results/$entry" 2>"$errors" ;;
        *) rclone copyto "$remote:$bucket/results/$entry" "$results/$entry" 2>"$errors" ;;
    esac
    status=$?
    if [ "$status" -ne 0 ] && [ "$status" -ne 3 ] && [ "$status" -ne 4 ]; then
        show_errors
        die 1 "copying results/$entry from '$remote:$bucket' failed (rclone exit $status)"
    fi
    case "$entry" in
        */) if [ -d "$results/$entry" ]; then
                log "copied results/$entry ($(find "$results/$entry" -type f | wc -l | tr -d ' ') files)"
            else
                log "results/$entry is not in the bucket yet; skipped (an earlier stage or pod writes it)"
            fi ;;
        *) if [ -f "$results/$entry" ]; then
               log "copied results/$entry"
           else
               log "results/$entry is not in the bucket yet; skipped (an earlier stage or pod writes it)"
           fi ;;
    esac
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
    record_baseline
    log "done: $count entries of results/ from '$remote:$bucket' into $results"
}

main
