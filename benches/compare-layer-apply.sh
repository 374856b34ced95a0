#!/usr/bin/env bash
# Layer apply beside GNU tar, whole commands, on one fresh btrfs loop filesystem (so the disk
# under /tmp does not decide the result): `berth-layer apply vfs` vs `tar -x` of the same
# Debian minbase layer, uncompressed, gzip and zstd, with hyperfine (Debian package).
# Run as root: sudo bash benches/compare-layer-apply.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine debootstrap btrfs-progs zstd
cargo build --release -q -p berth-kernel-tests --bins
triple=$(rustc -vV | sed -n 's/^host: //p')
bin="target/$triple/release"
"$bin/berth-fixtures" --minbase
layer="$PWD/target/fixtures/minbase"
tool="$PWD/$bin/berth-layer"

img=$(mktemp /tmp/berth-apply-bench.XXXXXX.img)
mnt=$(mktemp -d /tmp/berth-apply-bench.XXXXXX)
cleanup() { umount "$mnt" 2>/dev/null || true; rm -rf "$mnt" "$img"; }
trap cleanup EXIT
truncate -s 3G "$img"
mkfs.btrfs -q -f "$img" >/dev/null
mount -o loop "$img" "$mnt"

tar_x=(tar --numeric-owner --xattrs "--xattrs-include=*" -p)
mkdir -p target/bench
hyperfine --runs 10 --warmup 1 --export-json target/bench/layer-apply.json \
  --prepare "rm -rf $mnt/vfs $mnt/x; mkdir $mnt/x; sync" \
  -n "berth gzip" "$tool apply vfs $mnt/vfs l < $layer/layer.tar.gz" \
  -n "tar -x gzip" "${tar_x[*]} -xzf $layer/layer.tar.gz -C $mnt/x" \
  -n "berth zstd" "$tool apply vfs $mnt/vfs l < $layer/layer.tar.zst" \
  -n "tar -x zstd" "${tar_x[*]} --zstd -xf $layer/layer.tar.zst -C $mnt/x" \
  -n "berth tar" "$tool apply vfs $mnt/vfs l < $layer/layer.tar" \
  -n "tar -x tar" "${tar_x[*]} -xf $layer/layer.tar -C $mnt/x"
# Medians and the ratio to tar for each compression.
python3 - <<'PY'
import json
r = {x["command"]: x["median"] for x in json.load(open("target/bench/layer-apply.json"))["results"]}
for c in ("gzip", "zstd", "tar"):
    b, t = r[f"berth {c}"], r[f"tar -x {c}"]
    print(f"{c:5}  berth {b*1000:7.1f} ms   tar -x {t*1000:7.1f} ms   berth/tar {b/t:.2f}x")
PY
echo "written: target/bench/layer-apply.json"
