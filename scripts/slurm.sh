#!/usr/bin/env bash
# A real single-node Slurm cluster (Debian's slurm-wlm 22.05) on 127.0.0.1
# for the tests, without systemd.
#
#   scripts/slurm.sh start DIR   install slurm-wlm and munge if missing, write
#                                DIR/slurm.conf, start munged (unless one is
#                                running), slurmctld and slurmd -N localhost,
#                                wait for the node to be idle, and print
#                                `export` lines for the tests
#   scripts/slurm.sh stop [DIR]  stop the daemons started for DIR (default:
#                                $ORCH_SLURM_DIR) and remove their state
#
# Use:  eval "$(scripts/slurm.sh start "$tmp")"
#       trap 'scripts/slurm.sh stop "$tmp"' EXIT
#
# Batch jobs are scheduled when submitted (batch_sched_delay=0; Slurm's
# default defers it up to 3 s, for clusters that take thousands a second).
# Memory is a consumable resource (DefMemPerCPU=1024) and enforced: with
# task/cgroup on cgroup v1 where /sys/fs/cgroup/memory is writable (no
# systemd needed), so a job that uses more than its --mem ends
# OUT_OF_MEMORY; elsewhere by jobacct_gather's OverMemoryKill, which ends
# it FAILED.
set -euo pipefail

die() { echo "slurm: $*" >&2; exit 1; }

install() {
	command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
	echo "slurm: installing slurm-wlm and munge from apt (about 20 s, once)" >&2
	[ "$(id -u)" = 0 ] || die "slurm-wlm is not installed and installing it needs root"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends slurm-wlm munge >&2 ||
		die "apt-get install slurm-wlm munge failed"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 40000))
		if port_free "$p" && [ "$p" != "${1:-}" ]; then echo "$p"; return; fi
	done
	die "no free port"
}

munge_up() {
	[ -S /run/munge/munge.socket.2 ] && munge -n </dev/null >/dev/null 2>&1
}

start() {
	local dir=$1 ctld_port slurmd_port mem state
	[ "$(id -u)" = 0 ] || die "the test cluster runs its daemons as root"
	install
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
		die "a cluster for $dir is already running; stop it first"
	fi
	mkdir -p "$dir/state" "$dir/spool" "$dir/jobs"
	chown slurm:slurm "$dir/state"

	# munge: one daemon per machine on its default socket; start it if absent.
	if ! munge_up; then
		if [ ! -s /etc/munge/munge.key ]; then
			mkdir -p /etc/munge
			dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
		fi
		chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
		mkdir -p /run/munge /var/log/munge /var/lib/munge
		chown munge:munge /run/munge /var/log/munge /var/lib/munge
		runuser -u munge -- munged --force
		for _ in $(seq 50); do munge_up && break; sleep 0.1; done
		munge_up || die "munged did not start"
		cp /run/munge/munged.pid "$dir/munged.pid" # the daemon's own record of its pid
	fi

	ctld_port=$(free_port)
	slurmd_port=$(free_port "$ctld_port")
	# Memory the node offers: a quarter of the machine's, at most 8 GiB.
	# Memory enforcement: task/cgroup on cgroup v1 where the memory hierarchy
	# is writable (an OOM then ends the job OUT_OF_MEMORY); otherwise
	# jobacct_gather's OverMemoryKill (the job ends FAILED).
	local task=task/none gather=OverMemoryKill
	if [ -d /sys/fs/cgroup/memory ] && mkdir "/sys/fs/cgroup/memory/orch-probe-$$" 2>/dev/null; then
		rmdir "/sys/fs/cgroup/memory/orch-probe-$$"
		task=task/cgroup gather=NoOverMemoryKill
	fi
	# Job cgroups an earlier cluster left behind (a job that failed to start
	# leaves its job_N directory) would meet this cluster's jobs of the same
	# number: remove the empty ones, deepest first, and number jobs from a
	# point no earlier cluster on this machine is likely to have reached.
	if [ "$task" = task/cgroup ]; then
		find /sys/fs/cgroup/*/slurm_localhost -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
	fi
	first_job=$(( ($(date +%s) % 100000) * 100 + 1 ))
	mem=$(awk '/^MemTotal:/ { m = int($2 / 1024 / 4); if (m > 8192) m = 8192; print m }' /proc/meminfo)
	cat >"$dir/slurm.conf" <<-EOF
		ClusterName=orchtest
		SlurmctldHost=localhost(127.0.0.1)
		CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
		SlurmctldPort=$ctld_port
		SlurmdPort=$slurmd_port
		SlurmUser=root
		SlurmdUser=root
		AuthType=auth/munge
		StateSaveLocation=$dir/state
		SlurmdSpoolDir=$dir/spool
		SlurmctldPidFile=$dir/slurmctld.pid
		SlurmdPidFile=$dir/slurmd.pid
		SlurmctldLogFile=$dir/slurmctld.log
		SlurmdLogFile=$dir/slurmd.log
		ProctrackType=proctrack/linuxproc
		TaskPlugin=$task
		SelectType=select/cons_tres
		SelectTypeParameters=CR_Core_Memory
		DefMemPerCPU=1024
		JobAcctGatherType=jobacct_gather/linux
		JobAcctGatherFrequency=task=1
		JobAcctGatherParams=$gather
		AccountingStorageType=accounting_storage/none
		MpiDefault=none
		ReturnToService=2
		SlurmdTimeout=30
		InactiveLimit=0
		KillWait=2
		MinJobAge=300
		SchedulerParameters=batch_sched_delay=0
		FirstJobId=$first_job
		NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
		PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
	EOF
	cat >"$dir/cgroup.conf" <<-EOF
		CgroupPlugin=cgroup/v1
		CgroupMountpoint=/sys/fs/cgroup
		ConstrainRAMSpace=yes
		ConstrainSwapSpace=yes
		AllowedSwapSpace=0
	EOF
	export SLURM_CONF=$dir/slurm.conf
	slurmctld -f "$SLURM_CONF" -i </dev/null >>"$dir/slurmctld.log" 2>&1 || die "slurmctld failed (log: $dir/slurmctld.log)"
	slurmd -f "$SLURM_CONF" -N localhost </dev/null >>"$dir/slurmd.log" 2>&1 || die "slurmd failed (log: $dir/slurmd.log)"
	for _ in $(seq 150); do # up to 15 s; idle in ~1 s
		state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
		if [ "$state" = idle ]; then
			cat <<-EOF
				export SLURM_CONF=$SLURM_CONF
				export ORCH_TEST_SLURM=1
				export ORCH_SLURM_DIR=$dir
			EOF
			echo "slurm: cluster up (slurmctld on 127.0.0.1:$ctld_port, node localhost: $(nproc) CPUs, $mem MB), SLURM_CONF=$SLURM_CONF" >&2
			return
		fi
		sleep 0.1
	done
	stop "$dir"
	die "node did not become idle (state ${state:-none}; logs in $dir)"
}

# kill_wait PIDFILE: stop the daemon whose pid is in PIDFILE, if running.
kill_wait() {
	local pid
	[ -f "$1" ] || return 0
	pid=$(cat "$1")
	if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$1"
}

stop() {
	local dir=$1
	[ -n "$dir" ] || die "usage: $0 stop DIR (or set ORCH_SLURM_DIR)"
	[ -d "$dir" ] || return 0
	if [ -f "$dir/slurm.conf" ] && [ -f "$dir/slurmctld.pid" ]; then
		SLURM_CONF=$dir/slurm.conf scancel --full --user=root >/dev/null 2>&1 || true
	fi
	kill_wait "$dir/slurmd.pid"
	kill_wait "$dir/slurmctld.pid"
	kill_wait "$dir/munged.pid" # only if this script started it
	rm -rf "$dir/state" "$dir/spool"
}

case ${1:-} in
start)
	[ $# -eq 2 ] || die "usage: $0 start DIR"
	start "$2"
	;;
stop)
	stop "${2:-${ORCH_SLURM_DIR:-}}"
	;;
*)
	die "usage: $0 start DIR | stop [DIR]"
	;;
esac
