#!/usr/bin/env bash
# Provisioning of the ZooKeeper node (run as root by Vagrant, after common.sh).
#
# A standalone ZooKeeper from Debian's `zookeeper` package, listening on the node's
# private address (ROOKERY_ZK_ADDRESS, from vagrant/nodes) port 2181, as the systemd
# unit rookery-zookeeper.service written here. (The package's own zookeeperd only
# ships a SysV init script reading /etc/zookeeper/conf; this unit keeps its own
# configuration in /etc/zookeeper/rookery and logs to the journal:
# `journalctl -u rookery-zookeeper`.)
set -euo pipefail

die() {
    printf 'provision/zk.sh: error: %s\n' "$*" >&2
    exit 1
}

address=${ROOKERY_ZK_ADDRESS:-}
[[ $address =~ ^[0-9]+(\.[0-9]+){3}$ ]] || die "ROOKERY_ZK_ADDRESS must be an IPv4 address, found '$address'"
port=2181
conf=/etc/zookeeper/rookery

# Installed only when missing: the box of vagrant/local has it (its VMs reach no
# package mirror), and a second run touches nothing.
if ! dpkg-query -W -f '${db:Status-Abbrev}' zookeeper 2>/dev/null | grep -q '^ii'; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends zookeeper >/dev/null
fi

for jar in zookeeper.jar slf4j-log4j12.jar log4j-1.2.jar; do
    [[ -f /usr/share/java/$jar ]] || die "/usr/share/java/$jar is missing after installing zookeeper"
done

# Its own data directory: Debian's /var/lib/zookeeper holds `myid`, a link to the
# package's /etc/zookeeper/conf/myid whose placeholder text ("replace this text with
# ...") makes ZooKeeper exit with "Invalid config" even standalone.
data=/var/lib/zookeeper/rookery
install -d -m 0755 "$conf"
install -d -m 0750 -o zookeeper -g zookeeper /var/lib/zookeeper "$data"

# Files are written only when their text changes, and the service restarted only
# then (or when it is not running): a second provision changes nothing.
changed=false
put() { # FILE: stdin becomes FILE when it differs
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
    else
        chmod 0644 "$tmp"
        mv -f "$tmp" "$1"
        changed=true
    fi
}

put "$conf/zoo.cfg" <<CFG
# Written by vagrant/provision/zk.sh: the standalone ZooKeeper of the rookery
# Vagrant cluster (coordination.zookeeper.connect in inventory/vagrant.yml).
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$data
clientPort=$port
clientPortAddress=$address
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,srvr,mntr
autopurge.snapRetainCount=3
autopurge.purgeInterval=24
CFG
put "$conf/log4j.properties" <<'CFG'
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.Threshold=INFO
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%-5p [%t:%C{1}@%L] - %m%n
CFG

# zookeeper.jar's manifest names its own dependencies; the log binding is added here.
put /etc/systemd/system/rookery-zookeeper.service <<UNIT
# Written by vagrant/provision/zk.sh.
[Unit]
Description=ZooKeeper for the rookery Vagrant cluster ($address:$port)
Wants=network-online.target
After=network-online.target

[Service]
User=zookeeper
Group=zookeeper
ExecStart=/usr/bin/java -Xms32m -Xmx192m -XX:+UseSerialGC \\
    -cp $conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar \\
    org.apache.zookeeper.server.quorum.QuorumPeerMain $conf/zoo.cfg
# The JVM exits with 143 on SIGTERM.
SuccessExitStatus=143
# Also when the private address is not up yet at boot.
Restart=always
RestartSec=3

[Install]
WantedBy=multi-user.target
UNIT

if $changed || ! systemctl is-active --quiet rookery-zookeeper.service; then
    systemctl daemon-reload
    systemctl enable --quiet rookery-zookeeper.service
    systemctl restart rookery-zookeeper.service
fi

# Wait until it answers `ruok` on the private address.
for _ in $(seq 60); do
    # shellcheck disable=SC2016 # $0 and $1 expand in the inner shell
    answer=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf ruok >&3 && cat <&3' "$address" "$port" 2>/dev/null) || true
    if [[ $answer == imok ]]; then
        echo "provision/zk.sh: ZooKeeper answers imok on $address:$port"
        exit 0
    fi
    sleep 1
done
journalctl -u rookery-zookeeper.service -n 40 --no-pager >&2 || true
die "ZooKeeper did not answer ruok on $address:$port within 60 s (journal above)"
