#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the fleet tests and for trying `tokbench fleet`.
#
#   scripts/slurm_cluster.sh start    install slurm-wlm + munge if missing, configure, start, wait
#   scripts/slurm_cluster.sh status   say what runs and show the node
#   scripts/slurm_cluster.sh stop     stop the daemons this script started (by their pid files)
#
# Needs root (it writes /etc/slurm/slurm.conf and runs the daemons). The node offers Gres=gpu:2,
# backed by fake character devices (mknod c 1 3, i.e. /dev/null) so that `--gres=gpu:1` jobs get
# CUDA_VISIBLE_DEVICES. No cgroups, no accounting storage: job states come from squeue/scontrol.
# State (spool, logs, pid files, fake devices) lives in $TOKBENCH_SLURM_DIR (default
# /tmp/tokbench-slurm). Idempotent: `start` on a running cluster only checks it.
set -euo pipefail

STATE_DIR="${TOKBENCH_SLURM_DIR:-/tmp/tokbench-slurm}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
GRES_CONF="$CONF_DIR/gres.conf"
MARKER="# managed by tokbench scripts/slurm_cluster.sh"
MUNGE_RUN=/run/munge
MUNGE_PID="$STATE_DIR/munged.pid"
NODE="$(hostname -s)"
GPUS=2

log() { printf 'slurm_cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (it writes $CONF and starts daemons)"; }

# A pid file names a live daemon of the expected name (a stale file's pid may have been reused).
pid_alive() {
    local file=$1 name pid
    name="$(basename "$file" .pid)"
    [[ -s "$file" ]] || return 1
    pid="$(cat "$file")"
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null </dev/null
}

write_config() {
    # Never overwrite a Slurm configuration this script did not write.
    if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; refusing to replace it"
    fi
    mkdir -p "$CONF_DIR" "$STATE_DIR/ctld" "$STATE_DIR/d" "$STATE_DIR/dev"
    local i
    for ((i = 0; i < GPUS; i++)); do
        [[ -c "$STATE_DIR/dev/nvidia$i" ]] || mknod "$STATE_DIR/dev/nvidia$i" c 1 3
    done
    # The node line as slurmd sees the hardware (CPUs, sockets, memory), plus the fake GPUs.
    local hw
    hw="$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')"
    cat >"$CONF.tmp" <<EOF
$MARKER
ClusterName=tokbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=1
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 $hw Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
    cat >"$GRES_CONF" <<EOF
$MARKER
NodeName=$NODE Name=gpu File=$STATE_DIR/dev/nvidia[0-$((GPUS - 1))]
EOF
}

start_munge() {
    # A munged that answers already (ours, or the system's) is used as it is: a second one would
    # take over its socket. Only a munged started here is recorded, so only it is ever stopped.
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown -R munge:munge /etc/munge
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    mkdir -p "$MUNGE_RUN" /var/lib/munge /var/log/munge
    chown munge:munge "$MUNGE_RUN" /var/lib/munge /var/log/munge
    chmod 0755 "$MUNGE_RUN"
    runuser -u munge -- /usr/sbin/munged --force --pid-file="$MUNGE_RUN/munged.pid"
    local n
    for ((n = 0; n < 50; n++)); do
        if munge -n </dev/null | unmunge >/dev/null 2>&1; then
            cp "$MUNGE_RUN/munged.pid" "$MUNGE_PID"
            return
        fi
        sleep 0.1
    done
    die "munged did not answer (see /var/log/munge/munged.log)"
}

start_slurm() {
    if ! pid_alive "$STATE_DIR/slurmctld.pid" && ! scontrol ping 2>/dev/null | grep -q UP; then
        # -c: a clean start; this test cluster keeps no jobs across restarts.
        slurmctld -c
    fi
    if ! pid_alive "$STATE_DIR/slurmd.pid"; then
        slurmd
    fi
}

wait_idle() {
    local n state
    for ((n = 0; n < 300; n++)); do
        state="$(sinfo -h -n "$NODE" -o '%t' 2>/dev/null || true)"
        case "$state" in
            idle | mix | alloc) log "node $NODE is up ($state), gres gpu:$GPUS; state in $STATE_DIR"; return ;;
            down | drain | fail) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.1
    done
    die "node $NODE did not come up (state '${state:-none}'); see $STATE_DIR/slurmctld.log and slurmd.log"
}

stop_pid() {
    local name=$1 file=$2 n
    if pid_alive "$file"; then
        local pid
        pid="$(cat "$file")"
        kill "$pid"
        for ((n = 0; n < 100; n++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        log "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

cmd_start() {
    need_root
    install_packages
    write_config
    start_munge
    start_slurm
    wait_idle
}

cmd_stop() {
    need_root
    stop_pid slurmd "$STATE_DIR/slurmd.pid"
    stop_pid slurmctld "$STATE_DIR/slurmctld.pid"
    stop_pid munged "$MUNGE_PID"
}

cmd_status() {
    local name file rc=0
    for name in munged slurmctld slurmd; do
        file="$STATE_DIR/$name.pid"
        if pid_alive "$file"; then
            echo "$name: running (pid $(cat "$file"))"
        else
            echo "$name: stopped"
            rc=1
        fi
    done
    if [[ $rc -eq 0 ]]; then
        sinfo -N -o '%N %t %c %G' || rc=1
    fi
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
