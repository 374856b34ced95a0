#!/usr/bin/env bash
# berth's main job on a fresh machine: build everything (release), build the busybox bundle
# from Debian's busybox-static, and run it as a container through berth's runtime.
# (Once berthd lands, this starts the daemon and runs the first container through it.)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/start.sh: containers need root (namespaces, mounts, cgroups)" >&2
  exit 1
fi
apt-cache show busybox-static >/dev/null 2>&1 || apt-get update -qq
# Build dependencies: libseccomp (the runtime's filters); libdevmapper-dev, libclang-dev and
# pkg-config (the devicemapper crate generates its ioctl bindings from the kernel headers);
# clang and libbpf-dev (the BPF datapath's C programs).
for p in libseccomp-dev libdevmapper-dev libclang-dev pkg-config clang libbpf-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null
done

cargo build --release --workspace --bins --quiet
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release
"$bin/berth-fixtures"
id="hello-berth-$$"
exec "$bin/berth-runtime" run --bundle target/fixtures/busybox "$id"
