// berth's container datapath: a tc program on the host end of every container veth.
//
// Packets a container sends (ingress of its host-side veth) are counted for the container;
// IPv4 and IPv6 packets to another container of the same network go straight to that container's
// interface with bpf_redirect_peer (no bridge, no host stack); packets to another network's
// containers or subnets are dropped (Docker's isolation between networks); everything else
// (ARP, the gateway, the outside world) continues to the bridge.
//
// All state is in maps, keyed by what the Rust side knows: the number of rules does not grow
// with the number of containers.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Built twice: as is, and with BERTH_PINNED (maps pinned by name under berthd's bpffs
// directory, so a restarted daemon finds the running datapath's state).
#ifdef BERTH_PINNED
#define PINNED __uint(pinning, LIBBPF_PIN_BY_NAME);
#else
#define PINNED
#endif

// A container endpoint, by its IPv4 address.
struct endpoint {
	__u32 ifindex;  // the host end of its veth
	__u32 network;  // berth's number for its network
};

// What the host end of a container's veth belongs to.
struct port {
	__u32 network;
	__u32 pad;
};

// Per container (host veth ifindex): what it sent and what it was sent through the datapath.
struct counters {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 dropped;
};

struct subnet_key {
	__u32 prefixlen;
	__u32 addr;  // network byte order
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);  // IPv4 address, network byte order
	__type(value, struct endpoint);
	PINNED
} ENDPOINTS SEC(".maps");

// IPv6 endpoints and subnets, the same way.
struct in6_key {
	__u32 addr[4];
};

struct subnet6_key {
	__u32 prefixlen;
	__u32 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct in6_key);
	__type(value, struct endpoint);
	PINNED
} ENDPOINTS6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct subnet6_key);
	__type(value, __u32);  // network
	PINNED
} SUBNETS6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);  // host veth ifindex
	__type(value, struct port);
	PINNED
} PORTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);  // host veth ifindex
	__type(value, struct counters);
	PINNED
} COUNTERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct subnet_key);
	__type(value, __u32);  // network
	PINNED
} SUBNETS SEC(".maps");

static __always_inline void count(__u32 ifindex, int rx, __u64 bytes, int drop)
{
	struct counters *c = bpf_map_lookup_elem(&COUNTERS, &ifindex);
	if (!c)
		return;
	if (drop) {
		__sync_fetch_and_add(&c->dropped, 1);
	} else if (rx) {
		__sync_fetch_and_add(&c->rx_packets, 1);
		__sync_fetch_and_add(&c->rx_bytes, bytes);
	} else {
		__sync_fetch_and_add(&c->tx_packets, 1);
		__sync_fetch_and_add(&c->tx_bytes, bytes);
	}
}

SEC("classifier")
int from_container(struct __sk_buff *skb)
{
	__u32 in = skb->ifindex;
	__u64 len = skb->len;
	struct port *src = bpf_map_lookup_elem(&PORTS, &in);
	if (!src)
		return TC_ACT_OK;  // not a container port berth knows

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end) {
		count(in, 0, len, 0);
		return TC_ACT_OK;
	}
	struct endpoint *dst = 0;
	__u32 *net = 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end) {
			count(in, 0, len, 0);
			return TC_ACT_OK;
		}
		__u32 daddr = ip->daddr;
		dst = bpf_map_lookup_elem(&ENDPOINTS, &daddr);
		if (!dst) {
			struct subnet_key key = { .prefixlen = 32, .addr = daddr };
			net = bpf_map_lookup_elem(&SUBNETS, &key);
		}
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end) {
			count(in, 0, len, 0);
			return TC_ACT_OK;
		}
		// Multicast (neighbour discovery among it) and link-local go by the bridge.
		__u8 first = ip6->daddr.in6_u.u6_addr8[0];
		__u8 second = ip6->daddr.in6_u.u6_addr8[1];
		if (first == 0xff || (first == 0xfe && (second & 0xc0) == 0x80)) {
			count(in, 0, len, 0);
			return TC_ACT_OK;
		}
		struct in6_key k;
		__builtin_memcpy(k.addr, ip6->daddr.in6_u.u6_addr32, sizeof(k.addr));
		dst = bpf_map_lookup_elem(&ENDPOINTS6, &k);
		if (!dst) {
			struct subnet6_key key = { .prefixlen = 128 };
			__builtin_memcpy(key.addr, k.addr, sizeof(key.addr));
			net = bpf_map_lookup_elem(&SUBNETS6, &key);
		}
	} else {
		count(in, 0, len, 0);
		return TC_ACT_OK;
	}
	if (dst) {
		if (dst->network != src->network) {
			count(in, 0, len, 1);
			return TC_ACT_SHOT;
		}
		count(in, 0, len, 0);
		count(dst->ifindex, 1, len, 0);
		return bpf_redirect_peer(dst->ifindex, 0);
	}
	if (net && *net != src->network) {
		count(in, 0, len, 1);
		return TC_ACT_SHOT;
	}
	count(in, 0, len, 0);
	return TC_ACT_OK;
}

// Packets the bridge or the host delivers to a container (egress of its host-side veth).
SEC("classifier")
int to_container(struct __sk_buff *skb)
{
	__u32 out = skb->ifindex;
	count(out, 1, skb->len, 0);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
