#!/usr/bin/env bash
# A single-node SLURM on this machine (Debian's slurmctld + slurmd + munge, one fake GPU as GRES), to try the
# cluster profile:  sudo scripts/local_slurm.sh up  ...  snakemake --profile slurm ...  ...  scripts/local_slurm.sh down
# Needs root and apt. No job accounting: the profile needs `slurm-status-command: squeue` here.
# `install` only installs Debian's packages (their own files, e.g. /etc/slurm/plugstack.conf, stay installed).
# Jobs' own `srun` reads /etc/slurm/slurm.conf, so the config is written there, marked as ours: `up` refuses to
# overwrite a configuration it did not write, and `down` removes what it wrote (and stops the daemons a killed
# earlier run left behind, from their pid files in the state directory).
set -euo pipefail
STATE=${VPTFT_SLURM_STATE:-/tmp/vptft-slurm}
MARK="# written by vptft scripts/local_slurm.sh (removed by its 'down')"

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    local cpus mem
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.75}' /proc/meminfo)  # node memory must not exceed the real one
    for file in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do
        if [ -e "$file" ] && [ "$(head -n1 "$file")" != "$MARK" ]; then
            echo "$file exists and was not written by this script: refusing to overwrite this host's SLURM" >&2
            exit 1
        fi
    done
    mkdir -p /etc/slurm "$STATE/state" "$STATE/spool"
    cat >/etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=vptft
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=600
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    printf '%s\nAutoDetect=off\nName=gpu File=/dev/null\n' "$MARK" >/etc/slurm/gres.conf
}

up() {
    down
    install
    write_config
    mkdir -p /run/munge && chown munge:munge /run/munge
    [ -f /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null || runuser -u munge -- /usr/sbin/munged
    (cd "$STATE" && /usr/sbin/slurmctld)
    /usr/sbin/slurmd -N localhost
    timeout -s KILL 60 bash -c 'until [ "$(sinfo -h -n localhost -o %t 2>/dev/null)" = idle ]; do sleep 0.2; done'
    sinfo
}

down() {
    local pid
    for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid; do
        pid=$(cat "$pidfile" 2>/dev/null) || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            timeout -s KILL 30 bash -c "while kill -0 $pid 2>/dev/null; do sleep 0.1; done" || true
        fi
    done
    for file in /etc/slurm/slurm.conf /etc/slurm/gres.conf; do  # ours only: a left config slows every client
        if [ -e "$file" ] && [ "$(head -n1 "$file")" = "$MARK" ]; then rm -f "$file"; fi
    done
}

case "${1:-}" in
install) install ;;
up) up ;;
down) down ;;
*) echo "usage: $0 install|up|down" >&2 && exit 2 ;;
esac
