#!/usr/bin/env bash
# berth's main job on a fresh machine: build everything (release), start berthd (the daemon)
# with its defaults, load the busybox image (built from Debian's busybox-static) and run a
# first container through it with berth's CLI. The Docker CLI works too:
#   DOCKER_HOST=unix:///run/berth/berth.sock docker run --rm busybox echo hi
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/start.sh: containers need root (namespaces, mounts, cgroups)" >&2
  exit 1
fi
apt-cache show busybox-static >/dev/null 2>&1 || apt-get update -qq
# Build dependencies: libseccomp (the runtime's filters); libdevmapper-dev, libclang-dev and
# pkg-config (the devicemapper crate generates its ioctl bindings from the kernel headers);
# clang and libbpf-dev (the BPF datapath's C programs); nftables (nft: berthd's outbound NAT
# and published ports from outside this host).
for p in libseccomp-dev libdevmapper-dev libclang-dev pkg-config clang libbpf-dev nftables; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null
done

cargo build --release --workspace --bins --quiet
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release
# The busybox image, built from Debian's busybox-static (no registry needed).
"$bin/berth-fixtures" >/dev/null

# berthd with its defaults: /var/lib/berth, /run/berth, unix:///run/berth/berth.sock (0660).
# It keeps running after this script; its containers survive its restarts.
if ! "$bin/berth" version >/dev/null 2>&1; then
  mkdir -p /run/berth
  nohup "$bin/berthd" >>/run/berth/berthd.log 2>&1 </dev/null &
  for _ in $(seq 100); do
    "$bin/berth" version >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "berthd started (log: /run/berth/berthd.log; stop it with: pkill -x berthd)"
fi
"$bin/berth" load -i target/fixtures/busybox-docker.tar >/dev/null
exec "$bin/berth" run --rm busybox sh -c 'echo "hello from a berth container: $(hostname), pid $$, $(id)"'
