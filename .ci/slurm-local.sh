#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py (and by hand).
#
#   .ci/slurm-local.sh start DIR    start munged, slurmctld and slurmd with everything under DIR
#                                   (key, config, state, sockets, logs); prints the slurm.conf path
#   .ci/slurm-local.sh stop DIR     cancel the jobs and stop the three daemons by their pid files
#
# Needs root and Debian's slurm-wlm and munge packages (apt-get install -y slurm-wlm munge).
# Nothing outside DIR is touched: clients find the cluster through SLURM_CONF=DIR/slurm.conf and
# munge through the socket named in that file. Ports 16817/16818 keep clear of a system SLURM.
set -euo pipefail

cmd=${1:?usage: slurm-local.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm-local.sh start|stop DIR}")

stop_pidfile() {  # stop the process named in a pid file, wait up to 10 s, then kill it
    local f=$1 pid
    [[ -s $f ]] || return 0
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

if [[ $cmd == stop ]]; then
    [[ -f $dir/slurm.conf ]] && SLURM_CONF=$dir/slurm.conf scancel --full --quiet --user=root 2>/dev/null || true
    stop_pidfile "$dir/slurmd.pid"
    stop_pidfile "$dir/slurmctld.pid"
    stop_pidfile "$dir/munged.pid"
    exit 0
fi

[[ $cmd == start ]] || { echo "unknown command $cmd (start|stop)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "needs root (slurmd runs jobs as their user)" >&2; exit 3; }
for exe in munged munge slurmctld slurmd sinfo sbatch scancel; do
    command -v "$exe" >/dev/null || { echo "$exe not found: apt-get install -y slurm-wlm munge" >&2; exit 3; }
done

mkdir -p "$dir"/{state,spool,munge}
chmod 700 "$dir/munge"
key=$dir/munge/munge.key
[[ -s $key ]] || { dd if=/dev/urandom of="$key" bs=1024 count=1 status=none; chmod 400 "$key"; }
munged --force --key-file="$key" --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" \
       --log-file="$dir/munged.log" --seed-file="$dir/munge/munged.seed"
for _ in $(seq 50); do [[ -S $dir/munge/munge.socket ]] && break; sleep 0.1; done
munge --socket="$dir/munge/munge.socket" -n | unmunge --socket="$dir/munge/munge.socket" >/dev/null \
    || { echo "munge does not work (see $dir/munged.log)" >&2; exit 4; }

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
cat > "$dir/slurm.conf" <<EOF
ClusterName=mistfast-ci
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
MpiDefault=none
SchedulerType=sched/builtin
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 150); do
    sinfo -h -o %T 2>/dev/null | grep -qx idle && { echo "$SLURM_CONF"; exit 0; }
    sleep 0.2
done
echo "the node did not become idle; see $dir/slurmctld.log and $dir/slurmd.log" >&2
exit 5
