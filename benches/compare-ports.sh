#!/usr/bin/env bash
# Published ports, side by side, in one run: the same server (berth-port-bench, static,
# bind-mounted into a busybox container) reached through a published port
#   - berthd, from the host at 127.0.0.1:P: cgroup BPF (connect4), no proxy, no NAT;
#   - dockerd (Debian's 20.10) from the host at 127.0.0.1:P: docker-proxy, its userland proxy;
#   - berthd from "outside": a test namespace behind a veth, to the host's address on it:
#     berthd's nftables DNAT (the kernel path for traffic that does not start on the host);
#   - the floor: the container's own address, from the host.
# Each: one stream (MiB/s), one-byte round trips (median and p99 µs), connections per second,
# the median of --rounds rounds, interleaved. Then name lookups of the server container from a
# container on the same user-defined network: berthd's resolver (the network's gateway) vs
# dockerd's embedded 127.0.0.11, from inside a container's network namespace (nsenter).
#
#   sudo bash benches/compare-ports.sh [--rounds N] [--stream-mib N]
#
# dockerd runs with --bridge=none --iptables=false --ip6tables=false and one user-defined
# bridge network of its own for the container; the outside namespace uses 198.18.8.0/30.
# Everything is removed at the end. Results: target/bench/ports.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 mib=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --stream-mib) mib=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--stream-mib N]" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "compare-ports.sh: the engines need root" >&2
  exit 1
fi
need=()
for p in docker.io nftables; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo build --release -q -p berth-daemon -p berth-cli -p berth-kernel-tests -p berth-benches
bin=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release
"$bin/berth-fixtures" >/dev/null
out=$PWD/target/bench
mkdir -p "$out"
work=$(mktemp -d /tmp/ports.XXXXXX)
B="unix://$work/berth.sock"
D="unix://$work/docker.sock"
tag=$$
ns=bench-out-$tag
host_end=bpo$tag
berthd_pid= dockerd_pid=

cleanup() {
  set +e
  "$bin/berth" -H "$B" rm -f bench-port >/dev/null 2>&1
  "$bin/berth" -H "$B" network rm benchnet >/dev/null 2>&1
  docker -H "$D" rm -f bench-port >/dev/null 2>&1
  docker -H "$D" network rm benchnet >/dev/null 2>&1
  [ -n "$berthd_pid" ] && kill "$berthd_pid" && wait "$berthd_pid"
  [ -n "$dockerd_pid" ] && kill "$dockerd_pid" && wait "$dockerd_pid"
  "$bin/berth-port-bench" unpin "$work/bpf/berth/ports" 2>/dev/null
  nft delete table ip "bb$tag" 2>/dev/null
  ip netns delete "$ns" 2>/dev/null
  ip link delete "$host_end" 2>/dev/null
  ip link delete "bb$tag" 2>/dev/null
  ip link delete "bd$tag" 2>/dev/null
  ip link delete "bn$tag" 2>/dev/null
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/berthd" --root "$work/berth-root" --exec-root "$work/berth-run" -H "$B" \
  --bridge "bb$tag" --nft-table "bb$tag" --bpf-pin-dir "$work/bpf/berth" \
  --block-registry '*' >"$work/berthd.log" 2>&1 &
berthd_pid=$!
dockerd --data-root "$work/docker-root" --exec-root "$work/docker-run" -H "$D" \
  --pidfile "$work/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
  >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for host in "$B" "$D"; do
  for _ in $(seq 300); do DOCKER_HOST=$host docker version >/dev/null 2>&1 && break; sleep 0.1; done
done
"$bin/berth" -H "$B" load -i target/fixtures/busybox-docker.tar >/dev/null
docker -H "$D" load -i target/fixtures/busybox-docker.tar >/dev/null
docker -H "$D" network create -d bridge -o com.docker.network.bridge.name="bd$tag" benchnet >/dev/null
"$bin/berth" -H "$B" network create -d bridge -o com.docker.network.bridge.name="bn$tag" benchnet >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0",0)); print(s.getsockname()[1])'; }
pb=$(free_port) pd=$(free_port)
server=(-v "$bin/berth-port-bench:/berth-port-bench:ro" busybox /berth-port-bench serve 9000)
"$bin/berth" -H "$B" run -d --name bench-port --network benchnet -p "$pb:9000" "${server[@]}" >/dev/null
docker -H "$D" run -d --name bench-port --network benchnet -p "$pd:9000" "${server[@]}" >/dev/null
berth_ip=$("$bin/berth" -H "$B" inspect -f '{{.NetworkSettings.Networks.benchnet.IPAddress}}' bench-port)
berth_gw=$("$bin/berth" -H "$B" network inspect -f '{{(index .IPAM.Config 0).Gateway}}' benchnet)
berth_pid=$("$bin/berth" -H "$B" inspect -f '{{.State.Pid}}' bench-port)
docker_pid=$(docker -H "$D" inspect -f '{{.State.Pid}}' bench-port)

ip netns add "$ns"
ip link add "$host_end" type veth peer name eth0 netns "$ns"
ip addr add 198.18.8.1/30 dev "$host_end"
ip link set "$host_end" up
ip -n "$ns" addr add 198.18.8.2/30 dev eth0
ip -n "$ns" link set eth0 up
ip -n "$ns" link set lo up

client=("$bin/berth-port-bench" client)
opts=(--stream-mib "$mib" --round-trips 20000 --connections 2000)
: >"$work/results"
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  echo "berth-bpf $("${client[@]}" 127.0.0.1 "$pb" "${opts[@]}")" >>"$work/results"
  echo "docker-proxy $("${client[@]}" 127.0.0.1 "$pd" "${opts[@]}")" >>"$work/results"
  echo "berth-nft-dnat $(ip netns exec "$ns" "${client[@]}" 198.18.8.1 "$pb" "${opts[@]}")" >>"$work/results"
  echo "direct $("${client[@]}" "$berth_ip" 9000 "${opts[@]}")" >>"$work/results"
  echo "dns-berth $(nsenter --net=/proc/$berth_pid/ns/net "$bin/berth-port-bench" dns "$berth_gw:53" bench-port)" >>"$work/results"
  echo "dns-docker $(nsenter --net=/proc/$docker_pid/ns/net "$bin/berth-port-bench" dns 127.0.0.11:53 bench-port)" >>"$work/results"
done

python3 - "$work/results" "$out" "$rounds" <<'PY'
import json, statistics, sys
results, out, rounds = sys.argv[1], sys.argv[2], sys.argv[3]
by = {}
for line in open(results):
    name, data = line.split(" ", 1)
    by.setdefault(name, []).append(json.loads(data))
med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in by.items()}
labels = {
    "berth-bpf": "berthd, host → 127.0.0.1:P (cgroup BPF)",
    "docker-proxy": "dockerd, host → 127.0.0.1:P (docker-proxy)",
    "berth-nft-dnat": "berthd, outside namespace → host address:P (nftables DNAT)",
    "direct": "container address, no published port (floor)",
}
rows = ["| path | stream MiB/s | round trip median µs | p99 µs | connections/s |", "|---|---|---|---|---|"]
for n in ["berth-bpf", "docker-proxy", "berth-nft-dnat", "direct"]:
    m = med[n]
    rows.append(f"| {labels[n]} | {m['stream_mib_s']:.0f} | {m['rr_median_us']:.1f} | {m['rr_p99_us']:.1f} | {m['connections_s']:.0f} |")
rows.append("")
rows.append("| name lookup from a container (A, 5000 in a row) | median µs | p99 µs | answered |")
rows.append("|---|---|---|---|")
for n, label in [("dns-berth", "berthd: the network's resolver on its gateway"), ("dns-docker", "dockerd: embedded 127.0.0.11")]:
    m = med[n]
    rows.append(f"| {label} | {m['dns_median_us']:.1f} | {m['dns_p99_us']:.1f} | {m['answered']:.0f}/{m['queries']:.0f} |")
b, d = med["berth-bpf"], med["docker-proxy"]
rows.append("")
rows.append(f"berth vs docker-proxy, same run (median of {rounds} rounds): stream {b['stream_mib_s']/d['stream_mib_s']:.2f}×, round trip {b['rr_median_us']/d['rr_median_us']:.2f}× the time, connections {b['connections_s']/d['connections_s']:.2f}×; name lookup {med['dns-berth']['dns_median_us']/med['dns-docker']['dns_median_us']:.2f}× the time.")
open(f"{out}/ports.md", "w").write("\n".join(rows) + "\n")
json.dump({"rounds": int(rounds), "median": med}, open(f"{out}/ports.json", "w"), indent=1)
print("\n".join(rows))
PY
