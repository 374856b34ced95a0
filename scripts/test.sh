#!/usr/bin/env bash
# Everything the tests need, then every test. Idempotent; run as root on Debian 12 (or the
# Vagrant VM): installs the Debian packages the tests drive, builds the fixtures from Debian's
# busybox-static (cached under target/fixtures), and runs `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the tests create namespaces, mounts and cgroups: run it as root" >&2
  exit 1
fi

# Packages the build and the tests use: libseccomp-dev (static libseccomp), umoci (checks the
# OCI fixture), procps (ps, for `berth-runtime ps`), util-linux (unshare), iproute2 (test
# network namespaces), uidmap and passwd (newuidmap/newgidmap and useradd for the rootless test),
# btrfs-progs (mkfs.btrfs for the btrfs driver's loop filesystem), zstd (compressed layers),
# qemu-system-x86 (the VM harness: pure cgroup v2 and device-mapper under Debian's kernel),
# tar/gzip/dpkg (fixture building), containerd, podman, docker.io and skopeo (engines that run
# containers on berth-runtime in kernel-tests/tests/embedding.rs), and apt lists for
# `apt-get download busybox-static`; libdevmapper-dev, libclang-dev and pkg-config (the
# devicemapper crate's bindings are generated at build time) and e2fsprogs (mkfs.ext4 for the
# devicemapper driver's base filesystem, copied into the VM); clang and libbpf-dev (the BPF
# datapath's C programs); iproute2's ip is copied into the VM for the VLAN test;
# docker-registry and apache2-utils (htpasswd): the local registry berthd pulls from in
# kernel-tests/tests/daemon_pull.rs (each test runs its own on 127.0.0.1, a random port);
# debootstrap: the multi-layer Debian image of kernel-tests/tests/daemon_registry_debian.rs;
# nftables (nft): berthd's outbound NAT and published ports from outside (its own table).
packages=(libseccomp-dev libdevmapper-dev libclang-dev pkg-config e2fsprogs clang libbpf-dev umoci procps util-linux iproute2 uidmap passwd btrfs-progs zstd qemu-system-x86 tar gzip dpkg containerd podman docker.io skopeo docker-registry apache2-utils debootstrap nftables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || ! apt-cache show busybox-static >/dev/null 2>&1; then
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The package's own service (all interfaces, port 5000) is not wanted: tests start their own.
if command -v systemctl >/dev/null && systemctl is-enabled docker-registry >/dev/null 2>&1; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

cargo build --workspace --bins --quiet
fixtures="target/$(rustc -vV | sed -n 's/^host: //p')/debug/berth-fixtures"
"$fixtures"
# A Debian minbase tree from deb.debian.org (debootstrap, ~40 MB, cached) made into an image.
"$fixtures" --debian-image
# Each security regression test must also fail against a build without its defence.
bash kernel-tests/weakened/run.sh

# The fuzz targets build and run (short smoke runs; fuzz longer by hand): layer apply, and
# berthd's request parsing.
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
(cd drivers/storage && cargo +nightly fuzz run apply -- -runs=20000 -max_total_time=30 2>&1 | tail -n 3)
mkdir -p daemon-lite/fuzz/corpus/request
(cd daemon-lite && cargo +nightly fuzz run request fuzz/corpus/request fuzz/seeds/request -- -runs=20000 -max_total_time=30 2>&1 | tail -n 3)
# The benchmarks are not run here (they are measurements, not tests) but must keep compiling.
cargo check --workspace --benches --quiet
cargo test --workspace 2>&1
