#!/usr/bin/env bash
# Runs on the Packer builder instance as root: installs what scripts/deploy-aws staged.
#   install.sh DIST_DIR UNITS_DIR
# DIST_DIR: bin/{web-tier,app-tier,listener,scaler}, model/ (one model pack), lib/libonnxruntime.so
# UNITS_DIR: the iras-*.service units from ami/systemd/
# Nothing here downloads anything; the units stay disabled until cloud-init enables the
# right ones for the instance's role.
set -euo pipefail

dist=${1:?usage: install.sh DIST_DIR UNITS_DIR}
units=${2:?usage: install.sh DIST_DIR UNITS_DIR}
prefix=${IRAS_PREFIX:-/opt/iras}

for f in bin/web-tier bin/app-tier bin/listener bin/scaler model/model.onnx model/pack.toml \
    model/labels.txt lib/libonnxruntime.so; do
    [[ -e $dist/$f ]] || { echo "install.sh: missing $dist/$f" >&2; exit 1; }
done

# A dedicated system user with no login and no home of its own.
if ! id -u iras >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin iras
fi

install -d -m 0755 "$prefix" "$prefix/bin" "$prefix/model" "$prefix/lib"
install -m 0755 "$dist"/bin/web-tier "$dist"/bin/app-tier "$dist"/bin/listener \
    "$dist"/bin/scaler "$prefix/bin/"
install -m 0644 "$dist"/model/* "$prefix/model/"
install -m 0644 "$dist"/lib/libonnxruntime.so "$prefix/lib/libonnxruntime.so"
install -d -m 0755 /etc/iras
install -m 0644 "$units"/iras-*.service /etc/systemd/system/
systemctl daemon-reload

# The binaries must at least start on this image (glibc, the ONNX Runtime library).
"$prefix/bin/app-tier" --help >/dev/null
"$prefix/bin/web-tier" --help >/dev/null
"$prefix/bin/scaler" --help >/dev/null
"$prefix/bin/listener" --help >/dev/null

# A real classification follows (smoke-test.sh); generalise.sh cleans up at the end.
