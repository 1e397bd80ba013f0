#include "request.h"

#include "expect.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <utility>

namespace ct {

static_assert(NFNL_SUBSYS_CTNETLINK == 1, "MessageBuffer::Begin's default subsystem");

struct nlmsghdr* MessageBuffer::Begin(uint8_t msgType, uint16_t flags, uint8_t family, uint32_t seq, uint8_t version,
                                      uint8_t subsys) {
  if (remaining() < kMaxEntryMessage) buf_.resize(buf_.size() * 2 + kMaxEntryMessage);
  char* p = buf_.data() + used_;
  std::memset(p, 0, kMaxEntryMessage);
  struct nlmsghdr* nlh = mnl_nlmsg_put_header(p);
  nlh->nlmsg_type = static_cast<uint16_t>((subsys << 8) | msgType);
  nlh->nlmsg_flags = NLM_F_REQUEST | flags;
  nlh->nlmsg_seq = seq;
  struct nfgenmsg* nfg = static_cast<struct nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(struct nfgenmsg)));
  nfg->nfgen_family = family;
  nfg->version = version;
  nfg->res_id = 0;
  return nlh;
}

void PutTuple(struct nlmsghdr* nlh, uint16_t type, uint8_t family, const TupleSpec& t) {
  struct nlattr* tuple = mnl_attr_nest_start(nlh, type);
  if (t.hasSrc || t.hasDst) {
    struct nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
    if (family == AF_INET) {
      if (t.hasSrc) mnl_attr_put(nlh, CTA_IP_V4_SRC, 4, t.src);
      if (t.hasDst) mnl_attr_put(nlh, CTA_IP_V4_DST, 4, t.dst);
    } else {
      if (t.hasSrc) mnl_attr_put(nlh, CTA_IP_V6_SRC, 16, t.src);
      if (t.hasDst) mnl_attr_put(nlh, CTA_IP_V6_DST, 16, t.dst);
    }
    mnl_attr_nest_end(nlh, ip);
  }
  if (t.protocol >= 0) {
    struct nlattr* proto = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
    mnl_attr_put_u8(nlh, CTA_PROTO_NUM, static_cast<uint8_t>(t.protocol));
    if (t.hasSport) mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(t.sport));
    if (t.hasDport) mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(t.dport));
    bool v6 = t.protocol == IPPROTO_ICMPV6;
    if (t.hasIcmpId) mnl_attr_put_u16(nlh, v6 ? CTA_PROTO_ICMPV6_ID : CTA_PROTO_ICMP_ID, htons(t.icmpId));
    if (t.hasIcmpType) mnl_attr_put_u8(nlh, v6 ? CTA_PROTO_ICMPV6_TYPE : CTA_PROTO_ICMP_TYPE, t.icmpType);
    if (t.hasIcmpCode) mnl_attr_put_u8(nlh, v6 ? CTA_PROTO_ICMPV6_CODE : CTA_PROTO_ICMP_CODE, t.icmpCode);
    mnl_attr_nest_end(nlh, proto);
  }
  if (t.hasZone) mnl_attr_put_u16(nlh, CTA_TUPLE_ZONE, htons(t.zone));
  mnl_attr_nest_end(nlh, tuple);
}

void PutEntry(struct nlmsghdr* nlh, const EntrySpec& s) {
  if (s.orig.present) PutTuple(nlh, CTA_TUPLE_ORIG, s.family, s.orig);
  if (s.reply.present) PutTuple(nlh, CTA_TUPLE_REPLY, s.family, s.reply);
  if (s.hasZone) mnl_attr_put_u16(nlh, CTA_ZONE, htons(s.zone));
  if (s.hasId) mnl_attr_put_u32(nlh, CTA_ID, htonl(s.id));
  if (s.hasTimeout) mnl_attr_put_u32(nlh, CTA_TIMEOUT, htonl(s.timeout));
  if (s.hasStatus) mnl_attr_put_u32(nlh, CTA_STATUS, htonl(s.status));
  if (s.hasMark) mnl_attr_put_u32(nlh, CTA_MARK, htonl(s.mark));
  if (s.hasMarkMask) mnl_attr_put_u32(nlh, CTA_MARK_MASK, htonl(s.markMask));
  for (const auto& [type, nat] : {std::pair<uint16_t, const EntrySpec::Nat*>{CTA_NAT_SRC, &s.snat}, {CTA_NAT_DST, &s.dnat}}) {
    if (!nat->present) continue;
    struct nlattr* n = mnl_attr_nest_start(nlh, type);
    if (s.family == AF_INET) {
      mnl_attr_put(nlh, CTA_NAT_V4_MINIP, 4, nat->addr);
      mnl_attr_put(nlh, CTA_NAT_V4_MAXIP, 4, nat->addr);
    } else {
      mnl_attr_put(nlh, CTA_NAT_V6_MINIP, 16, nat->addr);
      mnl_attr_put(nlh, CTA_NAT_V6_MAXIP, 16, nat->addr);
    }
    if (nat->hasPort) {
      struct nlattr* p = mnl_attr_nest_start(nlh, CTA_NAT_PROTO);
      mnl_attr_put_u16(nlh, CTA_PROTONAT_PORT_MIN, htons(nat->port));
      mnl_attr_put_u16(nlh, CTA_PROTONAT_PORT_MAX, htons(nat->port));
      mnl_attr_nest_end(nlh, p);
    }
    mnl_attr_nest_end(nlh, n);
  }
  if (s.hasLabels) mnl_attr_put(nlh, CTA_LABELS, sizeof(s.labels), s.labels);
  if (s.hasLabelsMask) mnl_attr_put(nlh, CTA_LABELS_MASK, sizeof(s.labelsMask), s.labelsMask);
  if (s.state >= 0) {
    struct nlattr* pi = mnl_attr_nest_start(nlh, CTA_PROTOINFO);
    uint8_t st = static_cast<uint8_t>(s.state);
    switch (s.orig.protocol) {
      case IPPROTO_TCP: {
        struct nlattr* tcp = mnl_attr_nest_start(nlh, CTA_PROTOINFO_TCP);
        mnl_attr_put_u8(nlh, CTA_PROTOINFO_TCP_STATE, st);
        mnl_attr_nest_end(nlh, tcp);
        break;
      }
      case IPPROTO_SCTP: {
        // The kernel insists on both verification tags alongside the state.
        struct nlattr* sctp = mnl_attr_nest_start(nlh, CTA_PROTOINFO_SCTP);
        mnl_attr_put_u8(nlh, CTA_PROTOINFO_SCTP_STATE, st);
        mnl_attr_put_u32(nlh, CTA_PROTOINFO_SCTP_VTAG_ORIGINAL, htonl(s.vtagOriginal));
        mnl_attr_put_u32(nlh, CTA_PROTOINFO_SCTP_VTAG_REPLY, htonl(s.vtagReply));
        mnl_attr_nest_end(nlh, sctp);
        break;
      }
      case IPPROTO_DCCP: {
        struct nlattr* dccp = mnl_attr_nest_start(nlh, CTA_PROTOINFO_DCCP);
        mnl_attr_put_u8(nlh, CTA_PROTOINFO_DCCP_STATE, st);
        mnl_attr_put_u8(nlh, CTA_PROTOINFO_DCCP_ROLE, s.dccpRole);
        mnl_attr_nest_end(nlh, dccp);
        break;
      }
      default:
        break;
    }
    mnl_attr_nest_end(nlh, pi);
  }
}

void PutDumpFilter(struct nlmsghdr* nlh, const KernelFilter& f) {
  if (f.hasMark) {
    mnl_attr_put_u32(nlh, CTA_MARK, htonl(f.mark));
    mnl_attr_put_u32(nlh, CTA_MARK_MASK, htonl(f.markMask));
  }
  if (f.hasStatus) {
    mnl_attr_put_u32(nlh, CTA_STATUS, htonl(f.status));
    mnl_attr_put_u32(nlh, CTA_STATUS_MASK, htonl(f.statusMask));
  }
  if (f.origFlags && f.family) {
    PutTuple(nlh, CTA_TUPLE_ORIG, f.family, f.tuple);
    struct nlattr* filter = mnl_attr_nest_start(nlh, CTA_FILTER);
    // CTA_FILTER_*_FLAGS are host-order u32 (unlike most ctnetlink attributes).
    mnl_attr_put_u32(nlh, CTA_FILTER_ORIG_FLAGS, f.origFlags);
    mnl_attr_nest_end(nlh, filter);
  }
}

void PutExpect(struct nlmsghdr* nlh, const ExpectSpec& s) {
  if (s.master.present) PutTuple(nlh, CTA_EXPECT_MASTER, s.family, s.master);
  if (s.tuple.present) PutTuple(nlh, CTA_EXPECT_TUPLE, s.family, s.tuple);
  if (s.mask.present) PutTuple(nlh, CTA_EXPECT_MASK, s.family, s.mask);
  if (s.hasTimeout) mnl_attr_put_u32(nlh, CTA_EXPECT_TIMEOUT, htonl(s.timeout));
  if (s.hasId) mnl_attr_put_u32(nlh, CTA_EXPECT_ID, htonl(s.id));
  if (s.hasZone) mnl_attr_put_u16(nlh, CTA_EXPECT_ZONE, htons(s.zone));
  if (s.helper[0]) mnl_attr_put_strz(nlh, CTA_EXPECT_HELP_NAME, s.helper);
  if (s.hasFlags) mnl_attr_put_u32(nlh, CTA_EXPECT_FLAGS, htonl(s.flags));
  if (s.hasClass) mnl_attr_put_u32(nlh, CTA_EXPECT_CLASS, htonl(s.klass));
}

}  // namespace ct
