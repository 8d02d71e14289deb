# shellcheck shell=sh
# Functions shared by the pod scripts, sourced by each of them.
#
# POSIX sh on purpose: copy-in.sh runs it under busybox in the rclone/rclone
# image; the bash scripts (copy-out.sh, run-job.sh, pre-stop.sh) source it too.
# Every function uses only its arguments and these variables of the caller:
#   results   the results volume
#   tab       a tab character (set here)

tab=$(printf '\t')

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
