#!/usr/bin/env bash
# Runs on the Packer builder instance as root, after install.sh: what makes an instance
# observable without an open port.
#   install-observability.sh LOGS_DIR
# LOGS_DIR: the files of ami/logs/.
#
# 1. Logs: rsyslog (Ubuntu's own) copies the iras units' journal lines to
#    /var/log/iras/<unit>.log; the Amazon CloudWatch agent, installed here from its official
#    .deb (signature checked against Amazon's published key fingerprint), ships them and
#    cloud-init's output to the stack's log group. The agent is enabled; its drop-in renders
#    its configuration from /etc/iras/iras.env at every start, so one image serves every
#    stack. This is the only step that downloads anything, at build time; nothing is
#    fetched at instance boot.
# 2. Shell: the SSM agent that Canonical's AMIs ship as a snap must be installed and
#    enabled (Session Manager needs no inbound port); the build fails otherwise.
set -euo pipefail

logs=${1:?usage: install-observability.sh LOGS_DIR}
prefix=${IRAS_PREFIX:-/opt/iras}
cwagent_base=${IRAS_CWAGENT_BASE_URL:-https://amazoncloudwatch-agent.s3.amazonaws.com}
# Amazon's CloudWatch agent signing key, as published in the agent's installation guide.
cwagent_fpr=937616F3450B7D806CBD9725D58167303B789C72

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'install-observability.sh: %s\n' "$*" >&2
    exit 1
}

say "SSM agent (Session Manager)"
snap list amazon-ssm-agent >/dev/null 2>&1 ||
    die "the amazon-ssm-agent snap is not installed (Canonical's AMIs ship it)"
ssm_unit=snap.amazon-ssm-agent.amazon-ssm-agent.service
[[ $(systemctl is-enabled "$ssm_unit" 2>/dev/null) == enabled ]] ||
    die "$ssm_unit is not enabled"
snap list amazon-ssm-agent | tail -1

say "rsyslog: the iras units' lines to /var/log/iras/"
export DEBIAN_FRONTEND=noninteractive
if ! dpkg-query -W -f='${Status}' rsyslog 2>/dev/null | grep -q 'ok installed'; then
    apt-get update -qq
    apt-get install -y -qq rsyslog
fi
systemctl enable rsyslog.service
install -d -m 0755 /etc/systemd/journald.conf.d
install -m 0644 "$logs/journald-iras.conf" /etc/systemd/journald.conf.d/iras.conf
install -m 0644 "$logs/rsyslog-iras.conf" /etc/rsyslog.d/30-iras.conf
rsyslogd -N1 -f /etc/rsyslog.conf
install -d -o syslog -g adm -m 0750 /var/log/iras
install -m 0644 "$logs/logrotate-iras" /etc/logrotate.d/iras
logrotate --debug /etc/logrotate.d/iras >/dev/null

say "Amazon CloudWatch agent"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for f in ubuntu/amd64/latest/amazon-cloudwatch-agent.deb \
    ubuntu/amd64/latest/amazon-cloudwatch-agent.deb.sig assets/amazon-cloudwatch-agent.gpg; do
    curl -fsSL --retry 3 -o "$work/$(basename "$f")" "$cwagent_base/$f"
done
export GNUPGHOME=$work/gnupg
install -d -m 0700 "$GNUPGHOME"
gpg --batch --quiet --import "$work/amazon-cloudwatch-agent.gpg"
gpg --batch --with-colons --fingerprint | grep -q "^fpr:::::::::$cwagent_fpr:" ||
    die "the CloudWatch agent key is not the one with fingerprint $cwagent_fpr"
gpg --batch --quiet --trusted-key "${cwagent_fpr: -16}" \
    --verify "$work/amazon-cloudwatch-agent.deb.sig" "$work/amazon-cloudwatch-agent.deb" ||
    die "the CloudWatch agent package's signature does not verify"
dpkg -i "$work/amazon-cloudwatch-agent.deb"
# The agent runs as cwagent (run_as_user); adm may read /var/log/iras and cloud-init's log.
usermod -aG adm cwagent
install -d -m 0755 "$prefix/share" "$prefix/libexec"
install -m 0644 "$logs/amazon-cloudwatch-agent.json" "$prefix/share/cloudwatch-agent.json"
install -m 0755 "$logs/cloudwatch-agent-config" "$prefix/libexec/cloudwatch-agent-config"
install -d -m 0755 /etc/systemd/system/amazon-cloudwatch-agent.service.d
install -m 0644 "$logs/cloudwatch-agent-iras.conf" \
    /etc/systemd/system/amazon-cloudwatch-agent.service.d/iras.conf
systemctl daemon-reload
systemctl enable amazon-cloudwatch-agent.service
cat /opt/aws/amazon-cloudwatch-agent/bin/CWAGENT_VERSION
# The configuration this image will render, with sample values, must pass the agent's own
# validation (the tool is run directly: the service stays stopped on the builder).
IRAS_LOG_GROUP=/iras/packer-check IRAS_AWS_REGION=us-east-1 \
    IRAS_CWAGENT_RUN_DIR="$work/run" "$prefix/libexec/cloudwatch-agent-config"
# ...and leaves no configuration behind: each instance renders its own at start.
rm -f /opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.toml \
    /opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.d/*
