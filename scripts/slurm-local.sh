#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for CI and the `slurm` tests.
#
#   scripts/slurm-local.sh start    install the packages when missing, then start munged, mariadbd,
#                                   slurmdbd, slurmctld and slurmd (each only if not already running)
#   scripts/slurm-local.sh stop     cancel every job of this cluster, then stop the daemons in reverse
#                                   order, each by the process id in its pid file
#   scripts/slurm-local.sh status   which daemons run (pid), the node state and the queue
#   scripts/slurm-local.sh env      print `export SLURM_CONF=...` for clients (eval "$(... env)")
#
# Debian's Slurm 22.05 (slurm-wlm) + munge + slurmdbd on MariaDB, no systemd, no cgroups: the
# recipe of specs/environment.md section 3. All state (configuration, munge key and socket, pid
# files, logs, the MariaDB data folder, slurmctld state, spool) lives under one folder,
# $SLURM_LOCAL_DIR (default /tmp/mednext-slurm), so nothing of the system configuration is used or
# changed. Clients find the cluster through SLURM_CONF=$SLURM_LOCAL_DIR/etc/slurm.conf; the
# project's cluster profile clusters/local.toml names that path.
#
# Accounting (slurmdbd) is not optional here: without it `sacct` is disabled, and submitit never
# resolves a job that was cancelled or killed (its state stays UNKNOWN).
#
# Environment: SLURM_LOCAL_DIR, SLURM_LOCAL_CLUSTER (name, default mednext), SLURM_LOCAL_PORTS
# ("ctld slurmd dbd mariadb", default "6817 6818 6819 3306"). Runs as root (the daemons and
# apt-get need it); the slurm daemons run as root too (SlurmUser=root), munged as user munge.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/mednext-slurm}
CLUSTER=${SLURM_LOCAL_CLUSTER:-mednext}
read -r CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT <<<"${SLURM_LOCAL_PORTS:-6817 6818 6819 3306}"
PACKAGES="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
export SLURM_CONF="$DIR/etc/slurm.conf"
# Slurm 22.05 ignores AuthInfo=socket= on its slurmdbd connections, so munged must listen on the
# default socket; a munged that already answers there (the system's) is used and left alone.
MUNGE_SOCKET=/run/munge/munge.socket.2
DB_SOCKET="$DIR/dbrun/mariadbd.sock"

log() { echo "slurm-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- process ids ------------------------------------------------------------------------------
# A pid file counts only if its process is alive and has the expected command name: a stale file
# whose number was reused by another program must never make us skip a start or kill a stranger.
pid_of() {  # pid_of NAME PIDFILE -> prints the pid if that daemon runs
    local name=$1 file=$2 pid
    [[ -s $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm") == "$name" ]] || return 1
    echo "$pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...  (the probes bound their own time)
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "$what did not come up within ${limit}s (logs in $DIR/log)"
}

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, wait up to 30 s, then SIGKILL
    local name=$1 file=$2 pid i
    if ! pid=$(pid_of "$name" "$file"); then
        rm -f "$file"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.25
    done
    if [[ -d /proc/$pid ]]; then
        log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$file"
}

# ---- installation -----------------------------------------------------------------------------
install_packages() {
    local missing=0 tool
    for tool in slurmctld slurmd slurmdbd sbatch sacct munged mungekey mariadbd mariadb-install-db; do
        command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing=1
    done
    ((missing)) || return 0
    [[ $(id -u) -eq 0 ]] || die "SLURM packages missing and not root: apt-get install $PACKAGES"
    log "installing $PACKAGES"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    # policy-rc.d in containers denies the packages' own service starts: exactly what we want.
    apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null
}

# ---- configuration ----------------------------------------------------------------------------
write_config() {
    mkdir -p "$DIR"/{etc,run,log,state,spool,db,dbrun,munge}
    chmod 755 "$DIR"
    local cpus mem
    # The node must not claim more than it has, or slurmd registers it as DRAIN (low memory).
    cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
    mem=$((mem * 9 / 10))
    if [[ ! -s $DIR/etc/dbpass ]]; then
        (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/etc/dbpass")
    fi
    cat >"$SLURM_CONF.tmp" <<EOF
# Written by scripts/slurm-local.sh: single-node cluster on localhost.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=cred_expire=15
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
MinJobAge=600
KillWait=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
DefMemPerCPU=2000
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$SLURM_CONF.tmp" "$SLURM_CONF"
    # slurmdbd has no -f: it reads slurmdbd.conf beside $SLURM_CONF, and refuses a file that is
    # readable by others or not owned by SlurmUser.
    (umask 077; cat >"$DIR/etc/slurmdbd.conf.tmp" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DIR/etc/dbpass")
StorageLoc=slurm_acct_db
EOF
    )
    mv "$DIR/etc/slurmdbd.conf.tmp" "$DIR/etc/slurmdbd.conf"
    chmod 600 "$DIR/etc/slurmdbd.conf"
}

# ---- daemons ----------------------------------------------------------------------------------
munge_ok() { timeout 10 bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'" >/dev/null 2>&1; }

start_munge() {
    if pid_of munged "$DIR/run/munged.pid" >/dev/null || munge_ok; then return 0; fi
    # A key of our own: the cluster never depends on (or touches) the system's munge setup.
    if [[ ! -s $DIR/munge/munge.key ]]; then
        mungekey --create --keyfile="$DIR/munge/munge.key"
    fi
    mkdir -p "$(dirname "$MUNGE_SOCKET")"
    chown munge:munge "$(dirname "$MUNGE_SOCKET")"
    chown -R munge:munge "$DIR/munge"
    chmod 700 "$DIR/munge"
    chmod 400 "$DIR/munge/munge.key"
    touch "$DIR/log/munged.log" "$DIR/run/munged.pid"
    chown munge:munge "$DIR/log/munged.log" "$DIR/run/munged.pid"
    log "starting munged"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" </dev/null >>"$DIR/log/munged.out" 2>&1
    wait_for 20 munged munge_ok
}

db() { timeout 20 mariadb --socket="$DB_SOCKET" -u root "$@"; }

start_mariadb() {
    if ! pid_of mariadbd "$DIR/dbrun/mariadbd.pid" >/dev/null; then
        if [[ ! -d $DIR/db/mysql ]]; then
            log "initialising the MariaDB data folder"
            mariadb-install-db --user=root --datadir="$DIR/db" --auth-root-authentication-method=socket \
                >"$DIR/log/mariadb-install.log" 2>&1
        fi
        log "starting mariadbd"
        setsid mariadbd --no-defaults --user=root --datadir="$DIR/db" --socket="$DB_SOCKET" \
            --pid-file="$DIR/dbrun/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
            --log-error="$DIR/log/mariadbd.log" </dev/null >>"$DIR/log/mariadbd.out" 2>&1 &
        wait_for 60 mariadbd db -e "SELECT 1"
    fi
    local pw
    pw=$(cat "$DIR/etc/dbpass")
    db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
           CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pw';
           GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
           GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurmdbd() {
    if ! pid_of slurmdbd "$DIR/run/slurmdbd.pid" >/dev/null; then
        log "starting slurmdbd"
        slurmdbd </dev/null >>"$DIR/log/slurmdbd.out" 2>&1
    fi
    wait_for 60 slurmdbd timeout 10 sacctmgr -n list cluster
    if ! sacctmgr -n -P list cluster format=Cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
}

node_ready() {
    local state
    state=$(timeout 10 sinfo -h -N -n localhost -o %T 2>/dev/null | head -1)
    [[ $state == idle* || $state == mixed* || $state == allocated* ]]
}

start_slurm() {
    if ! pid_of slurmctld "$DIR/run/slurmctld.pid" >/dev/null; then
        log "starting slurmctld"
        slurmctld -f "$SLURM_CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1
    fi
    wait_for 30 slurmctld bash -c "timeout 10 scontrol ping | grep -q UP"
    if ! pid_of slurmd "$DIR/run/slurmd.pid" >/dev/null; then
        log "starting slurmd"
        slurmd -f "$SLURM_CONF" -N localhost </dev/null >>"$DIR/log/slurmd.out" 2>&1
    fi
    # A node left DOWN or DRAIN by an earlier unclean stop comes back here.
    local i
    for ((i = 0; i < 120; i++)); do
        node_ready && break
        if ((i % 20 == 10)); then scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true; fi
        sleep 0.25
    done
    node_ready || die "node localhost not ready: $(sinfo -h -N -o '%T %E' 2>&1) (logs in $DIR/log)"
}

cmd_start() {
    [[ $(id -u) -eq 0 ]] || die "run as root (the daemons need it)"
    install_packages
    write_config
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurm
    log "cluster '$CLUSTER' up; clients: export SLURM_CONF=$SLURM_CONF"
}

cmd_stop() {
    # Jobs first: their slurmstepd processes would outlive slurmd and keep running otherwise.
    if pid_of slurmctld "$DIR/run/slurmctld.pid" >/dev/null; then
        local ids i
        ids=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
        if [[ -n ${ids// /} ]]; then
            log "cancelling jobs: $ids"
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null || true
            for ((i = 0; i < 120; i++)); do
                [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
                sleep 0.25
            done
        fi
    fi
    stop_pid slurmd "$DIR/run/slurmd.pid"
    stop_pid slurmctld "$DIR/run/slurmctld.pid"
    stop_pid slurmdbd "$DIR/run/slurmdbd.pid"
    stop_pid mariadbd "$DIR/dbrun/mariadbd.pid"
    stop_pid munged "$DIR/run/munged.pid"
    log "stopped"
}

cmd_status() {
    local rc=0 name file pid
    for pair in munged:run/munged.pid mariadbd:dbrun/mariadbd.pid slurmdbd:run/slurmdbd.pid \
                slurmctld:run/slurmctld.pid slurmd:run/slurmd.pid; do
        name=${pair%%:*}; file=$DIR/${pair#*:}
        if pid=$(pid_of "$name" "$file"); then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s stopped\n' "$name"; rc=1
        fi
    done
    if ((rc == 0)); then
        sinfo -N -o '%N %T %c %m' || rc=1
        squeue || rc=1
    fi
    return $rc
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
