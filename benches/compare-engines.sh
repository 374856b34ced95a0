#!/usr/bin/env bash
# The engine, side by side: berthd (driven by berth's CLI and by the Docker CLI) and dockerd
# (Debian's docker.io, with its containerd and runc) on the same host, in the same run.
#
#   sudo bash benches/compare-engines.sh               # 30 runs each, 100 concurrent, 200 idle
#   sudo bash benches/compare-engines.sh --runs 50 --concurrent 100 --idle 200
#
# 1. `run --rm busybox true`, wall time (hyperfine, warmups), with `--network none` and on the
#    default bridge network: the difference is what joining a network costs each engine;
# 2. 100 `run -d` then `rm -f`, 16 clients at a time: containers per second;
# 3. memory per idle container: N `sleep` containers, the engine's added PSS (daemon growth +
#    monitors / containerd-shims), per container.
# Each daemon runs in a network namespace of its own made here (its bridge, dockerd's iptables
# rules and berthd's nftables table live there and go with it): nothing touches the host's
# network or firewall. Both use temporary roots and sockets and are stopped and removed at
# the end. Results: target/bench/engines.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=30 concurrent=100 idle=200
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --concurrent) concurrent=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--concurrent N] [--idle N]" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "compare-engines.sh: the engines need root" >&2
  exit 1
fi
need=()
for p in docker.io hyperfine; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --release -q -p berth-daemon -p berth-cli -p berth-kernel-tests -p berth-benches
bin=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release
"$bin/berth-fixtures" >/dev/null
image=$PWD/target/fixtures/busybox-docker.tar
out=$PWD/target/bench
mkdir -p "$out"
# berthd (with its berth-monitor) and the CLI run from copies written in one go, as a package
# installs them: a binary fresh from the linker sits in the page cache in small folios and
# pays for it at every exec (see installed_copy in benches/src/bin/berth-compare.rs).
mkdir -p "$out/bin"
cp "$bin/berthd" "$bin/berth-monitor" "$bin/berth" "$out/bin/"
work=$(mktemp -d /tmp/engines.XXXXXX)
B="unix://$work/berth.sock"
D="unix://$work/docker.sock"
berthd_pid= dockerd_pid=
ns_berth=berth-bench-b$$ ns_docker=berth-bench-d$$
# Each daemon's containers go below a cgroup parent of this run's, removed at the end (the
# defaults, /berth and /docker, would stay behind).
cg_berth=berth-bench-b$$ cg_docker=berth-bench-d$$

cleanup() {
  set +e
  [ -n "$berthd_pid" ] && DOCKER_HOST=$B docker ps -aq | xargs -r -n 50 env DOCKER_HOST=$B docker rm -f >/dev/null 2>&1
  [ -n "$dockerd_pid" ] && DOCKER_HOST=$D docker ps -aq | xargs -r -n 50 env DOCKER_HOST=$D docker rm -f >/dev/null 2>&1
  [ -n "$berthd_pid" ] && kill "$berthd_pid" && wait "$berthd_pid"
  [ -n "$dockerd_pid" ] && kill "$dockerd_pid" && wait "$dockerd_pid"
  # berthd's published-port programs sit on the host's cgroup2 root (cgroups are not per
  # network namespace) and outlive it by design: take them off before their bpffs goes.
  "$bin/berth-port-bench" unpin "$work/bpf/berth/ports" 2>/dev/null
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip netns del "$ns_berth" 2>/dev/null
  ip netns del "$ns_docker" 2>/dev/null
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do rmdir "$h$cg_berth" "$h$cg_docker" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns_berth"
ip netns add "$ns_docker"
# nsenter enters the network namespace only and execs: the pid is the daemon's.
nsenter --net="/run/netns/$ns_berth" "$out/bin/berthd" --root "$work/berth-root" \
  --exec-root "$work/berth-run" -H "$B" --bpf-pin-dir "$work/bpf/berth" \
  --cgroup-parent "/$cg_berth" >"$work/berthd.log" 2>&1 &
berthd_pid=$!
nsenter --net="/run/netns/$ns_docker" dockerd --data-root "$work/docker-root" \
  --exec-root "$work/docker-run" -H "$D" --pidfile "$work/dockerd.pid" \
  --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent "/$cg_docker" >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for host in "$B" "$D"; do
  for _ in $(seq 300); do DOCKER_HOST=$host docker version >/dev/null 2>&1 && break; sleep 0.1; done
  DOCKER_HOST=$host docker load -i "$image" >/dev/null
done
dockerd_version=$(DOCKER_HOST=$D docker version --format '{{.Server.Version}}')
echo "berthd $(DOCKER_HOST=$B docker version --format '{{.Server.Version}}') vs dockerd $dockerd_version"

# 1. One container, start to exit, without a network and on the default bridge.
hyperfine --style basic --warmup 3 --runs "$runs" --export-json "$out/engines-run.json" \
  -n "berth CLI → berthd, none" "$out/bin/berth -H $B run --rm --network none busybox true" \
  -n "docker CLI → berthd, none" "docker -H $B run --rm --network none busybox true" \
  -n "docker CLI → dockerd, none" "docker -H $D run --rm --network none busybox true" \
  -n "berth CLI → berthd, bridge" "$out/bin/berth -H $B run --rm busybox true" \
  -n "docker CLI → berthd, bridge" "docker -H $B run --rm busybox true" \
  -n "docker CLI → dockerd, bridge" "docker -H $D run --rm busybox true"

# 2. Many at once: N `run -d`, 16 clients, then `rm -f` of them all.
throughput() { # host, cli
  local host=$1 cli=$2 start end
  start=$(date +%s.%N)
  seq "$concurrent" | xargs -P 16 -I{} "$cli" -H "$host" run -d --network none busybox sleep 1000 >"$work/ids" 
  end=$(date +%s.%N)
  "$cli" -H "$host" ps -aq | xargs -r -n 25 "$cli" -H "$host" rm -f >/dev/null
  echo "scale=2; $concurrent / ($end - $start)" | bc
}
berth_rate=$(throughput "$B" "$out/bin/berth")
docker_rate=$(throughput "$D" docker)
echo "run -d, $concurrent containers, 16 clients: berthd $berth_rate/s, dockerd $docker_rate/s"

# 3. Idle containers: PSS the engine adds per container.
pss() { # pids… → total PSS in KiB
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/smaps_rollup" ] && total=$((total + $(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup")))
  done
  echo "$total"
}
engine_pss() { # which → KiB of daemon(s) + per-container helpers
  case "$1" in
    berth) pss "$berthd_pid" $(pgrep -f "berth-monitor $work") ;;
    docker) pss "$dockerd_pid" $(pgrep -f "containerd --config $work" ) $(pgrep -f "containerd-shim.*$work") ;;
  esac
}
idle_cost() { # which host cli
  local before after
  before=$(engine_pss "$1")
  for _ in $(seq "$idle"); do "$3" -H "$2" run -d --network none busybox sleep 100000 >/dev/null; done
  sleep 2
  after=$(engine_pss "$1")
  "$3" -H "$2" ps -aq | xargs -r -n 25 "$3" -H "$2" rm -f >/dev/null
  echo "scale=1; ($after - $before) / $idle" | bc
}
berth_idle=$(idle_cost berth "$B" "$out/bin/berth")
docker_idle=$(idle_cost docker "$D" docker)
echo "idle containers ($idle): berthd adds $berth_idle KiB PSS each, dockerd+containerd $docker_idle KiB"

python3 - "$out" "$berth_rate" "$docker_rate" "$berth_idle" "$docker_idle" "$concurrent" "$idle" "$dockerd_version" <<'PY'
import json, sys
out, br, dr, bi, di, n, idle, dv = sys.argv[1:]
runs = json.load(open(f"{out}/engines-run.json"))["results"]
med = {r["command"]: r["median"] for r in runs}
lines = ["| what | berthd | dockerd " + dv + " | ratio |", "|---|---|---|---|"]
for net, what in [("none", "`run --rm --network none busybox true`"), ("bridge", "`run --rm busybox true` (default bridge)")]:
    docker = med[f"docker CLI → dockerd, {net}"]
    for cli in ["berth CLI", "docker CLI"]:
        b = med[f"{cli} → berthd, {net}"]
        lines.append(f"| {what}, {cli} (median) | {b*1000:.1f} ms | {docker*1000:.1f} ms | {b/docker:.3f}× |")
join = {e: med[f"docker CLI → {e}, bridge"] - med[f"docker CLI → {e}, none"] for e in ["berthd", "dockerd"]}
lines.append(f"| joining the default bridge (bridge − none, Docker CLI) | {join['berthd']*1000:.1f} ms | {join['dockerd']*1000:.1f} ms | {join['berthd']/join['dockerd']:.3f}× |")
lines.append(f"| `run -d` ×{n}, 16 clients | {br}/s | {dr}/s | {float(br)/float(dr):.1f}× |")
lines.append(f"| engine PSS per idle container (×{idle}) | {bi} KiB | {di} KiB | {float(bi)/float(di):.3f}× |")
open(f"{out}/engines.md", "w").write("\n".join(lines) + "\n")
json.dump({"run_median_s": med, "join_s": join, "run_d_per_s": {"berthd": float(br), "dockerd": float(dr)},
           "idle_pss_kib": {"berthd": float(bi), "dockerd": float(di)}}, open(f"{out}/engines.json", "w"), indent=1)
print("\n".join(lines))
PY
