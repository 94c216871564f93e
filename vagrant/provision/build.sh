#!/usr/bin/env bash
# Provisioning of the build node, the origin of inventory/vagrant.yml (run as root by
# Vagrant, after common.sh).
#
# Creates /srv/build/demo, owned by deploy: playbooks/vagrant-demo.yml's
# `artifact.source`. rookery runs `rookery torrent create /srv/build/demo` there as
# deploy, then the tracker and the origin seeder. The build itself (bin/demo-service)
# is put there from the admin machine by `vagrant/setup artifact`.
set -euo pipefail

install -d -m 0755 -o deploy -g deploy /srv/build /srv/build/demo /srv/build/demo/bin
if [[ -x /srv/build/demo/bin/demo-service ]]; then
    echo "provision/build.sh: /srv/build/demo already holds bin/demo-service; kept"
else
    echo "provision/build.sh: /srv/build/demo is empty; put the demo build there with vagrant/setup artifact"
fi
