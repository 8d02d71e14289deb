# shellcheck shell=sh
# Functions shared by the pod scripts, sourced by each of them.
#
# POSIX sh on purpose: copy-in.sh runs it under busybox in the rclone/rclone
# image; the bash scripts (copy-out.sh, run-job.sh, pre-stop.sh) source it too.
# Every function uses only its arguments and these variables of the caller:
#   results   the results volume
#   tab       a tab character (set here)

tab=$(printf '\t')

# Exit statuses: the team's table, protbench_nrp/exits.py (a test checks these
# match it; the Job's podFailurePolicy acts on them).
# shellcheck disable=SC2034  # each script uses some of them
EXIT_OK=0 \
EXIT_UNEXPECTED=1 \
EXIT_BAD_INPUT=2 \
EXIT_BLOWN_UP=65 \
EXIT_INPUTS_MISSING=66 \
EXIT_BUCKET_UNUSABLE=67 \
EXIT_TRANSIENT=75 \
EXIT_SIGINT=130 \
EXIT_SIGTERM=143

# In-place retries of transfers to and from the bucket (copy-in.sh, the final
# upload of copy-out.sh): every retry of the Job is a new pod with an empty
# volume, so a transient error is retried here first. Tries, and the seconds
# before the second try, doubling after each (10 + 20 + 40 + 80 = 150 s in
# all by default: inside the 600 s grace period of a stopping pod).
# shellcheck disable=SC2034  # used by copy-in.sh and copy-out.sh
transfer_tries=${PROTBENCH_TRANSFER_TRIES:-5} \
transfer_delay_s=${PROTBENCH_TRANSFER_RETRY_SECONDS:-10}

# Succeeds when the S3 server's answer in FILE (rclone's log) means no retry
# helps: a missing bucket or rejected credentials.
bucket_unusable() {
    grep -qE 'SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied|NoSuchBucket|StatusCode: 40[13]' "$1"
}

# Succeeds when ENTRY (of PROTBENCH_REQUIRED_FILES or PROTBENCH_OUTPUT_FILES)
# is a relative path that stays below results/.
inside_results() {
    case "/$1/" in
        //* | */../* | */./*) return 1 ;;
    esac
    return 0
}

# path<TAB>size<TAB>mtime of every file of ENTRY (a file, or a directory ending
# in '/'), paths relative to results/; nothing when ENTRY does not exist.
# Hidden files and *.tmp are the half-written temporaries of atomic writes.
# copy-in.sh records this listing of what it downloaded and copy-out.sh
# compares against it, so both must list alike: hence one function.
# shellcheck disable=SC2154  # results: set by every script that sources this
list_entry() {
    if [ -d "$results/$1" ]; then
        rclone lsf -R --files-only --format pst --separator "$tab" --time-format RFC3339Nano \
            --exclude '.*' --exclude '.*/**' --exclude '*.tmp' "$results/$1" |
            awk -v prefix="${1%/}/" '{ print prefix $0 }'
    elif [ -f "$results/$1" ]; then
        rclone lsf --format pst --separator "$tab" --time-format RFC3339Nano "$results/$1" |
            awk -F "$tab" -v OFS="$tab" -v path="$1" '{ $1 = path; print }'
    fi
}

# PID:START of the live process PID, START being its start time in clock
# ticks since boot (field 22 of /proc/PID/stat). A later process given the
# same pid (PID 1 of the container's next run) has another START, so this
# tells a run-job.sh from the one before it. Fails when PID is gone.
process_run_id() {
    # The command name (field 2) may hold spaces and ')': count after its last ') '.
    awk -v pid="$1" '{ sub(/^.*\) /, ""); print pid ":" $20 }' "/proc/$1/stat" 2>/dev/null
}
