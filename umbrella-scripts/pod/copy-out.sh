#!/usr/bin/env bash
# Upload this pod's own outputs to the S3 bucket: the one upload path of a pod,
# used by run-job.sh for the periodic sync and the final upload (and by
# pre-stop.sh when run-job.sh is gone).
#
# Usage: copy-out.sh sync|final|prestop
#   sync     skip at once if another upload holds the lock (the next sync
#            follows); one try: the next sync retries
#   final    wait for any upload in progress, then upload, retrying a failed
#            upload in place with backoff (PROTBENCH_TRANSFER_TRIES,
#            PROTBENCH_TRANSFER_RETRY_SECONDS, see lib.sh): the pod's volume
#            goes with the pod, so this is the outputs' last way to the bucket
#   prestop  same as final (only the label in the log differs)
#
# Environment
#   PROTBENCH_RCLONE_REMOTE, PROTBENCH_BUCKET  where: {remote}:{bucket}/results/
#   PROTBENCH_OUTPUT_FILES   newline-separated paths below results/ that this pod
#                            writes (directories end in '/'); nothing else is sent,
#                            in particular not the shared inputs the pod downloaded
#   PROTBENCH_RESULTS_DIR    results volume (default /results)
#   RCLONE_CONFIG            rclone config file (default /secrets/rclone.conf)
#
# What goes up, and in which order
#   Only files whose size or modification time differ from the last upload
#   (recorded in .protbench-pod/uploaded.tsv; copy-in.sh records what it
#   downloaded). A production trajectory is written as one DCD per checkpoint
#   interval, so a finished segment is sent once, never again.
#
#   A resumable bucket needs every checkpoint in it to claim no more frames than
#   the trajectory, state data and CV files in it hold (a restart cuts longer
#   reporters back, but shorter ones lose the checkpoint). Files change while
#   they are read, and an upload can die at any instant, so:
#     1. snapshot the changed states (*.chk, *.xml) into a staging directory,
#     2. then snapshot the changed reporters (everything else): they can only
#        have grown since step 1, so they hold every frame the states claim;
#     3. upload the reporter snapshots, and only when all arrived,
#     4. upload the state snapshots.
#   Before step 3 ends the bucket holds old states and newer reporters; after
#   it, states no newer than those reporters: resumable at every instant.
#   Snapshots are local copies (milliseconds), so a file that grows during a
#   slow upload never makes the upload fail or tear.
#
# Exit status (lib.sh, protbench_nrp/exits.py): 0 uploaded (or nothing to
# upload, or a sync skipped because another upload runs); 2 bad environment or
# usage; 67 bucket missing or credentials rejected (not retried); 75 an upload
# failed (final/prestop: after the in-place retries); 1 the snapshot failed.
# What did not arrive is sent by the next upload.
set -uo pipefail

readonly STATE_PATTERN='\.(chk|xml)$'
# Staged copies of files in the middle of an atomic rewrite are retried this often.
readonly SNAPSHOT_TRIES=5

log() { printf 'copy-out(%s): %s\n' "$reason" "$*"; }
die() {
    local status=$1
    shift
    printf 'copy-out(%s): ERROR: %s\n' "$reason" "$*" >&2
    exit "$status"
}

reason=${1:-}
case "$reason" in
    sync | final | prestop) ;;
    *) reason=usage; die 2 "usage: copy-out.sh sync|final|prestop (got '${1:-}')" ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -r $here/lib.sh ]] || die 2 "$here/lib.sh is missing; run this script from the repository checkout (umbrella-scripts/pod/)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

results=${PROTBENCH_RESULTS_DIR:-/results}
export RCLONE_CONFIG=${RCLONE_CONFIG:-/secrets/rclone.conf}
remote=${PROTBENCH_RCLONE_REMOTE:-}
bucket=${PROTBENCH_BUCKET:-}
outputs=${PROTBENCH_OUTPUT_FILES:-}
state_dir=$results/.protbench-pod
manifest=$state_dir/uploaded.tsv
staging=$state_dir/staging

check_environment() {
    [[ $transfer_tries =~ ^[1-9][0-9]*$ ]] || die "$EXIT_BAD_INPUT" "PROTBENCH_TRANSFER_TRIES '$transfer_tries' must be a whole number of tries, at least 1"
    [[ $transfer_delay_s =~ ^([0-9]+([.][0-9]*)?|[.][0-9]+)$ ]] || die "$EXIT_BAD_INPUT" "PROTBENCH_TRANSFER_RETRY_SECONDS '$transfer_delay_s' must be a number of seconds"
    [[ -n $remote ]] || die "$EXIT_BAD_INPUT" "PROTBENCH_RCLONE_REMOTE is empty; the launcher sets it from RCLONE_REMOTE in run-umbrella-windows.py"
    [[ -n $bucket ]] || die "$EXIT_BAD_INPUT" "PROTBENCH_BUCKET is empty; the launcher sets it from BUCKET in run-umbrella-windows.py"
    [[ -n ${outputs//[[:space:]]/} ]] || die "$EXIT_BAD_INPUT" "PROTBENCH_OUTPUT_FILES is empty; the launcher sets it from layout.output_files"
    [[ -r $RCLONE_CONFIG ]] || die "$EXIT_BAD_INPUT" "rclone config $RCLONE_CONFIG is missing or unreadable; mount the rclone secret there or set RCLONE_CONFIG"
    [[ -d $results ]] || die "$EXIT_BAD_INPUT" "results directory $results does not exist (PROTBENCH_RESULTS_DIR)"
    local tool
    for tool in rclone flock awk; do
        command -v "$tool" >/dev/null || die "$EXIT_BAD_INPUT" "$tool is not on PATH; the main image must provide it (Dockerfile)"
    done
    local entry
    while IFS= read -r entry; do
        [[ -z $entry ]] && continue
        inside_results "$entry" ||
            die "$EXIT_BAD_INPUT" "PROTBENCH_OUTPUT_FILES entry '$entry' is not a relative path inside results/; fix the launcher's output_files"
    done <<<"$outputs"
}

# path<TAB>size<TAB>mtime of every output file (paths relative to results/),
# listed as copy-in.sh lists what it downloaded (lib.sh).
list_outputs() {
    local entry
    while IFS= read -r entry; do
        [[ -z $entry ]] && continue
        list_entry "$entry"
    done <<<"$outputs"
}

# Lines of a listing that are not in the manifest, restricted to one group.
changed() {
    local group=$1 listing=$2
    touch "$manifest"
    awk -F "$tab" -v group="$group" -v pattern="$STATE_PATTERN" '
        FILENAME == ARGV[1] { uploaded[$0] = 1; next }
        ($0 in uploaded) { next }
        (group == "states") == ($1 ~ pattern) { print $1 }
    ' "$manifest" "$listing"
}

# Copy one file into the staging area, keeping its modification time. A state
# must be copied whole: retry while it changes under us (the engine replaces
# states atomically, so this only guards other writers). A reporter may be
# caught mid-frame; the engine reads only whole frames, and the next upload
# sends the rest.
snapshot() {
    local group=$1 path=$2 try before after
    local source=$results/$path target=$staging/$group/$path
    mkdir -p "${target%/*}" || return 1
    for ((try = 1; try <= SNAPSHOT_TRIES; try++)); do
        before=$(stat -c '%s %y %i' -- "$source" 2>/dev/null) || return 0 # deleted meanwhile
        cp --preserve=timestamps -- "$source" "$target" || return 1
        after=$(stat -c '%s %y %i' -- "$source" 2>/dev/null) || after=gone
        [[ $before == "$after" || $group == reporters ]] && return 0
        sleep 0.2
    done
    rm -f -- "$target"
    log "$path kept changing while copied; it goes up with the next upload"
}

stage_group() {
    local group=$1 path
    local listing=$state_dir/listing.$group
    list_outputs >"$listing" || return 1
    while IFS= read -r path; do
        snapshot "$group" "$path" || return 1
    done < <(changed "$group" "$listing")
}

# Send one staged group; on success record what arrived in the manifest.
upload_group() {
    local group=$1 sent rclone_log counts
    [[ -n $(find "$staging/$group" -type f -print -quit) ]] || return 0
    sent=$state_dir/sent.$group
    rclone_log=$state_dir/rclone.$group.log
    rclone lsf -R --files-only --format pst --separator "$tab" --time-format RFC3339Nano \
        "$staging/$group" >"$sent" || return 1
    # --no-traverse: a few files into a large bucket; --s3-no-check-bucket: a
    # mistyped bucket must fail, not be created. -v names each file copied.
    # No --update: the upload record already decides what goes up, and
    # --update would skip a file whose copy in the bucket looks newer, as
    # every file may after a restart on a node whose clock is behind the
    # previous pod's: the bucket would keep that pod's reporters (with the
    # frames the restart cut away and wrote anew) beside this pod's states.
    rclone copy --no-traverse --s3-no-check-bucket --stats 0 -v \
        "$staging/$group" "$remote:$bucket/results" 2>"$rclone_log"
    local status=$?
    grep -v ' INFO  : ' "$rclone_log" >&2
    ((status == 0)) || return 1
    awk -F "$tab" 'FILENAME == ARGV[1] { fresh[$1] = $0; next }
                   !($1 in fresh) { print }
                   END { for (path in fresh) print fresh[path] }' "$sent" "$manifest" >"$manifest.new" &&
        mv "$manifest.new" "$manifest" || return 1
    # files and bytes rclone really sent (it skips what the bucket already holds)
    counts=$(awk -F "$tab" '
        FILENAME == ARGV[1] { size[$1] = $2; next }
        / INFO  : .*: Copied \(/ {
            path = $0; sub(/^.* INFO  : /, "", path); sub(/: Copied \(.*$/, "", path)
            files++; bytes += size[path]
        }
        END { printf "%d %.0f", files, bytes }' "$sent" "$rclone_log")
    log "uploaded ${counts% *} $group file(s), ${counts#* } bytes"
    total_files=$((total_files + ${counts% *}))
}

# One upload: snapshot, then reporters, then states (see the header). Returns
# 0, or 1 with $failure saying what failed; a snapshot failure ends the script.
upload_once() {
    rm -rf -- "$staging" "$state_dir"/rclone.*.log
    mkdir -p "$staging/states" "$staging/reporters"
    # States first, then reporters: see the header.
    stage_group states || die "$EXIT_UNEXPECTED" "could not snapshot the states into $staging"
    stage_group reporters || die "$EXIT_UNEXPECTED" "could not snapshot the reporters into $staging"
    if ! upload_group reporters; then
        failure="uploading to '$remote:$bucket/results' failed; the bucket keeps its older, consistent files"
        return 1
    fi
    if ! upload_group states; then
        failure="uploading the states to '$remote:$bucket/results' failed; the bucket keeps its older, consistent states"
        return 1
    fi
    rm -rf -- "$staging"
}

# After a failed upload: does the S3 server refuse the bucket or the credentials?
# (rclone's copy reports a refused probe only as "is a file not a directory";
# a listing of the bucket, as copy-in.sh makes, tells.)
bucket_refused() {
    local probe=$state_dir/probe.log status
    rclone lsf --max-depth 1 --retries 1 --low-level-retries 1 --contimeout 15s --timeout 60s \
        "$remote:$bucket" >/dev/null 2>"$probe"
    status=$?
    ((status == 3)) || bucket_unusable "$probe"
}

main() {
    check_environment
    mkdir -p "$state_dir" || die "$EXIT_BAD_INPUT" "cannot create $state_dir in the results volume"
    exec 9>>"$state_dir/upload.lock"
    local tries=$transfer_tries delay=$transfer_delay_s try
    if [[ $reason == sync ]]; then
        flock -n 9 || { log "another upload is running; skipping this one"; exit 0; }
        tries=1
    elif ! flock -n 9; then
        log "another upload is running; waiting for it to finish"
        flock 9
    fi
    total_files=0
    for ((try = 1; ; try++)); do
        upload_once && break
        if bucket_refused; then
            die "$EXIT_BUCKET_UNUSABLE" "$failure: the S3 server rejected the bucket or the credentials; fix BUCKET or the rclone secret, then --relaunch"
        fi
        if ((try >= tries)); then
            if [[ $reason == sync ]]; then
                die "$EXIT_TRANSIENT" "$failure, and the next upload retries"
            fi
            die "$EXIT_TRANSIENT" "$failure, $tries times; what did not arrive stays on this pod's volume, and a new pod resumes from the bucket"
        fi
        log "$failure (try $try of $tries); retrying in $delay s"
        sleep "$delay"
        delay=$(awk -v d="$delay" 'BEGIN { print d * 2 }')
    done
    if ((total_files == 0)); then
        log "nothing changed since the last upload"
    fi
}

main
