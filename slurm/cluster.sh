#!/usr/bin/env bash
# cluster.sh — install and run a REAL single-node SLURM cluster on this machine.
#
# Used by the SLURM end-to-end tests and by CI (.ci/run) to bring a cluster up
# from nothing on a fresh Debian 12 machine (container/VM, no systemd, root).
#
#   bash slurm/cluster.sh install   # apt-get install slurmctld slurmd slurm-client munge
#   bash slurm/cluster.sh start     # install if needed, configure, start, wait for node idle
#   bash slurm/cluster.sh stop      # stop slurmd, slurmctld, munged
#   bash slurm/cluster.sh status    # exit 0 iff daemons are up and node is usable
#
# See slurm/README.md for the configuration choices (no sacct, MaxArraySize,
# container-friendly plugins).
set -euo pipefail

# ---------------------------------------------------------------------------
# Settings (overridable through the environment, mostly for debugging).
# ---------------------------------------------------------------------------
SLURM_CONF_DIR=/etc/slurm                 # where Debian's slurm 22.05 looks
SLURM_CONF="$SLURM_CONF_DIR/slurm.conf"
SLURM_LOG_DIR=/var/log/slurm
SLURMCTLD_LOG="$SLURM_LOG_DIR/slurmctld.log"
SLURMD_LOG="$SLURM_LOG_DIR/slurmd.log"
SLURMCTLD_STATE=/var/spool/slurmctld      # StateSaveLocation (job/node state across restarts)
SLURMD_SPOOL=/var/spool/slurmd            # SlurmdSpoolDir (batch scripts, step sockets)
SLURMCTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGED_PID="$MUNGE_RUN/munged.pid"
# How long `start` waits for the node to reach IDLE before giving up.
START_TIMEOUT="${SLURM_START_TIMEOUT:-90}"
# CPUs advertised for the node. Defaults to the real count; can be raised to
# let more jobs run side by side on a small machine (config_overrides below
# makes slurmd trust this number instead of the hardware). Not nproc's answer under
# OMP_NUM_THREADS (it honours that variable): a shell with OMP_NUM_THREADS=1 would
# make a 1-CPU cluster that runs one task at a time.
NODE_CPUS="${SLURM_NODE_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}"
# Site limits, overridable so a test can run the cluster under small ones (tests/test_slurm.py does, then starts
# it again with the defaults). MinJobAge: how long a finished job stays in slurmctld (and counts for MaxJobCount).
MAX_ARRAY_SIZE="${SLURM_MAX_ARRAY_SIZE:-1001}"
MAX_JOB_COUNT="${SLURM_MAX_JOB_COUNT:-10000}"
MIN_JOB_AGE="${SLURM_MIN_JOB_AGE:-300}"
PACKAGES=(slurmctld slurmd slurm-client munge)
[[ "$NODE_CPUS" =~ ^[1-9][0-9]*$ ]] || { echo "[slurm/cluster.sh] ERROR: SLURM_NODE_CPUS must be a positive integer, got '$NODE_CPUS'" >&2; exit 1; }
for setting in MAX_ARRAY_SIZE MAX_JOB_COUNT MIN_JOB_AGE; do
    [[ "${!setting}" =~ ^[1-9][0-9]*$ ]] || { echo "[slurm/cluster.sh] ERROR: SLURM_$setting must be a positive integer, got '${!setting}'" >&2; exit 1; }
done
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || { echo "[slurm/cluster.sh] ERROR: SLURM_START_TIMEOUT must be a number of seconds, got '$START_TIMEOUT'" >&2; exit 1; }

log()  { echo "[slurm/cluster.sh] $*"; }
die()  { echo "[slurm/cluster.sh] ERROR: $*" >&2; exit 1; }

require_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        die "must be run as root (it installs packages and starts system daemons); try: sudo bash $0 ${1:-}"
    fi
}

node_name() { hostname -s; }

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------
packages_installed() {
    local p
    for p in "${PACKAGES[@]}"; do
        # "install ok installed" is the only status that means fully configured.
        [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || return 1
    done
    return 0
}

cmd_install() {
    if packages_installed; then
        log "packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    log "installing ${PACKAGES[*]} with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    # Keep package maintainer scripts from starting daemons on their own
    # (munge ships an init.d script): this script starts them itself, with
    # its own config. Only add a policy-rc.d if the machine has none.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    # Two attempts: a fresh CI machine can hit a transient mirror error.
    local rc attempt
    for attempt in 1 2; do
        rc=0
        apt-get update -qq >/tmp/slurm-apt-install.log 2>&1 || rc=$?
        if [[ $rc -eq 0 ]]; then
            apt-get install -y -qq --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                "${PACKAGES[@]}" >>/tmp/slurm-apt-install.log 2>&1 || rc=$?
        fi
        [[ $rc -eq 0 ]] && break
        log "apt-get failed (exit $rc, attempt $attempt)"
        sleep 3
    done
    if [[ $added_policy -eq 1 ]]; then rm -f "$policy"; fi
    if [[ $rc -ne 0 ]]; then
        tail -n 30 /tmp/slurm-apt-install.log >&2 2>/dev/null || true
        die "apt-get install of ${PACKAGES[*]} failed (exit $rc); full log: /tmp/slurm-apt-install.log"
    fi
    packages_installed || die "apt-get finished but ${PACKAGES[*]} are not all installed"
    log "installed: $(dpkg-query -W -f='${Package} ${Version}  ' "${PACKAGES[@]}")"
}

# ---------------------------------------------------------------------------
# process helpers (no systemd here: daemons are launched directly)
# ---------------------------------------------------------------------------
# pid_alive PIDFILE NAME: true if PIDFILE names a live process whose command is NAME.
pid_alive() {
    local pidfile=$1 name=$2 pid
    [[ -s "$pidfile" ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # The name check guards against a stale pid file whose pid was reused.
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    # A killed daemon can linger briefly as a zombie until it is reaped.
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# stop_daemon PIDFILE NAME: SIGTERM, wait up to 15 s, then SIGKILL. No error if not running.
stop_daemon() {
    local pidfile=$1 name=$2 pid i
    if ! pid_alive "$pidfile" "$name"; then
        log "$name not running"
        rm -f "$pidfile"
        return 0
    fi
    pid=$(tr -dc '0-9' <"$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not exit after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

# kill_strays NAME PIDFILE: kill every process called NAME other than the one PIDFILE names. A daemon left from an
# earlier start whose pid file was lost (a killed test, a crashed script) keeps its port (6817/6818), so a new one
# dies at once with "slurmd died during startup"; this cluster owns these daemons on this machine.
kill_strays() {
    local name=$1 pidfile=$2 keep=none strays i
    pid_alive "$pidfile" "$name" && keep=$(tr -dc '0-9' <"$pidfile")
    strays=$(live_pids "$name" "$keep")
    [[ -n "$strays" ]] || return 0
    log "killing stray $name process(es) not in $pidfile: $(echo $strays)"
    kill -TERM $strays 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        strays=$(live_pids "$name" "$keep")
        [[ -n "$strays" ]] || return 0
        sleep 0.1
    done
    kill -KILL $strays 2>/dev/null || true
    sleep 0.5
}

# live_pids NAME KEEP: pids of the live (not zombie) processes called NAME, except KEEP.
live_pids() {
    ps -eo pid=,stat=,comm= | awk -v name="$1" -v keep="$2" '$3 == name && $2 !~ /^Z/ && $1 != keep {print $1}'
}

# ---------------------------------------------------------------------------
# munge (authentication between SLURM commands and daemons)
# ---------------------------------------------------------------------------
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    if [[ ! -s "$MUNGE_KEY" ]]; then
        log "creating munge key $MUNGE_KEY"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    # munged refuses keys that are readable by others or not owned by it.
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"

    if pid_alive "$MUNGED_PID" munged && munge_works; then
        log "munged already running"
        return 0
    fi
    stop_daemon "$MUNGED_PID" munged >/dev/null
    rm -f "$MUNGE_RUN"/munge.socket.2*      # stale socket/lock from an unclean stop
    log "starting munged"
    # munged daemonizes itself; run it as the munge user like the packaged service.
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGED_PID" \
        || die "munged failed to start; see /var/log/munge/munged.log: $(tail -n 5 /var/log/munge/munged.log 2>/dev/null)"
    local i
    for ((i = 0; i < 50; i++)); do munge_works && return 0; sleep 0.1; done
    die "munged started but 'munge -n | unmunge' fails; see /var/log/munge/munged.log"
}

# ---------------------------------------------------------------------------
# slurm.conf for THIS machine
# ---------------------------------------------------------------------------
# Sets CONF_CHANGED=1 if the file was (re)written, 0 if it was already identical.
# (Returns 0 either way: a function used in an `if`/`&&` would run with
# `set -e` disabled inside it.)
CONF_CHANGED=0
write_config() {
    local node mem_mb real_mem tmp
    node=$(node_name)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    # A bit under the total: slurmd drains a node whose detected memory is
    # below RealMemory ("Low RealMemory"), and the kernel keeps some for itself.
    real_mem=$(( mem_mb * 90 / 100 ))
    install -d -m 0755 "$SLURM_CONF_DIR" "$SLURM_LOG_DIR"
    install -d -m 0700 "$SLURMCTLD_STATE"
    install -d -m 0755 "$SLURMD_SPOOL"

    tmp=$(mktemp "$SLURM_CONF_DIR/slurm.conf.XXXXXX")
    cat >"$tmp" <<EOF
# Generated by slurm/cluster.sh — single-node test cluster on host '$node'.
# Rewritten on every 'cluster.sh start'; edit the script, not this file.
ClusterName=audiocert
# Controller and node are this machine; 127.0.0.1 so nothing depends on the
# hostname being resolvable (fresh CI containers often lack an /etc/hosts entry).
SlurmctldHost=$node(127.0.0.1)
# Everything runs as root: there are no service users to set up, and jobs
# submitted by root run as root (so they can write /tmp and /work).
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a REQUEUED job waits before it may start
# again (default 120 s, far too slow for tests); 10 s is ample on one node.
AuthInfo=cred_expire=10
CryptoType=crypto/munge
MpiDefault=none
# No mail on a test cluster (silences "Configured MailProg is invalid").
MailProg=/bin/true
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURMCTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldLogFile=$SLURMCTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info

# Container-friendly plugins: no systemd and no writable cgroup tree here, so
# track job processes through /proc (linuxproc) and do no task binding/limits.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No accounting database: 'sacct' does NOT work, deliberately — like real
# clusters where sacct is disabled, tools must cope without it.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none

# Scheduling: cores and memory are consumable, so several small jobs (array
# tasks) share the node; DefMemPerCPU keeps a job without --mem from
# claiming the whole node's memory.
SchedulerType=sched/backfill
# The scheduler runs on submit/finish events, but a job that becomes eligible
# by time (a requeued job's BeginTime), and a dependent job (a reducer, a
# sequential round) once its array ends, often waits for the periodic passes
# (defaults 60 s main / 30 s backfill): make them every second. Cheap on one node.
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024

# Jobs: requeue allowed (preemption tests), arrays up to 0-1000.
JobRequeue=1
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=$MAX_JOB_COUNT
# Finished jobs stay visible to 'scontrol show job' / 'squeue -t all' for
# 5 min (there is no sacct to ask later).
MinJobAge=$MIN_JOB_AGE
# Seconds between SIGTERM and SIGKILL on cancel/requeue/timeout (default 30;
# shorter keeps requeue/cancel tests fast).
KillWait=5

# Short timeouts so a (re)started node is noticed quickly, and
# ReturnToService=2 so a node that was DOWN comes back IDLE as soon as its
# slurmd registers with a valid config.
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
ReturnToService=2
# Trust the CPUs/RealMemory below even where the container's view of the
# hardware differs (otherwise the node can be drained for a mismatch).
SlurmdParameters=config_overrides

NodeName=$node NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ -f "$SLURM_CONF" ]] && cmp -s "$tmp" "$SLURM_CONF"; then
        rm -f "$tmp"
        CONF_CHANGED=0
        return 0
    fi
    chmod 0644 "$tmp"
    mv -f "$tmp" "$SLURM_CONF"
    log "wrote $SLURM_CONF (node $node, CPUs=$NODE_CPUS, RealMemory=${real_mem}MB)"
    CONF_CHANGED=1
}

# ---------------------------------------------------------------------------
# health
# ---------------------------------------------------------------------------
node_state() {
    # e.g. idle, mixed, allocated, idle*, down*, drained, unknown*
    sinfo -h -N -n "$(node_name)" -o '%T' 2>/dev/null | head -n 1 || true
}

daemons_up() {
    pid_alive "$MUNGED_PID" munged && pid_alive "$SLURMCTLD_PID" slurmctld && pid_alive "$SLURMD_PID" slurmd
}

node_usable() {
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

show_logs() {
    echo "----- tail of $SLURMCTLD_LOG -----" >&2
    tail -n 25 "$SLURMCTLD_LOG" >&2 2>/dev/null || echo "(no log)" >&2
    echo "----- tail of $SLURMD_LOG -----" >&2
    tail -n 25 "$SLURMD_LOG" >&2 2>/dev/null || echo "(no log)" >&2
}

fail_with_logs() {
    echo "[slurm/cluster.sh] ERROR: $*" >&2
    sinfo -N -l >&2 2>/dev/null || true
    show_logs
    exit 1
}

# ---------------------------------------------------------------------------
# start / stop / status
# ---------------------------------------------------------------------------
cmd_start() {
    if ! packages_installed; then cmd_install; fi
    write_config

    if [[ $CONF_CHANGED -eq 0 ]] && daemons_up && node_usable; then
        log "cluster already running and healthy (node $(node_name) is $(node_state))"
        sinfo
        return 0
    fi

    start_munge

    if [[ $CONF_CHANGED -eq 1 ]]; then
        # Daemons started with an older config would disagree with the new one.
        stop_daemon "$SLURMD_PID" slurmd >/dev/null
        stop_daemon "$SLURMCTLD_PID" slurmctld >/dev/null
    fi

    if pid_alive "$SLURMCTLD_PID" slurmctld; then
        log "slurmctld already running"
    else
        kill_strays slurmctld "$SLURMCTLD_PID"
        log "starting slurmctld"
        # Without -D it daemonizes; -R would drop saved state, so don't:
        # jobs from a previous start are recovered, like a real controller.
        /usr/sbin/slurmctld -f "$SLURM_CONF" \
            || fail_with_logs "slurmctld failed to start"
    fi
    if pid_alive "$SLURMD_PID" slurmd; then
        log "slurmd already running"
    else
        kill_strays slurmd "$SLURMD_PID"
        log "starting slurmd"
        /usr/sbin/slurmd -f "$SLURM_CONF" \
            || fail_with_logs "slurmd failed to start"
    fi

    # Wait for the node to register and become usable. A node left DOWN or
    # DRAINED by an earlier run (e.g. killed slurmd) is resumed explicitly.
    local deadline=$((SECONDS + START_TIMEOUT)) state resumed_at=-100
    while :; do
        state=$(node_state)
        case "$state" in
            idle | mixed | allocated | completing) break ;;
            down* | drain* | fail*)
                # Resume at most every 5 s; slurmd needs to have registered
                # for the resume to stick.
                if ((SECONDS - resumed_at >= 5)); then
                    log "node $(node_name) is '$state'; resuming it"
                    scontrol update nodename="$(node_name)" state=resume 2>/dev/null || true
                    resumed_at=$SECONDS
                fi
                ;;
        esac
        pid_alive "$SLURMCTLD_PID" slurmctld || fail_with_logs "slurmctld died during startup"
        pid_alive "$SLURMD_PID" slurmd || fail_with_logs "slurmd died during startup"
        if ((SECONDS >= deadline)); then
            fail_with_logs "node $(node_name) did not become idle within ${START_TIMEOUT}s (state: '${state:-no answer from slurmctld}')"
        fi
        sleep 0.5
    done
    log "cluster up: node $(node_name) is $state"
    sinfo
}

cmd_stop() {
    stop_daemon "$SLURMD_PID" slurmd
    kill_strays slurmd "$SLURMD_PID"
    stop_daemon "$SLURMCTLD_PID" slurmctld
    kill_strays slurmctld "$SLURMCTLD_PID"
    stop_daemon "$MUNGED_PID" munged
    log "cluster stopped"
}

cmd_status() {
    local rc=0 d
    for d in munged:"$MUNGED_PID" slurmctld:"$SLURMCTLD_PID" slurmd:"$SLURMD_PID"; do
        if pid_alive "${d#*:}" "${d%%:*}"; then
            echo "${d%%:*}: running (pid $(tr -dc '0-9' <"${d#*:}"))"
        else
            echo "${d%%:*}: NOT running"
            rc=1
        fi
    done
    if [[ $rc -eq 0 ]] && node_usable; then
        echo "cluster: UP (node $(node_name) is $(node_state))"
    else
        if [[ $rc -eq 0 ]]; then
            echo "cluster: DOWN (daemons running but node $(node_name) is '$(node_state)')"
        else
            echo "cluster: DOWN"
        fi
        rc=1
    fi
    if command -v sinfo >/dev/null; then
        sinfo 2>&1 || true
    fi
    return $rc
}

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

main() {
    local cmd=${1:-}
    case "$cmd" in
        install) require_root "$cmd"; cmd_install ;;
        start)   require_root "$cmd"; cmd_start ;;
        stop)    require_root "$cmd"; cmd_stop ;;
        status)  require_root "$cmd"; cmd_status ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
