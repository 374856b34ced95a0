#!/usr/bin/env bash
# Layer apply beside GNU tar, whole commands, on one fresh btrfs loop filesystem (so the disk
# under /tmp does not decide the result): `berth-layer apply vfs` (a file per entry, as
# overlay2 and btrfs write them too) and `berth-layer apply erofs` (the layer's tar kept as an
# EROFS image's data, with an index) vs `tar -x` of the same Debian minbase layer,
# uncompressed, gzip and zstd, with hyperfine (Debian package).
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
cleanup() {
  for m in "$mnt"/erofs/snapshots/*/fs; do umount "$m" 2>/dev/null || true; done
  umount "$mnt" 2>/dev/null || true
  rm -rf "$mnt" "$img"
}
trap cleanup EXIT
truncate -s 3G "$img"
mkfs.btrfs -q -f "$img" >/dev/null
mount -o loop "$img" "$mnt"

tar_x=(tar --numeric-owner --xattrs "--xattrs-include=*" -p)
mkdir -p target/bench
# Before each run: the last run's layers gone (an erofs layer is mounted), caches written back.
reset="for m in $mnt/erofs/snapshots/*/fs; do umount \$m 2>/dev/null || true; done; rm -rf $mnt/vfs $mnt/erofs $mnt/x; mkdir $mnt/x; sync"
hyperfine --runs 10 --warmup 1 --export-json target/bench/layer-apply.json \
  --prepare "$reset" \
  -n "berth vfs gzip" "$tool apply vfs $mnt/vfs l < $layer/layer.tar.gz" \
  -n "berth erofs gzip" "$tool apply erofs $mnt/erofs l < $layer/layer.tar.gz" \
  -n "tar -x gzip" "${tar_x[*]} -xzf $layer/layer.tar.gz -C $mnt/x" \
  -n "berth vfs zstd" "$tool apply vfs $mnt/vfs l < $layer/layer.tar.zst" \
  -n "berth erofs zstd" "$tool apply erofs $mnt/erofs l < $layer/layer.tar.zst" \
  -n "tar -x zstd" "${tar_x[*]} --zstd -xf $layer/layer.tar.zst -C $mnt/x" \
  -n "berth vfs tar" "$tool apply vfs $mnt/vfs l < $layer/layer.tar" \
  -n "berth erofs tar" "$tool apply erofs $mnt/erofs l < $layer/layer.tar" \
  -n "tar -x tar" "${tar_x[*]} -xf $layer/layer.tar -C $mnt/x"
bash -c "$reset"
# Medians and the ratio to tar for each driver and compression.
python3 - <<'PY'
import json
r = {x["command"]: x["median"] for x in json.load(open("target/bench/layer-apply.json"))["results"]}
for c in ("gzip", "zstd", "tar"):
    t = r[f"tar -x {c}"]
    for d in ("vfs", "erofs"):
        b = r[f"berth {d} {c}"]
        print(f"{c:5} {d:6} berth {b*1000:7.1f} ms   tar -x {t*1000:7.1f} ms   "
              f"berth/tar {b/t:.2f}x   ({t/b:.2f}x as fast)")
PY
echo "written: target/bench/layer-apply.json"
