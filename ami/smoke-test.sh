#!/usr/bin/env bash
# Runs on the Packer builder instance as root, after install.sh: the image must classify.
#   smoke-test.sh PHOTO LABEL
# Classifies PHOTO with the installed binary, ONNX Runtime library and model pack, as the
# iras user with the app-tier unit's model settings, and fails the build unless the top-1
# label is LABEL. (`--help` alone never loads the runtime or the model.)
set -euo pipefail

photo=${1:?usage: smoke-test.sh PHOTO LABEL}
want=${2:?usage: smoke-test.sh PHOTO LABEL}
prefix=${IRAS_PREFIX:-/opt/iras}
user=${IRAS_USER:-iras}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
install -m 0644 "$photo" "$work/"
name=$(basename "$photo")
stem=${name%.*}
# The same model settings as ami/systemd/iras-app-tier.service.
got=$(runuser -u "$user" -- env -i PATH=/usr/bin:/bin HOME=/nonexistent \
    IRAS_MODEL_DIR="$prefix/model" ORT_DYLIB_PATH="$prefix/lib/libonnxruntime.so" \
    "$prefix/bin/app-tier" classify --threads 1 "$work/$name")
echo "golden photo: $got (expected $stem,$want)"
[[ $got == "$stem,$want" ]] || {
    echo "smoke-test.sh: $name was classified '${got#*,}', not '$want'" >&2
    exit 1
}
