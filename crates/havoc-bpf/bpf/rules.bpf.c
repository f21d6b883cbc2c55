// SPDX-License-Identifier: GPL-2.0
/*
 * Havoc's network-fault datapath: one TC classifier (attached through a TCX link) that walks a
 * table of up to HAVOC_MAX_RULES rules in slot order and applies loss, Gilbert-Elliott loss,
 * corruption, duplication or partition to the packets each rule matches.
 *
 * The layout of `struct havoc_rule` is mirrored byte for byte by `src/rule.rs` (encode()); keep
 * the two in sync (the _Static_asserts below and the Rust unit tests pin the offsets).
 *
 * One rule is applied by the global function havoc_slot(), called once per occupied slot. The
 * verifier checks a global function once, on its own, and at each call only its arguments: it
 * processes ~3,300 instructions in a few ms, where inlining the rule body in all 32 slots made
 * it process ~272,000 (~0.6 s). bpf_loop() alone does not help (its callback is verified in the
 * caller's state: still ~68,000 instructions, ~0.2 s), and bpf_loop() calling havoc_slot()
 * costs two calls per slot; with SRSO "safe RET" (AMD EPYC here) each return costs several ns.
 *
 * Parsing uses bpf_skb_load_bytes() rather than direct packet access: clang 14 + a variable IPv4
 * IHL is rejected by the verifier with direct access (KERNEL.md row 2b).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define HAVOC_MAX_RULES 32
#define HAVOC_MAX_V4 4
#define HAVOC_MAX_V6 2
#define HAVOC_MAX_PORTS 4

/* skb->mark set on the original while it is cloned, so the clone passes untouched. */
#define HAVOC_DUP_MARK 0x48564450 /* "HVDP" */

enum havoc_action {
	ACT_NONE = 0,
	ACT_LOSS = 1,      /* p[0] = probability, p[1] = correlation rho */
	ACT_LOSS_GE = 2,   /* p[0] = p (good->bad), p[1] = r (bad->good), p[2] = 1-h, p[3] = 1-k */
	ACT_CORRUPT = 3,   /* p[0] = probability; csum_mode */
	ACT_DUPLICATE = 4, /* p[0] = probability */
	ACT_PARTITION = 5,
};

enum havoc_side { SIDE_SRC = 0, SIDE_DST = 1, SIDE_EITHER = 2 };

enum havoc_proto_bit {
	PROTO_TCP = 1, PROTO_UDP = 2, PROTO_ICMP = 4, PROTO_ICMPV6 = 8, PROTO_OTHER = 16,
};

enum havoc_csum_mode { CSUM_KEEP = 0, CSUM_BREAK = 1 };

enum havoc_drop_verdict { VERDICT_SHOT = 0, VERDICT_STOLEN = 1, VERDICT_REDIRECT_VOID = 2 };

struct havoc_cidr4 {
	__u32 addr; /* network byte order, already masked */
	__u32 mask;
};

struct havoc_cidr6 {
	__u32 addr[4];
	__u32 mask[4];
};

struct havoc_rule {
	__u32 gen; /* 0 = empty slot */
	__u8 action;
	__u8 addr_side;
	__u8 port_side;
	__u8 proto_mask; /* 0 = any */
	__u64 expiry_ns; /* CLOCK_MONOTONIC; 0 = never */
	__u8 n_v4;
	__u8 n_v6;
	__u8 n_ports;
	__u8 csum_mode;
	__u16 port_lo; /* host order; used when n_ports == 0 and port_hi != 0 */
	__u16 port_hi;
	__u16 ports[HAVOC_MAX_PORTS]; /* host order */
	__u32 p[4];
	struct havoc_cidr4 v4[HAVOC_MAX_V4];
	struct havoc_cidr6 v6[HAVOC_MAX_V6];
};
_Static_assert(sizeof(struct havoc_rule) == 144, "havoc_rule layout changed: update rule.rs");
_Static_assert(__builtin_offsetof(struct havoc_rule, p) == 32, "havoc_rule.p moved");
_Static_assert(__builtin_offsetof(struct havoc_rule, v4) == 48, "havoc_rule.v4 moved");
_Static_assert(__builtin_offsetof(struct havoc_rule, v6) == 80, "havoc_rule.v6 moved");

struct havoc_state {
	__u32 last;   /* correlated loss: last random value */
	__u32 ge_bad; /* Gilbert-Elliott: 1 = bad state */
};

enum { CNT_SEEN = 0, CNT_MATCHED, CNT_DROPPED, CNT_CORRUPTED, CNT_DUPLICATED, CNT_MAX };

struct havoc_counters {
	__u64 c[CNT_MAX];
};

struct havoc_cfg {
	__u32 drop_verdict;
	__u32 ingress;  /* 1 when attached on ingress */
	__u32 occupied; /* bit i set: slot i holds a rule. The walk skips the others. */
};
_Static_assert(sizeof(struct havoc_cfg) == 12, "havoc_cfg layout changed: update datapath.rs");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HAVOC_MAX_RULES);
	__type(key, __u32);
	__type(value, struct havoc_rule);
} havoc_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HAVOC_MAX_RULES);
	__type(key, __u32);
	__type(value, struct havoc_state);
} havoc_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HAVOC_MAX_RULES);
	__type(key, __u32);
	__type(value, struct havoc_counters);
} havoc_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct havoc_cfg);
} havoc_cfg SEC(".maps");

struct pkt {
	__u32 saddr[4];
	__u32 daddr[4];
	__u32 l4off;
	__u32 payload_off; /* 0 = unknown */
	__u32 csum_off;    /* 0 = no L4 checksum we know of */
	__u16 sport;
	__u16 dport;
	__u8 v6;
	__u8 proto_bit;
	__u8 has_ports;
	__u8 is_udp;
};

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u8 l4proto;
	__u32 off;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		p->saddr[0] = ip.saddr;
		p->daddr[0] = ip.daddr;
		l4proto = ip.protocol;
		off = ETH_HLEN + ((__u32)ip.ihl & 0xf) * 4;
		/* Non-first fragments carry no L4 header. */
		if (ip.frag_off & bpf_htons(0x1fff)) {
			p->proto_bit = l4proto == IPPROTO_TCP ? PROTO_TCP
				       : l4proto == IPPROTO_UDP ? PROTO_UDP
				       : l4proto == IPPROTO_ICMP ? PROTO_ICMP : PROTO_OTHER;
			return 0;
		}
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		p->v6 = 1;
		l4proto = ip6.nexthdr; /* extension headers are classified as "other" */
		off = ETH_HLEN + sizeof(struct ipv6hdr);
	} else {
		return -1;
	}
	p->l4off = off;

	switch (l4proto) {
	case IPPROTO_TCP: {
		struct tcphdr th;
		p->proto_bit = PROTO_TCP;
		if (bpf_skb_load_bytes(skb, off, &th, sizeof(th)) < 0)
			return 0;
		p->sport = bpf_ntohs(th.source);
		p->dport = bpf_ntohs(th.dest);
		p->has_ports = 1;
		p->csum_off = off + __builtin_offsetof(struct tcphdr, check);
		p->payload_off = off + ((__u32)th.doff & 0xf) * 4;
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr uh;
		p->proto_bit = PROTO_UDP;
		p->is_udp = 1;
		if (bpf_skb_load_bytes(skb, off, &uh, sizeof(uh)) < 0)
			return 0;
		p->sport = bpf_ntohs(uh.source);
		p->dport = bpf_ntohs(uh.dest);
		p->has_ports = 1;
		p->csum_off = off + __builtin_offsetof(struct udphdr, check);
		p->payload_off = off + sizeof(struct udphdr);
		break;
	}
	case IPPROTO_ICMP:
		p->proto_bit = p->v6 ? PROTO_OTHER : PROTO_ICMP;
		if (!p->v6) {
			p->csum_off = off + 2;
			p->payload_off = off + 8;
		}
		break;
	case IPPROTO_ICMPV6:
		p->proto_bit = PROTO_ICMPV6;
		p->csum_off = off + 2;
		p->payload_off = off + 8;
		break;
	default:
		p->proto_bit = PROTO_OTHER;
		break;
	}
	return 0;
}

static __always_inline int addr_match(const struct havoc_rule *r, const __u32 *a, int v6)
{
	if (!v6) {
#pragma unroll
		for (int i = 0; i < HAVOC_MAX_V4; i++) {
			if (i < r->n_v4 && (a[0] & r->v4[i].mask) == r->v4[i].addr)
				return 1;
		}
		return 0;
	}
#pragma unroll
	for (int i = 0; i < HAVOC_MAX_V6; i++) {
		if (i < r->n_v6 &&
		    (a[0] & r->v6[i].mask[0]) == r->v6[i].addr[0] &&
		    (a[1] & r->v6[i].mask[1]) == r->v6[i].addr[1] &&
		    (a[2] & r->v6[i].mask[2]) == r->v6[i].addr[2] &&
		    (a[3] & r->v6[i].mask[3]) == r->v6[i].addr[3])
			return 1;
	}
	return 0;
}

static __always_inline int port_match1(const struct havoc_rule *r, __u16 port)
{
	if (r->n_ports) {
#pragma unroll
		for (int i = 0; i < HAVOC_MAX_PORTS; i++) {
			if (i < r->n_ports && r->ports[i] == port)
				return 1;
		}
		return 0;
	}
	return port >= r->port_lo && port <= r->port_hi;
}

static __always_inline int rule_matches(const struct havoc_rule *r, const struct pkt *p)
{
	if (r->proto_mask && !(r->proto_mask & p->proto_bit))
		return 0;
	if (r->n_v4 || r->n_v6) {
		int m = 0;
		if (r->addr_side != SIDE_DST)
			m = addr_match(r, p->saddr, p->v6);
		if (!m && r->addr_side != SIDE_SRC)
			m = addr_match(r, p->daddr, p->v6);
		if (!m)
			return 0;
	}
	if (r->n_ports || r->port_hi) {
		int m = 0;
		if (!p->has_ports)
			return 0;
		if (r->port_side != SIDE_SRC)
			m = port_match1(r, p->dport);
		if (!m && r->port_side != SIDE_DST)
			m = port_match1(r, p->sport);
		if (!m)
			return 0;
	}
	return 1;
}

/* P(hit) = prob / 2^32; prob == U32_MAX means "always". */
static __always_inline int chance(__u32 prob)
{
	if (prob == 0xffffffff)
		return 1;
	return bpf_get_prandom_u32() < prob;
}

static __always_inline void bump(struct havoc_counters *c, int idx)
{
	if (c && idx >= 0 && idx < CNT_MAX)
		c->c[idx]++;
}

static __always_inline int decide_loss(const struct havoc_rule *r, __u32 slot)
{
	__u32 rho = r->p[1];
	if (rho == 0)
		return chance(r->p[0]);
	struct havoc_state *st = bpf_map_lookup_elem(&havoc_state, &slot);
	if (!st)
		return chance(r->p[0]);
	/* netem's get_crandom(): next = (1-rho)*rand + rho*last */
	__u64 rnd = bpf_get_prandom_u32();
	__u32 value = (__u32)((rnd * ((1ULL << 32) - rho) + (__u64)st->last * rho) >> 32);
	st->last = value;
	if (r->p[0] == 0xffffffff)
		return 1;
	return value < r->p[0];
}

/* netem's loss_gilb_ell(): the loss decision uses the state the packet found. */
static __always_inline int decide_ge(const struct havoc_rule *r, __u32 slot)
{
	struct havoc_state *st = bpf_map_lookup_elem(&havoc_state, &slot);
	if (!st)
		return 0;
	if (!st->ge_bad) {
		if (chance(r->p[0]))
			st->ge_bad = 1;
		return chance(r->p[3]);
	}
	if (chance(r->p[1]))
		st->ge_bad = 0;
	return chance(r->p[2]);
}

/* Flips one random bit in one of the first 64 bytes of the L4 payload. Returns 1 if done. */
static __always_inline int corrupt(struct __sk_buff *skb, const struct pkt *p, __u8 mode)
{
	if (!p->payload_off || skb->len < p->payload_off + 2)
		return 0;
	__u32 avail = (skb->len - p->payload_off) / 2;
	if (avail > 32)
		avail = 32;
	__u32 rnd = bpf_get_prandom_u32();
	__u32 off = p->payload_off + 2 * (rnd % avail); /* 16-bit aligned relative to the L4 header */
	__u32 bit = (rnd >> 16) & 15;
	__u16 old, new;

	if (bpf_skb_load_bytes(skb, off, &old, 2) < 0)
		return 0;
	new = old ^ (__u16)(1 << bit);

	if (mode == CSUM_KEEP) {
		/* Payload and checksum change by opposite amounts: skb->csum (CHECKSUM_COMPLETE) stays
		 * valid, and bpf_l4_csum_replace() is a no-op for CHECKSUM_PARTIAL (the checksum is
		 * computed later over the corrupted payload). The receiver gets valid-checksum garbage. */
		if (bpf_skb_store_bytes(skb, off, &new, 2, 0) < 0)
			return 0;
		if (p->csum_off)
			bpf_l4_csum_replace(skb, p->csum_off, old, new,
					    2 | (p->is_udp ? BPF_F_MARK_MANGLED_0 : 0));
		return 1;
	}

	/* CSUM_BREAK: leave the checksum wrong. Also perturb the checksum field itself (a
	 * different bit, so the two changes can never cancel): with CHECKSUM_PARTIAL the field is
	 * the seed the device sums the (corrupted) payload onto, so a wrong seed is what makes the
	 * checksum on the wire wrong. Force the receiving stack to verify (CHECKSUM_UNNECESSARY ->
	 * NONE) and keep skb->csum honest for CHECKSUM_COMPLETE. */
	if (bpf_skb_store_bytes(skb, off, &new, 2, BPF_F_RECOMPUTE_CSUM) < 0)
		return 0;
	if (p->csum_off) {
		__u16 c;
		if (bpf_skb_load_bytes(skb, p->csum_off, &c, 2) == 0) {
			c ^= (__u16)(1 << ((bit + 1) & 15));
			bpf_skb_store_bytes(skb, p->csum_off, &c, 2, BPF_F_RECOMPUTE_CSUM);
		}
	}
	bpf_csum_level(skb, BPF_CSUM_LEVEL_RESET);
	return 1;
}

static __always_inline int drop_verdict(void)
{
	__u32 zero = 0;
	struct havoc_cfg *cfg = bpf_map_lookup_elem(&havoc_cfg, &zero);
	__u32 v = cfg ? cfg->drop_verdict : VERDICT_SHOT;
	if (v == VERDICT_STOLEN)
		return TC_ACT_STOLEN;
	if (v == VERDICT_REDIRECT_VOID)
		return bpf_redirect(0, 0); /* ifindex 0 never exists: skb_do_redirect frees it */
	return TC_ACT_SHOT;
}

/*
 * Applies the rule in `slot` to the packet: returns 1 if the packet is to be dropped (which
 * ends the walk), 0 to go on with the next slot. `*now` caches bpf_ktime_get_ns() across the
 * walk (0 = not read yet).
 *
 * A global (non-static, noinline) function: the verifier checks it once, on its own, with every
 * argument unknown, whatever the caller's state. The classifier's cost for the verifier is then
 * one rule body instead of one per slot.
 */
__attribute__((noinline)) int havoc_slot(struct __sk_buff *skb, const struct pkt *p, __u32 slot,
					 __u64 *now)
{
	__u32 key = slot;
	struct havoc_rule *r;

	if (!p || !now)
		return 0;
	r = bpf_map_lookup_elem(&havoc_table, &key);
	if (!r || !r->gen || r->action == ACT_NONE)
		return 0;
	if (r->expiry_ns) {
		if (!*now)
			*now = bpf_ktime_get_ns();
		if (*now >= r->expiry_ns)
			return 0;
	}
	struct havoc_counters *c = bpf_map_lookup_elem(&havoc_counters, &key);
	bump(c, CNT_SEEN);
	if (!rule_matches(r, p))
		return 0;
	bump(c, CNT_MATCHED);

	switch (r->action) {
	case ACT_PARTITION:
		break;
	case ACT_LOSS:
		if (!decide_loss(r, key))
			return 0;
		break;
	case ACT_LOSS_GE:
		if (!decide_ge(r, key))
			return 0;
		break;
	case ACT_CORRUPT:
		if (chance(r->p[0]) && corrupt(skb, p, r->csum_mode))
			bump(c, CNT_CORRUPTED);
		return 0;
	case ACT_DUPLICATE:
		if (chance(r->p[0])) {
			__u32 zero = 0;
			struct havoc_cfg *cfg = bpf_map_lookup_elem(&havoc_cfg, &zero);
			__u64 flags = (cfg && cfg->ingress) ? BPF_F_INGRESS : 0;
			__u32 mark = skb->mark;
			skb->mark = HAVOC_DUP_MARK;
			if (bpf_clone_redirect(skb, skb->ifindex, flags) == 0)
				bump(c, CNT_DUPLICATED);
			skb->mark = mark;
		}
		return 0;
	default:
		return 0;
	}
	bump(c, CNT_DROPPED);
	return 1;
}

SEC("classifier")
int havoc_rules(struct __sk_buff *skb)
{
	struct pkt p = {};
	__u64 now = 0;
	__u32 zero = 0;

	if (skb->mark == HAVOC_DUP_MARK) {
		skb->mark = 0; /* our own duplicate: pass it untouched */
		return TC_ACT_UNSPEC;
	}
	if (parse(skb, &p) < 0)
		return TC_ACT_UNSPEC;

	struct havoc_cfg *cfg = bpf_map_lookup_elem(&havoc_cfg, &zero);
	__u32 occupied = cfg ? cfg->occupied : 0xffffffff;

	/* Unrolled, but each step is one call of havoc_slot(), which the verifier has already
	 * checked: it only checks the arguments here. Empty slots cost no call. */
#pragma unroll
	for (__u32 slot = 0; slot < HAVOC_MAX_RULES; slot++) {
		if (!(occupied >> slot))
			break;
		if (!((occupied >> slot) & 1))
			continue;
		if (havoc_slot(skb, &p, slot, &now))
			return drop_verdict();
	}
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
