#!/usr/bin/env bash
# Provisioning of every node of the Vagrant demo cluster (run as root by Vagrant).
#
# - installs curl (and makes sure of sshd's SFTP server and coreutils, which rookery's
#   bootstrap uses);
# - creates the `deploy` user that rookery logs in as, with the public key of
#   vagrant/keys/id_ed25519 (passed by the Vagrantfile in ROOKERY_DEPLOY_KEY) as its
#   only authorized key;
# - creates /srv/demo, the artifact's destination, owned by deploy;
# - names every node of the cluster in /etc/hosts (ROOKERY_NODES: "name=address ...").
#
# Safe to run again (`vagrant provision`): the key is replaced, nothing is duplicated.
set -euo pipefail

die() {
    printf 'provision/common.sh: error: %s\n' "$*" >&2
    exit 1
}

key=${ROOKERY_DEPLOY_KEY:-}
[[ -n $key ]] || die "no deploy key given: run vagrant/setup keys on the admin machine, then vagrant provision"
[[ $key =~ ^ssh-ed25519\ [A-Za-z0-9+/=]+(\ .*)?$ ]] ||
    die "ROOKERY_DEPLOY_KEY does not look like an ed25519 public key: '${key:0:40}...'"

# Only what is missing is installed: a second run, and a box that has them all (the
# box of vagrant/local, whose VMs reach no package mirror), touch no mirror.
packages=(curl ca-certificates openssh-server openssh-sftp-server coreutils)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! id -u deploy >/dev/null 2>&1; then
    useradd --create-home --user-group --shell /bin/bash --comment "rookery deploy user" deploy
fi
home=$(getent passwd deploy | cut -d: -f6)
install -d -m 0700 -o deploy -g deploy "$home/.ssh"
tmp=$(mktemp "$home/.ssh/authorized_keys.XXXXXX")
printf '%s\n' "$key" >"$tmp"
if cmp -s "$tmp" "$home/.ssh/authorized_keys"; then
    rm -f "$tmp"
else
    chown deploy:deploy "$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$home/.ssh/authorized_keys"
fi

install -d -m 0755 -o deploy -g deploy /srv/demo

# /etc/hosts: a block between markers, rewritten on every run.
begin="# BEGIN rookery vagrant nodes"
end="# END rookery vagrant nodes"
tmp=$(mktemp /etc/hosts.XXXXXX)
sed "/^$begin\$/,/^$end\$/d" /etc/hosts >"$tmp"
{
    printf '%s\n' "$begin"
    for pair in ${ROOKERY_NODES:-}; do
        printf '%s %s\n' "${pair#*=}" "${pair%%=*}"
    done
    printf '%s\n' "$end"
} >>"$tmp"
if cmp -s "$tmp" /etc/hosts; then
    rm -f "$tmp"
else
    chmod 0644 "$tmp"
    mv -f "$tmp" /etc/hosts
fi

printf 'provision/common.sh: %s ready: user deploy (key %s), /srv/demo\n' \
    "$(hostname)" "$(ssh-keygen -lf "$home/.ssh/authorized_keys" | awk '{print $2}')"
