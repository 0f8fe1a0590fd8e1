#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost, for testing the fastcam Slurm
# scripts on a development or CI machine (Debian's slurm-wlm with munge).
#
# Usage: slurm/local-cluster.sh start|stop|status|install
#   install  apt-get install slurmctld slurmd slurm-client munge (if missing)
#   start    install, write /etc/slurm/slurm.conf, start munged, slurmctld and
#            slurmd, and wait until the node is idle
#   stop     cancel all jobs, then stop slurmd, slurmctld and munged by their
#            PID files, waiting for each to exit
#   status   print the daemons' state and `sinfo`; exit 0 only when all run
#
# Knobs (environment variables):
#   LOCAL_SLURM_CPUS     CPUs the node offers (default: what `slurmd -C` finds)
#   LOCAL_SLURM_MEMORY   RealMemory of the node in MB (default 1024)
#   LOCAL_SLURM_TIMEOUT  seconds to wait for a daemon or the node (default 30)
#   LOCAL_SLURM_FORCE=1  overwrite a slurm.conf that this script did not write
#
# Needs root and no systemd (the daemons are started directly). The steps and
# settings follow shared/notes/slurm-local.md (checked on Debian 12, Slurm
# 22.05): the package scripts do not start the daemons; munged refuses to run
# as root; PID 1 does not reap orphans, so daemons are stopped by PID file.
set -euo pipefail

readonly CONF_DIR=/etc/slurm
readonly CONF="$CONF_DIR/slurm.conf"
readonly MARKER="# written by fastcam slurm/local-cluster.sh"
readonly MUNGE_PID=/run/munge/munged.pid
readonly CTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID=/run/slurmd.pid
readonly LOG_DIR=/var/log/slurm
TIMEOUT="${LOCAL_SLURM_TIMEOUT:-30}"
HOST="$(hostname -s)"

die() { echo "local-cluster: $*" >&2; exit 1; }
say() { echo "local-cluster: $*"; }

require_root() {
  [[ "$(id -u)" == 0 ]] || die "needs root (it installs packages and starts daemons)"
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
      && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  require_root
  command -v apt-get >/dev/null || die "apt-get not found: install slurm-wlm and munge by hand"
  say "installing slurmctld slurmd slurm-client munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null \
    || die "apt-get install of Slurm failed"
}

# pid_alive FILE: the process named in FILE exists.
pid_alive() {
  local pid
  [[ -s "$1" ]] || return 1
  pid="$(<"$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# wait_for DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_for() {
  local what="$1" tries
  shift
  tries=$((TIMEOUT * 5))
  until "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    ((tries > 0)) || die "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}

start_munge() {
  if pid_alive "$MUNGE_PID"; then return 0; fi
  if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --force
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  wait_for "munged" bash -c 'munge -n | unmunge'
}

node_line() {
  local cpus="${LOCAL_SLURM_CPUS:-}" detected
  detected="$(slurmd -C | sed -n 1p)"
  # slurmd -C prints e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 ...
  # RealMemory=24105"; a small RealMemory keeps the node schedulable on any box.
  detected="${detected% RealMemory=*}"
  if [[ -n "$cpus" ]]; then
    # An explicit CPU count replaces the detected topology.
    detected="NodeName=$HOST CPUs=$cpus"
  fi
  echo "$detected RealMemory=${LOCAL_SLURM_MEMORY:-1024} NodeAddr=127.0.0.1 State=UNKNOWN"
}

write_conf() {
  if [[ -f "$CONF" ]] && ! grep -qxF "$MARKER" "$CONF" && [[ "${LOCAL_SLURM_FORCE:-0}" != 1 ]]; then
    die "$CONF exists and was not written by this script (set LOCAL_SLURM_FORCE=1 to overwrite it)"
  fi
  install -d "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
  cat >"$CONF" <<EOF
$MARKER
ClusterName=fastcam-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
$(node_line)
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

node_idle() {
  local state
  state="$(sinfo -h -n "$HOST" -o %T 2>/dev/null)"
  [[ "$state" == idle || "$state" == mixed || "$state" == allocated ]]
}

start() {
  require_root
  install_packages
  start_munge
  if ! pid_alive "$CTLD_PID" || ! pid_alive "$SLURMD_PID"; then
    write_conf
  fi
  if ! pid_alive "$CTLD_PID"; then
    slurmctld
    wait_for "slurmctld" scontrol ping
  fi
  if ! pid_alive "$SLURMD_PID"; then
    slurmd
  fi
  wait_for "node $HOST to become idle" node_idle
  say "running: node $HOST, $(sinfo -h -n "$HOST" -o '%c CPUs, state %T')"
}

# stop_daemon NAME PIDFILE: TERM the daemon and wait until it has exited.
stop_daemon() {
  local name="$1" file="$2" pid tries
  if ! pid_alive "$file"; then
    rm -f "$file"
    return 0
  fi
  pid="$(<"$file")"
  kill -TERM "$pid"
  tries=$((TIMEOUT * 5))
  while kill -0 "$pid" 2>/dev/null; do
    tries=$((tries - 1))
    if ((tries <= 0)); then
      say "$name (pid $pid) ignored TERM for ${TIMEOUT}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$file"
}

stop() {
  require_root
  if pid_alive "$CTLD_PID" && command -v scancel >/dev/null; then
    scancel --user=root 2>/dev/null || true
  fi
  stop_daemon slurmd "$SLURMD_PID"
  stop_daemon slurmctld "$CTLD_PID"
  stop_daemon munged "$MUNGE_PID"
  say "stopped"
}

status() {
  local rc=0 name file
  for name in munged slurmctld slurmd; do
    case "$name" in
      munged) file="$MUNGE_PID" ;;
      slurmctld) file="$CTLD_PID" ;;
      *) file="$SLURMD_PID" ;;
    esac
    if pid_alive "$file"; then
      echo "$name: running (pid $(<"$file"))"
    else
      echo "$name: stopped"
      rc=1
    fi
  done
  if ((rc == 0)); then
    sinfo
  fi
  return "$rc"
}

case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status|install" >&2; exit 2 ;;
esac
