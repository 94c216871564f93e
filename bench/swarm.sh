#!/usr/bin/env bash
# The shaped benchmark: one artifact to N hosts in network namespaces, sent by
# rookery, scp, an rsync tree and aria2c. Results: docs/benchmarks.md.
#
# NEEDS ROOT (network namespaces, veth, bridges, tc, sshd, tmpfs). Touches no existing
# interface: everything lives in namespaces named rkb-* and in 10.77.0.0/16 inside them.
#
# The cluster: a switch namespace (rkb-sw) with one bridge per datacenter (br-east,
# br-west) joined by one unshaped veth pair (the interconnect, ic-east <-> ic-west);
# an origin namespace (rkb-o, host `build`, DC east, 10.77.1.1) and one namespace per
# host (rkb-hK; hosts 1..ceil(N/2) in east at 10.77.1.(10+K), the rest in west at
# 10.77.2.(10+K); two racks per DC), each with one veth to its DC's bridge, shaped
# with `tc tbf` at C on both ends (host end = upload, bridge end = download); a
# controller namespace (rkb-ctl, 10.77.0.2, unshaped, on the east bridge) runs
# `rookery distribute` and a standalone ZooKeeper on 10.77.0.2 (distribute records
# staged versions in the store; `coordination: local` is refused with ssh hosts).
# Every host and the origin run their own sshd on port 22 of their address. The
# artifact is one file of S MiB of random bytes. Everything (namespaces, veths,
# bridges, sshd, ZooKeeper, agents, the tmpfs and the work directory under /tmp) is
# removed on exit, also on error or SIGTERM. The defaults take about 20 minutes on
# 2 cores. The script first runs `cargo build --release --bin rookery`.
#
# Methods, in this order, each timed from its start to the last host holding a
# complete copy:
#   rookery  `rookery distribute` (transport ssh, `origin: build`, pipeline sharing,
#            adaptive seeding), the controller in its own namespace; a 1 MiB
#            warm-up run first bootstraps the binary on every host so that the
#            measured run does not carry 23 MB per host
#   rookery-c  the same with `origin: controller` and the controller itself in the
#            origin namespace (the origin host is then not a member of the chain;
#            with `origin: build` the tracker that rookery starts on the origin host
#            lists every inventory host, `build` included, and `build` never
#            announces: see docs/benchmarks.md)
#   rookery-s  rookery-c with `sharing: stripes` (striped trees, one feeder per
#            stripe, default 8 stripes; SWARM_DISTRIBUTION may add `stripes: K`)
#   scp      scp from the origin to every host at once
#   rsync    the Murder-era tree: origin -> the first host of each DC (in parallel),
#            then that host -> the rest of its DC (in parallel); rsync over ssh
#   aria2c   Debian's aria2c: a seeder in the origin namespace, a leecher per host
#            (--seed-time=0), rookery's metainfo and rookery's standalone tracker
#            (which gives non-rookery clients its mesh peer list)
# After each method every copy's sha256 is compared with the source (not timed); a
# mismatch or a missing copy stops the benchmark with an error.
#
# Usage (as root, from anywhere):
#   bench/swarm.sh [--hosts N]... [--size MIB] [--rate MBIT] [--methods LIST]
#                  [--tmpfs auto|yes|no]
#   --hosts N    number of hosts (origin not counted); may be repeated; default 8 and
#                16 (env SWARM_HOSTS, space-separated)
#   --size MIB   artifact size in MiB, default 512 (env SWARM_SIZE)
#   --rate MBIT  link rate C in Mbit/s (10^6 bit/s) for every host and the origin,
#                default 400 (env SWARM_RATE)
#   --methods L  comma list of rookery,rookery-c,rookery-s,scp,rsync,aria2c (default:
#                rookery,rookery-c,scp,rsync,aria2c; env
#                SWARM_METHODS)
#   --tree F     ship a tree of F small files instead of one file (env SWARM_TREE):
#                S MiB in all, sizes spread from 0.2 to 1.8 times S/F, 100 files per
#                directory; copies are compared file by file. Only rookery and
#                rookery-c take a tree. Run once with and once without it, with the
#                same --size, to compare a tree with the same bytes as one file.
#   --kill H     rookery methods only: kill host hH's agent (SIGKILL) once a third of
#                the artifact is in its staging copy; the figure is then the slowest
#                surviving host, the victim is left out of the check (env SWARM_KILL)
#   --vanish H   as --kill H, but the agent is stopped (SIGSTOP), not killed: its
#                connections stay open, as a host's do when it loses power or its
#                network. The figure is when the last other host had its copy (its
#                staging copy renamed); the victim is then killed and the run ends
#                (env SWARM_VANISH)
#   --tmpfs M    keep the hosts' files in a tmpfs (auto: when RAM allows; default)
#                so that the disk is not what is measured; N + 1 copies' worth of it
#                is written and freed just before each method, untimed (see
#                docs/benchmarks.md: first-touch memory in a VM)
#   SWARM_KEEP_LOGS=DIR  copy the reports and logs (rookery's agent logs included)
#                there before cleaning up
#   SWARM_TBF_LATENCY=T  the longest a packet may wait in a link's tbf queue,
#                default 50ms (a deep FIFO: the results in docs/benchmarks.md)
#   SWARM_HOST_QUEUE=fifo|fair  the queue of each host's (and the origin's) upload:
#                `fifo` (default) the tbf's own FIFO, where TCP splits a host's link
#                among its connections unevenly; `fair` an htb that shares it equally
#                among the addresses the host sends to and sends small packets (ACKs,
#                requests) first, as the fq_codel of a systemd host does (this kernel
#                has no fq_codel). Downloads stay FIFO (a switch port). Costs CPU.
#   SWARM_TCP_CC=NAME  TCP congestion control in every namespace (default: the
#                machine's own, net.ipv4.tcp_congestion_control; printed with the results)
#   SWARM_DISTRIBUTION='KEY: VALUE;...'  extra `distribution:` settings for rookery's
#                playbook, e.g. 'upload_limit: 45MiB/s;download_limit: 45MiB/s'
#   SWARM_USER_RC=empty|keep  what the hosts' sshd see of root's ~/.bashrc, which bash
#                reads before every command sshd runs: `empty` (default) an empty file,
#                bind-mounted in the sshd's own mount namespace; `keep` the
#                machine's. A real host pays its rc file on its own CPU; here every
#                host's is paid on the same 2 cores. This machine's runs `pyenv
#                init` (about 100 processes): 48 commands at once over established
#                connections took 4.0 s to run `true`, 0.2 s with it empty, and the
#                agents came up over 3.4 to 7.3 s at N = 48.
#
# Prints one row per (N, method): the slowest host's time, its ratio to the physical
# bound S/C, the origin's upload (tx bytes of its veth, in copies of S), the bytes
# that crossed the interconnect (both directions, in copies of S), and the peak RSS
# of one host process (rookery: `rookery agent fetch`; aria2c: the leechers; sampled
# with ps every 200 ms; "-" for scp and rsync), and how busy the machine's CPUs were
# during the method (from /proc/stat; near 100% means the box, not the links, is
# the bound). For rookery's methods also: the seconds over which the agents came up
# (first to last "staging ready" in their logs) and `rookery simulate`'s slowest host
# for the same fleet, link, size, kill and start spread (the mean over 10 seeds),
# beside how far it is from the measured. Then the targets and which were met:
#   slowest <= 1.2 x S/C; origin upload <= 1.2 x S; cross-DC <= 1.1 x S per remote DC
#   (one remote DC here); agent peak RSS < 64 MiB; rookery >= 10x faster than scp at
#   N = 16.
# Exit status: 0 when every method delivered verified copies everywhere (targets
# missed do not fail the run), 1 otherwise.
set -euo pipefail

PROG=bench/swarm.sh
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=$here/target/release/rookery
SSHD=/usr/sbin/sshd
USER_RC=$(getent passwd root | cut -d: -f6)/.bashrc
P=rkb # prefix of every namespace

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
say() { printf '%s\n' "$*"; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# --- arguments ---------------------------------------------------------------------

read -r -a HOSTS <<<"${SWARM_HOSTS:-}"
SIZE=${SWARM_SIZE:-512}
RATE=${SWARM_RATE:-400}
METHODS=${SWARM_METHODS:-rookery,rookery-c,scp,rsync,aria2c}
TMPFS=auto
TREE=${SWARM_TREE:-0}
KILL=${SWARM_KILL:-0}
KILL_SIGNAL=KILL
if [[ -n ${SWARM_VANISH:-} ]]; then KILL=$SWARM_VANISH KILL_SIGNAL=STOP; fi
given_hosts=()
while (($#)); do
    case $1 in
    --hosts) given_hosts+=("${2:?--hosts needs a number}"); shift 2 ;;
    --size) SIZE=${2:?--size needs MiB}; shift 2 ;;
    --rate) RATE=${2:?--rate needs Mbit/s}; shift 2 ;;
    --methods) METHODS=${2:?--methods needs a list}; shift 2 ;;
    --tmpfs) TMPFS=${2:?--tmpfs needs auto, yes or no}; shift 2 ;;
    --tree) TREE=${2:?--tree needs a number of files}; shift 2 ;;
    --kill) KILL=${2:?--kill needs a host number} KILL_SIGNAL=KILL; shift 2 ;;
    --vanish) KILL=${2:?--vanish needs a host number} KILL_SIGNAL=STOP; shift 2 ;;
    -h | --help)
        awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done
((${#given_hosts[@]})) && HOSTS=("${given_hosts[@]}")
((${#HOSTS[@]})) || HOSTS=(8 16)
for n in "${HOSTS[@]}"; do
    [[ $n =~ ^[0-9]+$ ]] && ((n >= 2 && n <= 200)) || die "--hosts must be 2..200, not '$n'"
done
[[ $SIZE =~ ^[0-9]+$ ]] && ((SIZE >= 1)) || die "--size must be a whole number of MiB"
[[ $KILL =~ ^[0-9]+$ ]] || die "--kill must be a host number"
((KILL == 0 || TREE == 0)) || die "--kill watches one file's transfer; not with --tree"
[[ $RATE =~ ^[0-9]+$ ]] && ((RATE >= 1)) || die "--rate must be a whole number of Mbit/s"
IFS=, read -r -a METHOD_LIST <<<"$METHODS"
for m in "${METHOD_LIST[@]}"; do
    case $m in rookery | rookery-c | rookery-s | scp | rsync | aria2c) ;; *) die "unknown method '$m'" ;; esac
done
case $TMPFS in auto | yes | no) ;; *) die "--tmpfs must be auto, yes or no" ;; esac
case ${SWARM_HOST_QUEUE:-fifo} in fifo | fair) ;; *) die "SWARM_HOST_QUEUE must be fifo or fair" ;; esac
case ${SWARM_USER_RC:-empty} in empty | keep) ;; *) die "SWARM_USER_RC must be empty or keep" ;; esac
[[ $TREE =~ ^[0-9]+$ ]] || die "--tree must be a number of files"
if ((TREE > 0)); then
    for m in "${METHOD_LIST[@]}"; do
        case $m in rookery | rookery-c | rookery-s) ;; *) die "--tree: method '$m' ships one file; use --methods rookery,rookery-c,rookery-s" ;; esac
    done
fi

(($(id -u) == 0)) || die "needs root (network namespaces, tc, sshd); run it with sudo"
for tool in ip tc ssh scp ssh-keygen rsync aria2c java sha256sum python3 setsid; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install iproute2 openssh-client openssh-server rsync aria2 zookeeper python3)"
done
[[ -x $SSHD ]] || die "$SSHD not found (apt-get install openssh-server)"
[[ -f /usr/share/java/zookeeper.jar ]] || die "ZooKeeper not found (apt-get install zookeeper)"
if ip netns list | grep -q "^$P-"; then
    die "namespaces $P-* already exist (another run, or a killed one: ip netns del each)"
fi

TCP_CC=${SWARM_TCP_CC:-$(sysctl -n net.ipv4.tcp_congestion_control)}
# A namespace may only pick an algorithm of tcp_allowed_congestion_control.
grep -qw -- "$TCP_CC" /proc/sys/net/ipv4/tcp_allowed_congestion_control ||
    die "SWARM_TCP_CC=$TCP_CC: namespaces may use only $(cat /proc/sys/net/ipv4/tcp_allowed_congestion_control) (add it: sysctl -w net.ipv4.tcp_allowed_congestion_control='$(cat /proc/sys/net/ipv4/tcp_allowed_congestion_control) $TCP_CC')"

log "building rookery (cargo build --release --bin rookery)"
(cd "$here" && cargo build --release --quiet --bin rookery) || die "cargo build failed"

# --- work directory and cleanup ----------------------------------------------------

W=$(mktemp -d /tmp/rookery-swarm.XXXXXX)
chmod 755 "$W"
: >"$W/empty_rc"
MOUNTED=0
SAMPLER=""
keep_logs() {
    [[ -n ${SWARM_KEEP_LOGS:-} ]] || return 0
    mkdir -p "$SWARM_KEEP_LOGS"
    cp "$W"/*.json "$W"/*.log "$W"/*.err "$W"/*.yml "$SWARM_KEEP_LOGS"/ 2>/dev/null || true
    [[ -d $D/hosts ]] || return 0
    find "$D/hosts" -name '*.log' -path '*/.rookery/*' | while read -r f; do
        cp "$f" "$SWARM_KEEP_LOGS/$(echo "${f#"$D"/hosts/}" | tr / _)"
    done || true
}
cleanup() {
    local rc=$? ns pids
    trap - EXIT INT TERM
    set +e
    [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null || true
    keep_logs
    for ns in $(ip netns list 2>/dev/null | awk -v p="^$P-" '$1 ~ p { print $1 }'); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -n $pids ]] && kill -TERM $pids 2>/dev/null || true
    done
    sleep 0.5
    for ns in $(ip netns list 2>/dev/null | awk -v p="^$P-" '$1 ~ p { print $1 }'); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    if ((MOUNTED)); then umount "$W/data" 2>/dev/null || umount -l "$W/data" || true; fi
    rm -rf "$W"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Room for the source, one method's copies for the largest N, and the binaries.
maxn=0
for n in "${HOSTS[@]}"; do ((n > maxn)) && maxn=$n; done
need_mib=$(((maxn + 2) * SIZE + 64 * (maxn + 2) + 512))
avail_mib=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
mkdir -p "$W/data"
if [[ $TMPFS == yes ]] || { [[ $TMPFS == auto ]] && ((avail_mib > need_mib + 4096)); }; then
    # Memory is written just before each method (touch_memory): in a VM the first
    # write to a guest page can cost a fault on the host (here, a Firecracker guest:
    # 0.3 to 0.6 GB/s cold, against 1.4 to 2.2 GB/s for pages used just before).
    # Real hosts' page caches sit on memory in use. (Huge pages are worse here: a
    # freed 2 MiB page is handed back to the host at once.)
    mount -t tmpfs -o "size=${need_mib}m,mode=755" tmpfs "$W/data"
    STORAGE="tmpfs (${need_mib} MiB, touched before each method)"
    MOUNTED=1
else
    STORAGE="disk under $W"
fi
D=$W/data
log "work directory $W, files on $STORAGE"

# The artifact, and a small one for the warm-up run that bootstraps the agents.
mkdir -p "$D/src" "$D/warm" "$W/tmp"
if ((TREE > 0)); then
    python3 - "$D/src" "$SIZE" "$TREE" <<'PY'
import os, random, sys
root, size, files = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3])
rng = random.Random(1)
mean = size / files
sizes = [max(1, int(mean * rng.uniform(0.2, 1.8))) for _ in range(files)]
sizes[-1] = max(1, sizes[-1] + size - sum(sizes))
for i, n in enumerate(sizes):
    d = os.path.join(root, f"d{i // 100:04d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.bin"), "wb") as f:
        f.write(os.urandom(n))
PY
else
    head -c "$((SIZE << 20))" /dev/urandom >"$D/src/blob"
fi
head -c 1048576 /dev/urandom >"$D/warm/warm.bin"
# tree_sum DIR: one sha256 over every file's path and sha256, in path order.
tree_sum() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1); }
if ((TREE > 0)); then SUM=$(tree_sum "$D/src"); else SUM=$(sha256sum "$D/src/blob" | cut -d' ' -f1); fi
ssh-keygen -q -t ed25519 -N '' -C rookery-swarm -f "$W/id_ed25519"
mkdir -p /run/sshd && chmod 755 /run/sshd

# --- the cluster -------------------------------------------------------------------

# Fills NAMES, NS, ADDR, DC, RACK for N hosts: index 0 is the origin.
layout() {
    local n=$1 k i east
    east=$(((n + 1) / 2))
    NAMES=(build) NS=("$P-o") ADDR=(10.77.1.1) DC=(east) RACK=(build)
    for ((k = 1; k <= n; k++)); do
        NAMES+=("h$k") NS+=("$P-h$k")
        if ((k <= east)); then
            i=$k DC+=(east) ADDR+=("10.77.1.$((10 + k))")
        else
            i=$((k - east)) DC+=(west) ADDR+=("10.77.2.$((10 + k))")
        fi
        RACK+=("${DC[k]:0:1}$(((i - 1) % 2 + 1))")
    done
}

shape() { # NS DEV
    ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "${RATE}mbit" burst 256kb latency "${SWARM_TBF_LATENCY:-50ms}"
}

# shape_fair NS DEV: a host's upload at C, shared fairly among the peers it sends to
# (SWARM_HOST_QUEUE=fair): an htb class per other address of the cluster (equal
# quantum, each may take the whole link when alone), so that eight connections out
# get an eighth each, as a host's own fq_codel queue (systemd's default) gives them.
# The FIFO of `tbf` instead lets TCP split the link unevenly.
shape_fair() {
    local dev=$2 k q=$((RATE * 1000000 / 8 / 20)) # a class's queue: 50 ms of the link, in bytes
    # leaf CLASS KBIT PRIO: a class under the link, its own queue, taking the whole
    # link when alone; equal quanta share it equally among the busy ones.
    leaf() {
        echo "class add dev $dev parent 1:1 classid 1:$1 htb rate ${2}kbit ceil ${RATE}mbit quantum 1514 prio $3"
        echo "qdisc add dev $dev parent 1:$1 bfifo limit $q"
    }
    {
        echo "qdisc add dev $dev root handle 1: htb default 2"
        echo "class add dev $dev parent 1: classid 1:1 htb rate ${RATE}mbit ceil ${RATE}mbit burst 256kb cburst 256kb quantum 1514"
        leaf 2 $((RATE * 1000 / 64)) 1 # anything not matched below
        # Small packets (ACKs, requests, HAVEs: under 128 bytes) first, as fq_codel
        # serves sparse flows first: without it a pair of hosts that feed each other
        # (rack-mates in two stripes) had the ACKs of one direction queued behind the
        # data of the other, and that direction ran at a third of its share.
        leaf 3 $((RATE * 1000 / 8)) 0
        echo "filter add dev $dev parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff match u16 0x0000 0xff80 at 2 flowid 1:3"
        for k in "${!ADDR[@]}"; do
            leaf $((k + 16)) $((RATE * 1000 / 64)) 1
            echo "filter add dev $dev parent 1: protocol ip prio 2 u32 match ip dst ${ADDR[k]}/32 flowid 1:$((k + 16))"
        done
    } | ip netns exec "$1" tc -batch -
}

# ns_add NS: a namespace with loopback up and IPv6 off (no stray router
# solicitations or DAD in the counters).
ns_add() {
    ip netns add "$1"
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
        net.ipv4.tcp_congestion_control="$TCP_CC"
    ip -n "$1" link set lo up
}

up_cluster() {
    local n=$1 k ns
    layout "$n"
    ns_add "$P-sw"
    for br in br-east br-west; do
        ip -n "$P-sw" link add "$br" type bridge
        ip -n "$P-sw" link set "$br" up
    done
    # The interconnect: unshaped, counted.
    ip -n "$P-sw" link add ic-east type veth peer name ic-west
    ip -n "$P-sw" link set ic-east master br-east up
    ip -n "$P-sw" link set ic-west master br-west up
    # The controller: unshaped, on the east bridge.
    ns_add "$P-ctl"
    ip -n "$P-sw" link add v-ctl type veth peer name eth0 netns "$P-ctl"
    ip -n "$P-sw" link set v-ctl master br-east up
    ip -n "$P-ctl" addr add 10.77.0.2/16 dev eth0
    ip -n "$P-ctl" link set eth0 up
    for ((k = 0; k <= n; k++)); do
        ns=${NS[k]}
        ns_add "$ns"
        ip -n "$P-sw" link add "v-${NAMES[k]}" type veth peer name eth0 netns "$ns"
        ip -n "$P-sw" link set "v-${NAMES[k]}" master "br-${DC[k]}" up
        ip -n "$ns" addr add "${ADDR[k]}/16" dev eth0
        ip -n "$ns" link set eth0 up
        if [[ ${SWARM_HOST_QUEUE:-fifo} == fair ]]; then
            shape_fair "$ns" eth0 # upload
        else
            shape "$ns" eth0 # upload
        fi
        shape "$P-sw" "v-${NAMES[k]}" # download
    done
    start_sshds "$n"
    start_zookeeper
    write_inventory "$n"
}

start_sshds() {
    local n=$1 k hd
    : >"$W/known_hosts"
    {
        say "Host 10.77.*"
        say "    User root"
        say "    IdentityFile $W/id_ed25519"
        say "    IdentitiesOnly yes"
        say "    UserKnownHostsFile $W/known_hosts"
        say "    GlobalKnownHostsFile /dev/null"
        say "    StrictHostKeyChecking yes"
        say "    BatchMode yes"
        say "    LogLevel ERROR"
    } >"$W/ssh_config"
    for ((k = 0; k <= n; k++)); do
        hd=$W/sshd/${NAMES[k]}
        mkdir -p "$hd" "$D/hosts/${NAMES[k]}"
        [[ -f $hd/key ]] || ssh-keygen -q -t ed25519 -N '' -C "${NAMES[k]}.swarm" -f "$hd/key"
        cp "$W/id_ed25519.pub" "$hd/authorized_keys"
        cat >"$hd/sshd_config" <<EOF
ListenAddress ${ADDR[k]}:22
HostKey $hd/key
PidFile $hd/sshd.pid
AuthorizedKeysFile $hd/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
PrintMotd no
UseDNS no
MaxStartups 200:30:400
MaxSessions 50
EOF
        printf '%s %s\n' "${ADDR[k]}" "$(cut -d' ' -f1,2 "$hd/key.pub")" >>"$W/known_hosts"
        if [[ ${SWARM_USER_RC:-empty} == empty && -f $USER_RC ]]; then
            ip netns exec "${NS[k]}" unshare -m --propagation private sh -c \
                'mount --bind "$1" "$2" && exec "$3" -f "$4" -E "$5"' sh \
                "$W/empty_rc" "$USER_RC" "$SSHD" "$hd/sshd_config" "$hd/sshd.log"
        else
            ip netns exec "${NS[k]}" "$SSHD" -f "$hd/sshd_config" -E "$hd/sshd.log"
        fi
    done
    for ((k = 0; k <= n; k++)); do
        local t=0
        until ip netns exec "$P-ctl" ssh -F "$W/ssh_config" -o ConnectTimeout=2 "${ADDR[k]}" true 2>/dev/null; do
            ((++t < 50)) || die "sshd of ${NAMES[k]} (${ADDR[k]}) does not answer; log: $(tail -3 "$W/sshd/${NAMES[k]}/sshd.log")"
            sleep 0.2
        done
    done
}

ZK_PORT=2181
start_zookeeper() {
    local zk=$W/zk cp=/usr/share/java/zookeeper.jar j t=0
    mkdir -p "$zk/conf" "$zk/data"
    for j in slf4j-log4j12.jar slf4j-reload4j.jar; do [[ -f /usr/share/java/$j ]] && cp+=:/usr/share/java/$j && break; done
    for j in log4j-1.2.jar reload4j.jar; do [[ -f /usr/share/java/$j ]] && cp+=:/usr/share/java/$j && break; done
    cat >"$zk/conf/zoo.cfg" <<EOF
tickTime=2000
dataDir=$zk/data
clientPort=$ZK_PORT
clientPortAddress=10.77.0.2
admin.enableServer=false
4lw.commands.whitelist=ruok
maxClientCnxns=0
EOF
    printf 'log4j.rootLogger=WARN, C\nlog4j.appender.C=org.apache.log4j.ConsoleAppender\nlog4j.appender.C.layout=org.apache.log4j.PatternLayout\n' >"$zk/conf/log4j.properties"
    ip netns exec "$P-ctl" setsid java -cp "$zk/conf:$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain \
        "$zk/conf/zoo.cfg" </dev/null >"$zk/zookeeper.log" 2>&1 &
    # shellcheck disable=SC2016
    until [[ $(ip netns exec "$P-ctl" timeout 2 bash -c 'exec 3<>/dev/tcp/10.77.0.2/$0 && printf ruok >&3 && cat <&3' "$ZK_PORT" 2>/dev/null) == imok ]]; do
        ((++t < 150)) || die "ZooKeeper did not start; log: $(tail -5 "$zk/zookeeper.log")"
        sleep 0.2
    done
}

# inventory.yml for rookery (origin: build); ctl.yml (origin: controller, no build
# host) for rookery-c, whose controller runs in the origin namespace, and for the
# aria2c run, where the origin namespace is the tracker's "controller" (so that its
# seeder needs no host= name).
write_inventory() {
    local n=$1 k dc rack file
    for file in inventory ctl; do
        {
            say "cluster: swarm"
            say "transport:"
            say "  ssh:"
            say "    known_hosts: $W/known_hosts"
            say "    command_timeout: 10m"
            say "coordination:"
            say "  zookeeper: {connect: \"10.77.0.2:$ZK_PORT\", root: /rookery/swarm}"
            [[ $file == inventory ]] && say "origin: build"
            say "defaults:"
            say "  ssh: {user: root, port: 22, key: $W/id_ed25519}"
            say "datacenters:"
            for dc in east west; do
                say "  $dc:"
                say "    racks:"
                for rack in build "${dc:0:1}1" "${dc:0:1}2"; do
                    [[ $rack == build && $file == ctl ]] && continue
                    local header=0
                    for ((k = 0; k <= n; k++)); do
                        [[ ${DC[k]} == "$dc" && ${RACK[k]} == "$rack" ]] || continue
                        if ((!header)); then
                            say "      $rack:"
                            say "        hosts:"
                            header=1
                        fi
                        if ((k == 0)); then
                            say "          build: {address: ${ADDR[k]}, root: $D/hosts/build}"
                        else
                            say "          ${NAMES[k]}: {address: ${ADDR[k]}, root: $D/hosts/${NAMES[k]}, services: [app]}"
                        fi
                    done
                done
            done
        } >"$W/$file.yml"
    done
}

down_cluster() {
    local ns pids
    keep_logs
    for ns in $(ip netns list | awk -v p="^$P-" '$1 ~ p { print $1 }'); do
        pids=$(ip netns pids "$ns" || true)
        [[ -n $pids ]] && kill -TERM $pids 2>/dev/null || true
    done
    sleep 1
    for ns in $(ip netns list | awk -v p="^$P-" '$1 ~ p { print $1 }'); do
        pids=$(ip netns pids "$ns" || true)
        [[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
        ip netns del "$ns"
    done
    rm -rf "$D/hosts" "$W/sshd" "$W/zk"
    # The next cluster's hosts are new: they need the binary again before a measured
    # run. (Forgetting this put 16 binary uploads, 8 of them across the
    # interconnect, into every N = 16 `rookery` row until commit 1584f7c.)
    WARM=0
}

# --- measuring ---------------------------------------------------------------------

origin_tx() { ip netns exec "$P-o" cat /sys/class/net/eth0/statistics/tx_bytes; }
cross_dc() {
    ip netns exec "$P-sw" sh -c 'echo $(( $(cat /sys/class/net/ic-east/statistics/tx_bytes) + $(cat /sys/class/net/ic-east/statistics/rx_bytes) ))'
}
now() { date +%s.%N; }
# cpu_ticks: "busy total" jiffies of the whole machine, from /proc/stat.
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }

# start_sampler PATTERN: every 500 ms, the largest peak RSS (VmHWM, KiB) among
# processes whose command line matches PATTERN (a Python regex), written to $W/rss.
# VmHWM is the kernel's own high-water mark, so the sampling interval cannot miss a
# peak (only a process that lives less than 500 ms), and one Python process reading
# /proc costs the measured system far less than `ps` five times a second (which
# took 2 to 5% of the CPU during a run).
start_sampler() {
    : >"$W/rss"
    # The pattern goes in the environment: on the command line it would match itself
    # (and wait_gone would wait for the sampler).
    SAMPLE_PATTERN=$1 python3 - "$W/rss" <<'PY' &
import os, re, sys, time
pattern, out = re.compile(os.environ["SAMPLE_PATTERN"]), sys.argv[1]
peak = 0
while True:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            if not pattern.search(cmd):
                continue
            with open(f"/proc/{pid}/status") as f:
                hwm = next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), 0)
        except OSError:
            continue
        if hwm > peak:
            peak = hwm
            with open(out, "w") as f:
                print(peak, file=f)
    time.sleep(0.5)
PY
    SAMPLER=$!
}
stop_sampler() {
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=""
    local kib
    kib=$(cat "$W/rss" 2>/dev/null || true)
    echo "${kib:-0}"
}

# verify METHOD FILE...: every file exists and has the source's sha256 (with --tree:
# every FILE is a release directory holding the source's tree).
verify() {
    local method=$1 bad d s
    shift
    if ((TREE > 0)); then
        bad=$(for d in "$@"; do
            s=$(tree_sum "$d" 2>/dev/null); [ "$s" = "$SUM" ] || echo "$d: ${s:-missing}"
        done)
    else
        bad=$(printf '%s\0' "$@" | xargs -0 -P 2 -n 4 sh -c 'for f; do
        s=$(sha256sum "$f" 2>/dev/null | cut -d" " -f1); [ "$s" = "$0" ] || echo "$f: ${s:-missing}"
    done' "$SUM" || true)
    fi
    if [[ -n $bad ]]; then
        printf '%s\n' "$bad" >&2
        die "$method: copies missing or corrupt (expected sha256 $SUM)"
    fi
}

# wait_gone PATTERN: until no process matching PATTERN runs in our namespaces (60 s).
wait_gone() {
    local t=0
    while pgrep -f "$1" >/dev/null; do
        ((++t < 300)) || {
            log "still running after 60 s: $(pgrep -af "$1" | head -3)"
            return 0
        }
        sleep 0.2
    done
}

RESULTS=()
# Writes and frees as much tmpfs memory as the method is about to fill (N copies),
# just before it starts: this VM's host takes idle guest memory back within minutes
# (measured: writing 4 GiB took 14.3 s cold, then 3.1 s right after), and the cost
# would otherwise land on whichever host process writes first.
touch_memory() { # N
    ((MOUNTED)) || return 0
    dd if=/dev/zero of="$D/.touch" bs=1M count="$(($1 * SIZE + SIZE))" status=none
    rm -f "$D/.touch"
}

cpu_busy() { # "BUSY0 TOTAL0" "BUSY1 TOTAL1": percent of all cores busy in between
    local b0 t0 b1 t1
    read -r b0 t0 <<<"$1"
    read -r b1 t1 <<<"$2"
    echo $(((b1 - b0) * 100 / (t1 - t0 > 0 ? t1 - t0 : 1)))
}
# record N METHOD SECONDS ORIGIN_BYTES CROSS_BYTES RSS_KIB|- CPU_PERCENT [SPREAD MODEL]
# (SPREAD: seconds over which the agents came up; MODEL: `rookery simulate`'s slowest
# host for the same case and spread; both rookery methods only)
record() {
    local row=("$@")
    ((${#row[@]} == 9)) || row+=(- -)
    RESULTS+=("${row[*]}")
    python3 - "$SIZE" "$RATE" "${row[@]}" <<'PY' >&2
import sys
size, rate, n, m, secs, up, cross, rss, cpu, spread, model = sys.argv[1:]
s = int(size) << 20
bound = s * 8 / (int(rate) * 1e6)
rss = "-" if rss == "-" else f"{int(rss) / 1024:.1f} MiB"
print(f"  -> {m} N={n}: {float(secs):.1f} s ({float(secs) / bound:.2f} x S/C), origin {int(up) / s:.2f} x S, cross-DC {int(cross) / s:.2f} x S, peak RSS {rss}, CPU {cpu}% busy")
if model != "-":
    off = (float(model) - float(secs)) / float(secs) * 100
    print(f"     agents came up over {float(spread):.1f} s; rookery simulate with that spread: {float(model):.1f} s ({off:+.0f}% of the measured)")
PY
}

# agents_spread N VERSION: seconds from the first to the last agent of the last run of
# VERSION to come up ("staging ready" in each agent's log).
agents_spread() {
    python3 - "$D/hosts" "$1" "$2" <<'PY'
import datetime, sys
root, n, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ups = []
for k in range(1, n + 1):
    try:
        lines = [l for l in open(f"{root}/h{k}/srv/app/.rookery/fetch-{version}.log") if "staging ready" in l]
    except OSError:
        continue
    if lines:
        ups.append(datetime.datetime.fromisoformat(lines[-1].split("Z")[0]))
print(f"{(max(ups) - min(ups)).total_seconds():.2f}" if ups else "0")
PY
}

# model_seconds N METHOD SPREAD: `rookery simulate`'s slowest host for this run (the
# bench's fleet, link, size, kill and agents' start spread), the mean over 10 seeds
# (the seed draws when each agent comes up).
model_seconds() {
    local topology=chain seed kill=()
    [[ $2 == rookery-s ]] && topology=stripes
    ((KILL > 0)) && kill=(--kill "$KILL")
    for seed in $(seq 1 10); do
        "$BIN" --json simulate --hosts "$1" --datacenters 2 --racks 2 --size "${SIZE}MiB" --link "${RATE}Mbit/s" \
            --topology "$topology" --start-spread "$3" --seed "$seed" "${kill[@]}" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["percentiles"]["max"])'
    done | python3 -c 'import sys; v=[float(l) for l in sys.stdin]; print(f"{sum(v)/len(v):.2f}")'
}

# --- methods -----------------------------------------------------------------------

playbook() { # FILE SOURCE
    cat >"$1" <<EOF
name: swarm
artifact: {source: $2, destination: /srv/app}
distribution:
  seed_mode: adaptive
  seed_window: 5s
  seed_window_max: 1m
$(tr ';' '\n' <<<"${SWARM_DISTRIBUTION:-}" | sed -n 's/^ *\(..*\)$/  \1/p')
services:
  app: {start: "true"}
EOF
}

# The warm-up: once per cluster, a 1 MiB artifact, so that the measured runs find the
# rookery binary on every host (the bootstrap uploads 23 MB per host once).
WARM=0
warm_up() {
    ((WARM)) && return 0
    playbook "$W/warm.yml" "$D/warm"
    log "rookery: warm-up run (bootstraps the binary on the hosts and the origin)"
    if ! ip netns exec "$P-ctl" env TMPDIR="$W/tmp" "$BIN" --json -q distribute -i "$W/inventory.yml" "$W/warm.yml" >"$W/warm.json" 2>"$W/warm.err"; then
        cat "$W/warm.err" "$W/warm.json" >&2
        die "rookery: the warm-up distribute failed"
    fi
    wait_gone "$D/hosts/.*rookery agent (fetch|seed)"
    WARM=1
}

# rookery: `origin: build`, the controller in its own namespace (what the inventory
# docs describe for a build host).
# Both set the chain: `sharing: auto` (the default) would take the trees from 64
# hosts.
run_rookery() { SWARM_DISTRIBUTION="sharing: pipeline;${SWARM_DISTRIBUTION:-}" rookery_run "$1" rookery "$P-ctl" "$W/inventory.yml"; }
# rookery-c: `origin: controller`, the controller itself in the origin namespace.
run_rookery-c() { SWARM_DISTRIBUTION="sharing: pipeline;${SWARM_DISTRIBUTION:-}" rookery_run "$1" rookery-c "$P-o" "$W/ctl.yml"; }
# rookery-s: rookery-c with striped trees instead of the chain.
run_rookery-s() { SWARM_DISTRIBUTION="sharing: stripes;${SWARM_DISTRIBUTION:-}" rookery_run "$1" rookery-s "$P-o" "$W/ctl.yml"; }

rookery_run() { # N METHOD NAMESPACE INVENTORY
    local n=$1 method=$2 ns=$3 inv=$4 k t0 t1 up0 cx0 up1 cx1 rss version spread files=() rc=0
    warm_up
    playbook "$W/bench.yml" "$D/src"
    log "$method: measured run (controller in $ns, inventory ${inv##*/})"
    start_sampler "$D/hosts/.*rookery agent fetch"
    touch_memory "$1"
    up0=$(origin_tx) cx0=$(cross_dc) c0=$(cpu_ticks) t0=$(now)
    local killer=
    if ((KILL > 0)); then
        # A third of the artifact in the victim's staging copy, then SIGKILL.
        (
            staged="$D/hosts/h$KILL/srv/app/releases"
            until (($(du -s --block-size=1 "$staged"/.staging-*/blob 2>/dev/null | awk '{s+=$1} END {print s+0}') >= SIZE * 1048576 / 3)); do
                sleep 0.05
            done
            pkill -"$KILL_SIGNAL" -f "rookery agent fetch .*--host h$KILL " || true
            log "$method: $([[ $KILL_SIGNAL == KILL ]] && echo killed || echo stopped) h$KILL's agent at a third of its transfer ($(echo "$(now) - $t0" | bc) s in)"
            if [[ $KILL_SIGNAL == STOP ]]; then
                # Every other host done: its staging copy seen, then renamed (bash
                # builtins only, so the watch costs the measured run nothing).
                local k seen=() done=0
                while ((done < n - 1)); do
                    done=0
                    for ((k = 1; k <= n; k++)); do
                        ((k == KILL)) && continue
                        if compgen -G "$D/hosts/h$k/srv/app/releases/.staging-*" >/dev/null; then
                            seen[k]=1
                        elif [[ -n ${seen[k]:-} ]]; then
                            done=$((done + 1))
                        fi
                    done
                    sleep 0.05
                done
                now >"$W/$method.done"
                pkill -KILL -f "rookery agent fetch .*--host h$KILL " || true
                log "$method: every other host had its copy $(echo "$(cat "$W/$method.done") - $t0" | bc) s in; killed h$KILL's agent"
            fi
        ) &
        killer=$!
    fi
    ip netns exec "$ns" env TMPDIR="$W/tmp" "$BIN" --json -q distribute -i "$inv" "$W/bench.yml" >"$W/$method.json" 2>"$W/$method.err" || rc=$?
    t1=$(now) c1=$(cpu_ticks) up1=$(origin_tx) cx1=$(cross_dc)
    [[ -n $killer ]] && { kill "$killer" 2>/dev/null || true; wait "$killer" 2>/dev/null || true; }
    # A vanished host: the figure is when the others were done, not when it was killed.
    if [[ $KILL_SIGNAL == STOP && -s $W/$method.done ]]; then t1=$(cat "$W/$method.done"); fi
    # With a host killed on purpose, exit 4 (some hosts failed) is the expected end,
    # as long as the victim is the only host that failed.
    if ((KILL > 0 && rc == 4)) && python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); bad=[h["host"] for h in r["hosts"] if not h["ok"]]; sys.exit(0 if bad == ["h" + sys.argv[2]] else 1)' "$W/$method.json" "$KILL"; then
        rc=0
    fi
    if ((rc != 0)); then
        cat "$W/$method.err" >&2
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); [print(h["host"], h.get("error")) for h in r["hosts"] if not h["ok"]]' "$W/$method.json" >&2 || cat "$W/$method.json" >&2
        die "$method: rookery distribute exited with status $rc"
    fi
    version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$W/$method.json")
    python3 - "$W/$method.json" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1]))
hs = r["hosts"]
print(f"  rookery report: {r['seconds']:.1f} s in all, slowest agent {max(h['seconds'] for h in hs if h['ok']):.1f} s, "
      f"origin seeder uploaded {r['origin_uploaded_bytes'] / r['artifact_bytes']:.2f} copies, "
      f"from origin {sum(h['bytes_from_origin'] for h in hs) / r['artifact_bytes']:.2f}, "
      f"from peers {sum(h['bytes_from_peers'] for h in hs) / r['artifact_bytes']:.2f} copies")
PY
    for ((k = 1; k <= n; k++)); do
        ((k == KILL)) && continue
        if ((TREE > 0)); then files+=("$D/hosts/h$k/srv/app/releases/$version"); else files+=("$D/hosts/h$k/srv/app/releases/$version/blob"); fi
    done
    verify "$method" "${files[@]}"
    # The agents seed on after the command returns: their peak RSS counts until they exit.
    wait_gone "$D/hosts/.*rookery agent (fetch|seed)"
    rss=$(stop_sampler)
    spread=$(agents_spread "$n" "$version")
    record "$n" "$method" "$(echo "$t1 - $t0" | bc)" $((up1 - up0)) $((cx1 - cx0)) "$rss" "$(cpu_busy "$c0" "$c1")" \
        "$spread" "$(model_seconds "$n" "$method" "$spread")"
    # The next run of the same artifact must transfer it again.
    for ((k = 1; k <= n; k++)); do rm -rf "$D/hosts/h$k/srv/app/releases/$version" "$D/hosts/h$k/srv/app/releases"/.staging-*; done
}

run_scp() {
    local n=$1 k t0 t1 up0 cx0 up1 cx1 files=() fail=0 pids=()
    log "scp: origin -> $n hosts in parallel"
    for ((k = 1; k <= n; k++)); do mkdir -p "$D/hosts/h$k/scp"; done
    touch_memory "$1"
    up0=$(origin_tx) cx0=$(cross_dc) c0=$(cpu_ticks) t0=$(now)
    for ((k = 1; k <= n; k++)); do
        ip netns exec "$P-o" scp -q -F "$W/ssh_config" "$D/src/blob" "${ADDR[k]}:$D/hosts/h$k/scp/blob" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || fail=1; done
    t1=$(now) c1=$(cpu_ticks) up1=$(origin_tx) cx1=$(cross_dc)
    ((fail == 0)) || die "scp: a copy failed"
    for ((k = 1; k <= n; k++)); do files+=("$D/hosts/h$k/scp/blob"); done
    verify scp "${files[@]}"
    record "$n" scp "$(echo "$t1 - $t0" | bc)" $((up1 - up0)) $((cx1 - cx0)) - "$(cpu_busy "$c0" "$c1")"
    for ((k = 1; k <= n; k++)); do rm -rf "$D/hosts/h$k/scp"; done
}

# One DC's branch of the rsync tree: origin -> FIRST, then FIRST -> REST in parallel.
rsync_branch() { # FIRST REST...
    local first=$1 k pids=() fail=0
    shift
    ip netns exec "$P-o" rsync -a -e "ssh -F $W/ssh_config" "$D/src/blob" "${ADDR[first]}:$D/hosts/h$first/rsync/" || return 1
    for k in "$@"; do
        ip netns exec "${NS[first]}" rsync -a -e "ssh -F $W/ssh_config" "$D/hosts/h$first/rsync/blob" "${ADDR[k]}:$D/hosts/h$k/rsync/" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || fail=1; done
    return $fail
}

run_rsync() {
    local n=$1 k t0 t1 up0 cx0 up1 cx1 files=() east=() west=() fail=0 pe pw
    log "rsync tree: origin -> first host of each DC -> the rest of its DC"
    for ((k = 1; k <= n; k++)); do
        mkdir -p "$D/hosts/h$k/rsync"
        if [[ ${DC[k]} == east ]]; then east+=("$k"); else west+=("$k"); fi
    done
    touch_memory "$1"
    up0=$(origin_tx) cx0=$(cross_dc) c0=$(cpu_ticks) t0=$(now)
    rsync_branch "${east[@]}" &
    pe=$!
    rsync_branch "${west[@]}" &
    pw=$!
    wait "$pe" || fail=1
    wait "$pw" || fail=1
    t1=$(now) c1=$(cpu_ticks) up1=$(origin_tx) cx1=$(cross_dc)
    ((fail == 0)) || die "rsync: a copy failed"
    for ((k = 1; k <= n; k++)); do files+=("$D/hosts/h$k/rsync/blob"); done
    verify rsync "${files[@]}"
    record "$n" rsync "$(echo "$t1 - $t0" | bc)" $((up1 - up0)) $((cx1 - cx0)) - "$(cpu_busy "$c0" "$c1")"
    for ((k = 1; k <= n; k++)); do rm -rf "$D/hosts/h$k/rsync"; done
}

run_aria2c() {
    local n=$1 k t0 t1 up0 cx0 up1 cx1 rss files=() fail=0 pids=() tracker seeder t=0
    local common=(--bt-enable-lpd=false --enable-dht=false --enable-dht6=false --enable-peer-exchange=false
        --listen-port=6881 --summary-interval=0 --console-log-level=warn --file-allocation=falloc
        --bt-max-peers=55)
    log "aria2c: seeder in the origin namespace, $n leechers, rookery's tracker"
    "$BIN" -q torrent create "$D/src" --tracker "http://${ADDR[0]}:6969/announce" -o "$W/aria2.torrent"
    ip netns exec "$P-o" "$BIN" tracker -q -i "$W/ctl.yml" --torrent "$W/aria2.torrent" \
        --listen "${ADDR[0]}:6969" --sharing mesh >"$W/tracker.log" 2>&1 &
    tracker=$!
    until ip netns exec "$P-o" timeout 1 bash -c "exec 3<>/dev/tcp/${ADDR[0]}/6969" 2>/dev/null; do
        ((++t < 50)) || die "aria2c: rookery tracker did not listen: $(cat "$W/tracker.log")"
        sleep 0.1
    done
    start_sampler "aria2c .*--seed-time=0 .*$D/hosts/"
    touch_memory "$1"
    up0=$(origin_tx) cx0=$(cross_dc) c0=$(cpu_ticks) t0=$(now)
    ip netns exec "$P-o" aria2c "${common[@]}" --seed-ratio=0.0 --bt-seed-unverified=true \
        -d "$D" "$W/aria2.torrent" >"$W/aria2-seeder.log" 2>&1 &
    seeder=$!
    for ((k = 1; k <= n; k++)); do
        mkdir -p "$D/hosts/h$k/aria2c"
        ip netns exec "${NS[k]}" aria2c "${common[@]}" --seed-time=0 --check-integrity=true \
            -d "$D/hosts/h$k/aria2c" "$W/aria2.torrent" >"$W/aria2-h$k.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || fail=1; done
    t1=$(now) c1=$(cpu_ticks) up1=$(origin_tx) cx1=$(cross_dc)
    rss=$(stop_sampler)
    kill "$seeder" "$tracker" 2>/dev/null || true
    wait "$seeder" "$tracker" 2>/dev/null || true
    if ((fail)); then
        tail -n 5 "$W"/aria2-h*.log "$W/tracker.log" >&2
        die "aria2c: a leecher failed"
    fi
    for ((k = 1; k <= n; k++)); do files+=("$D/hosts/h$k/aria2c/src/blob"); done
    verify aria2c "${files[@]}"
    record "$n" aria2c "$(echo "$t1 - $t0" | bc)" $((up1 - up0)) $((cx1 - cx0)) "$rss" "$(cpu_busy "$c0" "$c1")"
    for ((k = 1; k <= n; k++)); do rm -rf "$D/hosts/h$k/aria2c"; done
}

# --- main --------------------------------------------------------------------------

for n in "${HOSTS[@]}"; do
    log "cluster of $n hosts + origin, links ${RATE} Mbit/s, artifact ${SIZE} MiB$( ((TREE > 0)) && echo " in $TREE files")"
    up_cluster "$n"
    for m in "${METHOD_LIST[@]}"; do "run_$m" "$n"; done
    down_cluster
done

python3 - "$SIZE" "$RATE" "$STORAGE" "$(nproc)" "${SWARM_TBF_LATENCY:-50ms}" "${SWARM_HOST_QUEUE:-fifo}" "$TCP_CC" "${SWARM_USER_RC:-empty}" "${RESULTS[@]}" <<'PY'
import sys
size, rate, storage, cores, queue, host_queue, cc, user_rc = sys.argv[1:9]
rows = [r.split() for r in sys.argv[9:]]
s = int(size) << 20
bound = s * 8 / (int(rate) * 1e6)
print()
print(f"S = {size} MiB, C = {rate} Mbit/s, S/C = {bound:.1f} s; 2 DCs, origin in DC east; "
      f"files on {storage}; {cores} cores" + ("" if queue == "50ms" else f"; tbf queue {queue}")
      + ("" if host_queue == "fifo" else f"; host upload queues {host_queue}") + f"; TCP {cc}"
      + ("; root's ~/.bashrc empty for the hosts' sshd" if user_rc == "empty" else "; root's own ~/.bashrc"))
print(f"{'N':>3} {'method':<9} {'slowest':>8} {'x S/C':>6} {'origin up':>10} {'cross-DC':>9} {'peak RSS':>10} {'CPU':>5} {'start spread':>12} {'model':>14}")
checks = []
times = {}
for n, m, secs, up, cross, rss, cpu, spread, model in rows:
    secs, up, cross = float(secs), int(up) / s, int(cross) / s
    times[(n, m)] = secs
    r = "-" if rss == "-" else f"{int(rss) / 1024:.1f} MiB"
    sp = "-" if spread == "-" else f"{float(spread):.1f}s"
    mo = "-" if model == "-" else f"{float(model):.1f}s ({(float(model) - secs) / secs * 100:+.0f}%)"
    print(f"{n:>3} {m:<9} {secs:7.1f}s {secs / bound:6.2f} {up:9.2f}x {cross:8.2f}x {r:>10} {cpu:>4}% {sp:>12} {mo:>14}")
    if m.startswith("rookery"):
        checks.append((n, m, secs / bound <= 1.2, up <= 1.2, cross <= 1.1, rss != "-" and int(rss) < 64 * 1024))
print()
print("targets (rookery): slowest <= 1.2 x S/C; origin upload <= 1.2 x S; "
      "cross-DC <= 1.1 x S (one remote DC); agent peak RSS < 64 MiB; >= 10x faster than scp at N = 16")
yn = lambda b: "met" if b else "NOT met"
for n, m, a, b, c, d in checks:
    line = f"  N={n} {m}: slowest {yn(a)}, origin {yn(b)}, cross-DC {yn(c)}, RSS {yn(d)}"
    if (n, "scp") in times:
        sp = times[(n, "scp")] / times[(n, m)]
        line += f", {sp:.1f}x faster than scp" + (f" ({yn(sp >= 10)})" if n == "16" else "")
    print(line)
PY
