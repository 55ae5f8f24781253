#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying and testing scripts/sweep_slurm.py: Debian's
# slurm-wlm and munge installed when missing, a slurm.conf describing this one machine written when
# there is none, then munged, slurmctld and slurmd started unless the controller answers already.
# Job accounting: Slurm's job-completion log (jobcomp/filetxt), read by `sacct --completion`; a real
# cluster has slurmdbd instead, read by plain `sacct`. Run as root, or with sudo available. Idempotent.
#
#   scripts/slurm_local.sh          install, configure, start
#   scripts/slurm_local.sh stop     stop the daemons it started
set -euo pipefail

sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
conf=/etc/slurm/slurm.conf
marker="# written by dl-course scripts/slurm_local.sh"
log=/var/log/slurm

if [ "${1:-start}" = stop ]; then
    for daemon in slurmd slurmctld; do
        pidfile=/run/$daemon.pid
        if [ -f "$pidfile" ]; then $sudo kill "$(cat "$pidfile")" 2>/dev/null || true; fi
    done
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

if [ ! -f "$conf" ]; then
    node="$(slurmd -C | head -n 1)"  # NodeName=<host> CPUs=... RealMemory=...: this machine as slurmd sees it
    host="$(hostname -s)"
    $sudo mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$log"
    $sudo tee "$conf" >/dev/null <<EOF
$marker
ClusterName=dlcourse
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log/slurmctld.log
SlurmdLogFile=$log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$log/jobcomp.log
MinJobAge=600
$node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
fi

if ! pgrep -x munged >/dev/null; then
    [ -f /etc/munge/munge.key ] || $sudo mungekey --create
    $sudo mkdir -p /run/munge /var/log/munge /var/lib/munge
    $sudo chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key
    $sudo runuser -u munge -- munged
fi

if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
    $sudo slurmctld
    $sudo slurmd
fi
for _ in $(seq 60); do
    if scontrol ping 2>/dev/null | grep -q "is UP" && sinfo -h -o %t 2>/dev/null | grep -qE "^(idle|mix|alloc)"; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "slurm_local.sh: the local Slurm cluster did not come up; see $log/slurmctld.log and $log/slurmd.log" >&2
sinfo >&2 || true
exit 1
