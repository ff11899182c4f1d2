#!/usr/bin/env bash
# Runs on the Packer builder instance as root, last: removes what identifies the builder,
# so every instance made from the image starts as a first boot.
set -euo pipefail

# A new machine id on first boot (an empty file makes systemd generate one; dbus reads
# /etc/machine-id when its own copy is missing or is the usual symlink).
truncate -s 0 /etc/machine-id
if [[ -e /var/lib/dbus/machine-id && ! -L /var/lib/dbus/machine-id ]]; then
    rm -f /var/lib/dbus/machine-id
    ln -s /etc/machine-id /var/lib/dbus/machine-id
fi
# Packer's temporary key (cloud-init installs an instance's own key pair, if any, at boot)
# and the builder's SSH host keys (cloud-init generates new ones on first boot).
rm -f /home/ubuntu/.ssh/authorized_keys /root/.ssh/authorized_keys
rm -f /etc/ssh/ssh_host_*
# The builder's logs, and cloud-init's state, so cloud-init runs again on every instance.
rm -rf /var/log/iras/*
journalctl --rotate --vacuum-time=1s >/dev/null 2>&1 || true
cloud-init clean --logs
