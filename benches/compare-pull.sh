#!/usr/bin/env bash
# Images, side by side: berthd and dockerd (Debian's 20.10) pulling the same multi-layer image
# (the tests' Debian image: minbase from debootstrap, a small layer, busybox; 3 gzip layers,
# 93 MB; kernel-tests' `berth-fixtures --debian-image`) from the same local registry
# (Debian's docker-registry on 127.0.0.1, a random port), into overlay2, in the same run; then
# `save` and `load` of it. Wall time per command (hyperfine, the image removed before each
# run) and each daemon's CPU time per run (the daemons' own user+sys, containerd's included
# for dockerd).
#
#   sudo bash benches/compare-pull.sh [--runs N]
#
# dockerd runs with --bridge=none --iptables=false --ip6tables=false; both daemons and the
# registry use temporary directories and are stopped and removed at the end.
# Results: target/bench/pull.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N]" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "compare-pull.sh: the engines need root" >&2
  exit 1
fi
need=()
for p in docker.io docker-registry hyperfine debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --release -q -p berth-daemon -p berth-cli -p berth-kernel-tests -p berth-benches
bin=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release
"$bin/berth-fixtures" >/dev/null
"$bin/berth-fixtures" --debian-image >/dev/null
out=$PWD/target/bench
mkdir -p "$out"
work=$(mktemp -d /tmp/pull.XXXXXX)
B="unix://$work/berth.sock"
D="unix://$work/docker.sock"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
R="127.0.0.1:$port"
registry_pid= berthd_pid= dockerd_pid=

cleanup() {
  set +e
  [ -n "$berthd_pid" ] && kill "$berthd_pid" && wait "$berthd_pid"
  [ -n "$dockerd_pid" ] && kill "$dockerd_pid" && wait "$dockerd_pid"
  [ -n "$registry_pid" ] && kill "$registry_pid" && wait "$registry_pid"
  # berthd's published-port programs and nftables table outlive it by design: remove them.
  "$bin/berth-port-bench" unpin "$work/bpf/berth/ports" 2>/dev/null
  nft delete table ip "berthbench$$" 2>/dev/null
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: $R
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
"$bin/berthd" --root "$work/berth-root" --exec-root "$work/berth-run" -H "$B" --storage-driver overlay2 \
  --bpf-pin-dir "$work/bpf/berth" --nft-table "berthbench$$" >"$work/berthd.log" 2>&1 &
berthd_pid=$!
dockerd --data-root "$work/docker-root" --exec-root "$work/docker-run" -H "$D" \
  --pidfile "$work/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
  --storage-driver overlay2 >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for host in "$B" "$D"; do
  for _ in $(seq 300); do DOCKER_HOST=$host docker version >/dev/null 2>&1 && break; sleep 0.1; done
done

image="$R/bench/minbase:1"
"$bin/berth" -H "$B" load -i target/fixtures/debian-image/image.tar >/dev/null
"$bin/berth" -H "$B" tag berth-test/debian:multi "$image"
"$bin/berth" -H "$B" push "$image" >/dev/null
"$bin/berth" -H "$B" rmi -f "$image" berth-test/debian:multi >/dev/null

cpu_of() { # pids… → user+sys ticks
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
docker_pids() { echo "$dockerd_pid" $(pgrep -f "containerd --config $work") ; }
hz=$(getconf CLK_TCK)

b0=$(cpu_of "$berthd_pid"); d0=$(cpu_of $(docker_pids))
hyperfine --style basic --runs "$runs" --export-json "$out/pull-pull.json" \
  --prepare "$bin/berth -H $B rmi -f $image >/dev/null 2>&1; docker -H $D rmi -f $image >/dev/null 2>&1; sync; true" \
  -n "berthd pull" "$bin/berth -H $B pull $image" \
  -n "dockerd pull" "docker -H $D pull $image"
# Each prepare removed both images, so each daemon did `runs` pulls.
b1=$(cpu_of "$berthd_pid"); d1=$(cpu_of $(docker_pids))

"$bin/berth" -H "$B" pull "$image" >/dev/null
docker -H "$D" pull "$image" >/dev/null
hyperfine --style basic --runs "$runs" --export-json "$out/pull-save.json" \
  -n "berthd save" "$bin/berth -H $B save -o $work/b.tar $image" \
  -n "dockerd save" "docker -H $D save -o $work/d.tar $image"
hyperfine --style basic --runs "$runs" --export-json "$out/pull-load.json" \
  --prepare "$bin/berth -H $B rmi -f $image >/dev/null 2>&1; docker -H $D rmi -f $image >/dev/null 2>&1; true" \
  -n "berthd load" "$bin/berth -H $B load -i $work/b.tar" \
  -n "dockerd load" "docker -H $D load -i $work/d.tar"

python3 - "$out" "$runs" "$hz" "$b0" "$b1" "$d0" "$d1" <<'PY'
import json, sys
out, runs, hz, b0, b1, d0, d1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *map(int, sys.argv[4:])
rows = ["| what | berthd | dockerd 20.10 | ratio |", "|---|---|---|---|"]
result = {}
for kind in ["pull", "save", "load"]:
    med = {r["command"].split()[0]: r["median"] for r in json.load(open(f"{out}/pull-{kind}.json"))["results"]}
    b, d = med["berthd"], med["dockerd"]
    result[kind] = {"berthd_s": b, "dockerd_s": d}
    rows.append(f"| `{kind}` Debian minbase + 2 layers (3 layers, 93 MB gzip), median wall | {b:.2f} s | {d:.2f} s | {b/d:.2f}× |")
bc, dc = (b1 - b0) / hz / runs, (d1 - d0) / hz / runs
rows.append(f"| daemon CPU per pull (user+sys) | {bc:.2f} s | {dc:.2f} s | {bc/dc:.2f}× |")
result["pull_cpu_s"] = {"berthd": bc, "dockerd": dc}
open(f"{out}/pull.md", "w").write("\n".join(rows) + "\n")
json.dump(result, open(f"{out}/pull.json", "w"), indent=1)
print("\n".join(rows))
PY
