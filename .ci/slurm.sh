#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine (as root) for the Slurm executor tests; prints the
# partition name on stdout. Needs Debian's slurm-wlm and munge packages. Idempotent.
# Usage: export CRLAB_TEST_SLURM_PARTITION=$(bash .ci/slurm.sh)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "starting slurmctld/slurmd needs root" >&2; exit 1; }
command -v slurmctld >/dev/null || { echo "slurm-wlm is not installed (apt-get install slurm-wlm munge)" >&2; exit 1; }
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
partition=crlab
state=/var/spool/slurmctld
spool=/var/spool/slurmd
logs=/var/log/slurm
mkdir -p "$state" "$spool" "$logs" /run/munge /etc/slurm

# munge: the package creates a key on install; make one if it did not.
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
fi

cat >/etc/slurm/slurm.conf <<EOF
ClusterName=crlab-ci
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
StateSaveLocation=$state
SlurmdSpoolDir=$spool
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$logs/slurmctld.log
SlurmdLogFile=$logs/slurmd.log
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
KillWait=60
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$partition Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF

if ! pgrep -x slurmctld >/dev/null; then
  slurmctld
fi
if ! pgrep -x slurmd >/dev/null; then
  slurmd
fi
for _ in $(seq 1 60); do
  if sinfo -h -p "$partition" -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "$partition"
    exit 0
  fi
  sleep 1
done
echo "the one-node Slurm cluster did not come up; see $logs" >&2
sinfo >&2 || true
exit 1
