// berth's published ports for connections made on the host itself: cgroup socket-address
// programs on the root cgroup (v2) that send a connect() or sendmsg() to a published port on a
// host address straight to the container (no proxy process, no NAT rule), and make replies
// and getpeername() show the address the program was asked for.
//
// Only sockets of the host's network namespace are rewritten: 127.0.0.1:8080 inside a
// container is the container's own. All state is in maps pinned by name under berth's bpffs
// directory, so a restarted berthd keeps using the running programs.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// A published port, as the host sees it. `host_ip` 0 is "every host address".
struct published_key {
	__u32 host_ip;    // network byte order
	__u16 host_port;  // network byte order
	__u8 protocol;    // IPPROTO_TCP or IPPROTO_UDP
	__u8 pad;
};

struct target {
	__u32 ip;    // network byte order
	__u16 port;  // network byte order
	__u16 pad;
};

// For replies: the container's side, by which the original destination is found again.
struct reverse_key {
	__u32 ip;
	__u16 port;
	__u8 protocol;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct published_key);
	__type(value, struct target);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} PUBLISHED SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct reverse_key);
	__type(value, struct target);  // the host address and port asked for
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} PUBLISHED_REVERSE SEC(".maps");

// The host's addresses (besides 127.0.0.0/8), as berthd found them.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} HOST_ADDRESSES SEC(".maps");

// [0]: the host network namespace's cookie.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} HOST_NETNS SEC(".maps");

static __always_inline int in_host_netns(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	__u64 *host = bpf_map_lookup_elem(&HOST_NETNS, &zero);
	return host && *host && *host == bpf_get_netns_cookie(ctx);
}

static __always_inline int is_host_address(__u32 ip)
{
	if ((bpf_ntohl(ip) >> 24) == 127)
		return 1;
	return bpf_map_lookup_elem(&HOST_ADDRESSES, &ip) != 0;
}

static __always_inline struct target *published(struct bpf_sock_addr *ctx)
{
	__u32 ip = ctx->user_ip4;
	if (!in_host_netns(ctx) || !is_host_address(ip))
		return 0;
	struct published_key key = {
		.host_ip = ip,
		.host_port = (__u16)ctx->user_port,
		.protocol = (__u8)ctx->protocol,
	};
	struct target *t = bpf_map_lookup_elem(&PUBLISHED, &key);
	if (t)
		return t;
	key.host_ip = 0;
	return bpf_map_lookup_elem(&PUBLISHED, &key);
}

// TCP and UDP connect(): to the container instead.
SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	struct target *t = published(ctx);
	if (t) {
		ctx->user_ip4 = t->ip;
		ctx->user_port = t->port;
	}
	return 1;
}

// Unconnected UDP sendmsg(): the same.
SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return connect4(ctx);
}

static __always_inline void restore(struct bpf_sock_addr *ctx)
{
	if (!in_host_netns(ctx))
		return;
	struct reverse_key key = {
		.ip = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
		.protocol = (__u8)ctx->protocol,
	};
	struct target *t = bpf_map_lookup_elem(&PUBLISHED_REVERSE, &key);
	if (t) {
		ctx->user_ip4 = t->ip;
		ctx->user_port = t->port;
	}
}

// UDP replies come from the container: show them from the address that was asked.
SEC("cgroup/recvmsg4")
int recvmsg4(struct bpf_sock_addr *ctx)
{
	restore(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int getpeername4(struct bpf_sock_addr *ctx)
{
	restore(ctx);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
