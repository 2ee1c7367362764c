#!/bin/bash
# reflect-worker-ranks: the worker images' entrypoint. Starts one reflect-worker per local rank of
# this pod and supervises them, so that one container holds all the ranks of its GPUs.
#
#   reflect-worker-ranks [reflect-worker flags...]
#
# The number of local ranks is the value of --ranks_per_pod in the flags (default 1). Every rank
# gets the same flags plus `--local_rank i` (i = 0 … ranks_per_pod-1); reflect-worker works out its
# global rank from LWS_WORKER_INDEX (set by LeaderWorkerSet, absent outside one), --ranks_per_pod
# and --local_rank. A pod that is a whole replica by itself (one rank, no LeaderWorkerSet group
# larger than one pod) simply becomes reflect-worker (exec): no supervisor, no extra flag.
#
# Signals. SIGTERM / SIGINT go to global rank 0 only — local rank 0 of the leader pod
# (LWS_WORKER_INDEX unset or 0) — which drains: it stops admitting, finishes its in-flight
# requests, then ends the group. Every other rank keeps following the leader's step plans until
# then, because the leader cannot finish a single request without them; they exit on their own
# when the leader ends the group or its connection closes. A follower pod therefore ignores
# SIGTERM; Kubernetes kills it at the end of terminationGracePeriodSeconds if its leader never
# goes away.
#
# Exits. When a rank exits cleanly (status 0) after the pod got a signal — rank 0 at the end of
# its drain, or a follower because its leader ended the group — the other local ranks get
# REFLECT_RANK_EXIT_GRACE_SECONDS (default 30) to exit by themselves, then SIGTERM, then SIGKILL
# 10 s later. When any rank exits otherwise (a crash, a lost peer), the group cannot go on: the
# other local ranks get SIGTERM at once (SIGKILL 10 s later) and the container exits with the
# first failing rank's status, so Kubernetes restarts it and LeaderWorkerSet recreates the group.
set -uo pipefail

worker="${REFLECT_WORKER_BINARY:-/usr/local/bin/reflect-worker}"
exit_grace_seconds="${REFLECT_RANK_EXIT_GRACE_SECONDS:-30}"
kill_after_seconds=10

log() { echo "reflect-worker-ranks: $*" >&2; }

ranks_per_pod=1
previous=""
for argument in "$@"; do
  case "$previous" in --ranks_per_pod | --ranks-per-pod) ranks_per_pod="$argument" ;; esac
  case "$argument" in --ranks_per_pod=* | --ranks-per-pod=*) ranks_per_pod="${argument#*=}" ;; esac
  previous="$argument"
done
if ! [[ "$ranks_per_pod" =~ ^[1-9][0-9]*$ ]]; then
  log "--ranks_per_pod must be a positive integer, got '$ranks_per_pod'"
  exit 2
fi
if ! [[ "$exit_grace_seconds" =~ ^[0-9]+$ ]]; then
  log "REFLECT_RANK_EXIT_GRACE_SECONDS must be a whole number of seconds, got '$exit_grace_seconds'"
  exit 2
fi

if [ "$ranks_per_pod" -eq 1 ] && [ "${LWS_GROUP_SIZE:-1}" = "1" ]; then
  exec "$worker" "$@"
fi

leader_pod=false
if [ "${LWS_WORKER_INDEX:-0}" = "0" ]; then leader_pod=true; fi

declare -A rank_of_pid=()
for ((rank = 0; rank < ranks_per_pod; rank++)); do
  "$worker" "$@" --local_rank "$rank" &
  rank_of_pid[$!]=$rank
done
rank0_pid=""
for pid in "${!rank_of_pid[@]}"; do
  if [ "${rank_of_pid[$pid]}" -eq 0 ]; then rank0_pid=$pid; fi
done

signalled=false
# shellcheck disable=SC2329  # called by the traps below
forward() {
  signalled=true
  if $leader_pod; then
    log "SIG$1: asking global rank 0 (pid $rank0_pid) to drain"
    kill -s "$1" "$rank0_pid" 2>/dev/null || true
  else
    log "SIG$1 ignored: this follower pod's ranks exit when their leader ends the group"
  fi
}
trap 'forward TERM' TERM
trap 'forward INT' INT

watchdog_pid=""
# Stops the ranks still running: SIGTERM after $1 seconds, SIGKILL $kill_after_seconds later.
stop_remaining_after() {
  [ -n "$watchdog_pid" ] && return
  local remaining=("${!rank_of_pid[@]}")
  (
    trap - TERM INT
    sleep "$1"
    kill -s TERM "${remaining[@]}" 2>/dev/null || exit 0
    sleep "$kill_after_seconds"
    kill -s KILL "${remaining[@]}" 2>/dev/null || true
  ) &
  watchdog_pid=$!
}

exit_status=0
failed=false
while [ "${#rank_of_pid[@]}" -gt 0 ]; do
  exited_pid=""
  wait -n -p exited_pid "${!rank_of_pid[@]}"
  status=$?
  # An empty pid: wait was interrupted by a trapped signal (already handled) — keep waiting.
  [ -n "${exited_pid:-}" ] || continue
  rank="${rank_of_pid[$exited_pid]}"
  unset "rank_of_pid[$exited_pid]"
  log "local rank $rank (pid $exited_pid) exited with status $status"
  if [ "$status" -ne 0 ] && ! $failed; then
    failed=true
    exit_status=$status
  fi
  [ "${#rank_of_pid[@]}" -gt 0 ] || break
  if $signalled && [ "$status" -eq 0 ]; then
    # A clean exit during a drain: the others are ending too, give them time.
    stop_remaining_after "$exit_grace_seconds"
  else
    stop_remaining_after 0
  fi
done

if [ -n "$watchdog_pid" ]; then kill "$watchdog_pid" 2>/dev/null; fi
exit "$exit_status"
