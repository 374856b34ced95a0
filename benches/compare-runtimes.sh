#!/usr/bin/env bash
# Container start, side by side: berth-runtime, crun and runc (and youki when installed: cargo
# install youki) on the same bundles, interleaved (see benches/src/bin/berth-compare.rs):
#
#   sudo bash benches/compare-runtimes.sh                      # 30 runs, 5 rounds of 100
#   sudo bash benches/compare-runtimes.sh --runs 50 --runtimes berth,crun
#
# Writes target/bench/compare.{json,md} and compare-run.png (latency distribution per runtime)
# and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "compare-runtimes.sh: the runtimes need root" >&2
  exit 1
fi
need=()
for p in runc crun librsvg2-bin fonts-dejavu-core; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --release -q -p berth-runtime -p berth-kernel-tests -p berth-benches
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release
"$bin/berth-fixtures" >/dev/null
"$bin/berth-compare" --out target/bench "$@"
rsvg-convert -o target/bench/compare-run.png target/bench/compare-run.svg
echo "plot: target/bench/compare-run.png"
