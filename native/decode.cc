#include "decode.h"

#include "expect.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace ct {
namespace {

// Attribute tables small enough for the stack; index = attribute type.
template <int N>
struct AttrTable {
  const struct nlattr* tb[N + 1];
};

template <int N>
int CollectCb(const struct nlattr* attr, void* data) {
  auto* t = static_cast<AttrTable<N>*>(data);
  int type = mnl_attr_get_type(attr);
  if (type > 0 && type <= N) t->tb[type] = attr;
  return MNL_CB_OK;
}

template <int N>
bool ParseNested(const struct nlattr* nest, AttrTable<N>* t) {
  std::memset(t, 0, sizeof(*t));
  return mnl_attr_parse_nested(nest, CollectCb<N>, t) >= 0;
}

bool GetU8(const struct nlattr* a, uint8_t* v) {
  if (!a || mnl_attr_validate(a, MNL_TYPE_U8) < 0) return false;
  *v = mnl_attr_get_u8(a);
  return true;
}
bool GetBe16(const struct nlattr* a, uint16_t* v) {
  if (!a || mnl_attr_validate(a, MNL_TYPE_U16) < 0) return false;
  *v = ntohs(mnl_attr_get_u16(a));
  return true;
}
bool GetBe32(const struct nlattr* a, uint32_t* v) {
  if (!a || mnl_attr_validate(a, MNL_TYPE_U32) < 0) return false;
  *v = ntohl(mnl_attr_get_u32(a));
  return true;
}
bool GetBe64(const struct nlattr* a, uint64_t* v) {
  if (!a || mnl_attr_validate(a, MNL_TYPE_U64) < 0) return false;
  uint64_t raw;
  std::memcpy(&raw, mnl_attr_get_payload(a), sizeof(raw));
  *v = be64toh(raw);
  return true;
}
bool GetBytes(const struct nlattr* a, void* dst, size_t len) {
  if (!a || mnl_attr_get_payload_len(a) != len) return false;
  std::memcpy(dst, mnl_attr_get_payload(a), len);
  return true;
}

// A kernel name (NUL-padded, or not terminated at all) into the record's
// tail as string `tag`: up to its first NUL, at most kMaxStringBytes.
void AppendString(std::string* tail, RecordString tag, const struct nlattr* a) {
  if (!tail) return;
  const char* name = static_cast<const char*>(mnl_attr_get_payload(a));
  size_t n = strnlen(name, mnl_attr_get_payload_len(a));
  if (n > kMaxStringBytes) n = kMaxStringBytes;
  const uint16_t len = static_cast<uint16_t>(n);
  const char head[4] = {static_cast<char>(tag), 0, static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  tail->append(head, sizeof(head));
  tail->append(name, n);
}

// Pads the tail to a multiple of 8 (the next record stays aligned) and
// records its length in the record.
void EndTail(std::string* tail, uint16_t* tailBytes) {
  if (!tail) return;
  tail->resize((tail->size() + 7) & ~size_t{7}, '\0');
  *tailBytes = static_cast<uint16_t>(tail->size());
}


bool DecodeCounters(const struct nlattr* nest, uint64_t* packets, uint64_t* bytes) {
  AttrTable<CTA_COUNTERS_MAX> c;
  if (!ParseNested(nest, &c)) return false;
  uint32_t v32;
  if (c.tb[CTA_COUNTERS_PACKETS]) {
    if (!GetBe64(c.tb[CTA_COUNTERS_PACKETS], packets)) return false;
  } else if (c.tb[CTA_COUNTERS32_PACKETS]) {
    if (!GetBe32(c.tb[CTA_COUNTERS32_PACKETS], &v32)) return false;
    *packets = v32;
  }
  if (c.tb[CTA_COUNTERS_BYTES]) {
    if (!GetBe64(c.tb[CTA_COUNTERS_BYTES], bytes)) return false;
  } else if (c.tb[CTA_COUNTERS32_BYTES]) {
    if (!GetBe32(c.tb[CTA_COUNTERS32_BYTES], &v32)) return false;
    *bytes = v32;
  }
  return true;
}

bool DecodeProtoinfo(const struct nlattr* nest, Record* r) {
  AttrTable<CTA_PROTOINFO_MAX> pi;
  if (!ParseNested(nest, &pi)) return false;
  // Each protocol nests its own attributes; the state is attribute 1 in all three.
  const struct nlattr* inner = pi.tb[CTA_PROTOINFO_TCP] ? pi.tb[CTA_PROTOINFO_TCP]
                             : pi.tb[CTA_PROTOINFO_SCTP] ? pi.tb[CTA_PROTOINFO_SCTP]
                             : pi.tb[CTA_PROTOINFO_DCCP];
  if (!inner) return true;
  AttrTable<8> st;
  if (!ParseNested(inner, &st)) return false;
  if (st.tb[1]) {
    if (!GetU8(st.tb[1], &r->state)) return false;
    r->present |= kHasState;
  }
  if (pi.tb[CTA_PROTOINFO_SCTP] && st.tb[CTA_PROTOINFO_SCTP_VTAG_ORIGINAL] && st.tb[CTA_PROTOINFO_SCTP_VTAG_REPLY]) {
    if (!GetBe32(st.tb[CTA_PROTOINFO_SCTP_VTAG_ORIGINAL], &r->vtagOriginal)) return false;
    if (!GetBe32(st.tb[CTA_PROTOINFO_SCTP_VTAG_REPLY], &r->vtagReply)) return false;
    r->present |= kHasVtags;
  }
  return true;
}

}  // namespace

// CTA_TUPLE_* -> RecordTuple; sets family/protocol/presence on the record.
bool DecodeTuple(const struct nlattr* nest, RecordTuple* t, Record* r, bool isOrig) {
  AttrTable<CTA_TUPLE_MAX> tuple;
  if (!ParseNested(nest, &tuple)) return false;

  if (tuple.tb[CTA_TUPLE_IP]) {
    AttrTable<CTA_IP_MAX> ip;
    if (!ParseNested(tuple.tb[CTA_TUPLE_IP], &ip)) return false;
    if (ip.tb[CTA_IP_V4_SRC] || ip.tb[CTA_IP_V4_DST]) {
      if (!GetBytes(ip.tb[CTA_IP_V4_SRC], t->src, 4)) return false;
      if (!GetBytes(ip.tb[CTA_IP_V4_DST], t->dst, 4)) return false;
      if (isOrig) r->family = AF_INET;
    } else if (ip.tb[CTA_IP_V6_SRC] || ip.tb[CTA_IP_V6_DST]) {
      if (!GetBytes(ip.tb[CTA_IP_V6_SRC], t->src, 16)) return false;
      if (!GetBytes(ip.tb[CTA_IP_V6_DST], t->dst, 16)) return false;
      if (isOrig) r->family = AF_INET6;
    }
  }

  if (tuple.tb[CTA_TUPLE_PROTO]) {
    AttrTable<CTA_PROTO_MAX> proto;
    if (!ParseNested(tuple.tb[CTA_TUPLE_PROTO], &proto)) return false;
    uint8_t num = 0;
    if (!GetU8(proto.tb[CTA_PROTO_NUM], &num)) return false;
    if (isOrig) r->protocol = num;
    if (proto.tb[CTA_PROTO_SRC_PORT] || proto.tb[CTA_PROTO_DST_PORT]) {
      if (proto.tb[CTA_PROTO_SRC_PORT] && !GetBe16(proto.tb[CTA_PROTO_SRC_PORT], &t->sport)) return false;
      if (proto.tb[CTA_PROTO_DST_PORT] && !GetBe16(proto.tb[CTA_PROTO_DST_PORT], &t->dport)) return false;
      r->present |= kHasPorts;
    }
    const struct nlattr* type = proto.tb[CTA_PROTO_ICMP_TYPE] ? proto.tb[CTA_PROTO_ICMP_TYPE] : proto.tb[CTA_PROTO_ICMPV6_TYPE];
    const struct nlattr* code = proto.tb[CTA_PROTO_ICMP_CODE] ? proto.tb[CTA_PROTO_ICMP_CODE] : proto.tb[CTA_PROTO_ICMPV6_CODE];
    const struct nlattr* id = proto.tb[CTA_PROTO_ICMP_ID] ? proto.tb[CTA_PROTO_ICMP_ID] : proto.tb[CTA_PROTO_ICMPV6_ID];
    if (type || code || id) {
      if (type && !GetU8(type, &t->icmpType)) return false;
      if (code && !GetU8(code, &t->icmpCode)) return false;
      if (id && !GetBe16(id, &t->icmpId)) return false;
      r->present |= kHasIcmp;
    }
  }
  if (tuple.tb[CTA_TUPLE_ZONE]) {
    // A zone of one direction only (conntrack --orig-zone / --reply-zone);
    // the kernel sends the entry-wide zone as CTA_ZONE instead.
    if (!GetBe16(tuple.tb[CTA_TUPLE_ZONE], isOrig ? &r->origZone : &r->replyZone)) return false;
    r->present |= isOrig ? kHasOrigZone : kHasReplyZone;
  }
  return true;
}

RecordKind EventKindOf(const struct nlmsghdr* nlh) {
  if (NFNL_SUBSYS_ID(nlh->nlmsg_type) == NFNL_SUBSYS_CTNETLINK_EXP) {
    switch (NFNL_MSG_TYPE(nlh->nlmsg_type)) {
      case IPCTNL_MSG_EXP_NEW:
        return (nlh->nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL)) ? kKindExpNew : kKindEntry;
      case IPCTNL_MSG_EXP_DELETE:
        return kKindExpDestroy;
      default:
        return kKindEntry;
    }
  }
  if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_CTNETLINK) return kKindEntry;
  switch (NFNL_MSG_TYPE(nlh->nlmsg_type)) {
    case IPCTNL_MSG_CT_NEW:
      return (nlh->nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL)) ? kKindNew : kKindUpdate;
    case IPCTNL_MSG_CT_DELETE:
      return kKindDestroy;
    default:
      return kKindEntry;
  }
}

int DecodeConntrack(const struct nlmsghdr* nlh, Record* r, std::string* tail) {
  std::memset(r, 0, sizeof(*r));
  if (tail) tail->clear();
  if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof(struct nfgenmsg)) return -EINVAL;

  AttrTable<CTA_MAX> a;
  std::memset(&a, 0, sizeof(a));
  if (mnl_attr_parse(nlh, sizeof(struct nfgenmsg), CollectCb<CTA_MAX>, &a) < 0) return -EINVAL;
  if (!a.tb[CTA_TUPLE_ORIG]) return -EINVAL;

  if (a.tb[CTA_ZONE]) {
    if (!GetBe16(a.tb[CTA_ZONE], &r->zone)) return -EINVAL;
    r->present |= kHasZone;
  }
  if (!DecodeTuple(a.tb[CTA_TUPLE_ORIG], &r->orig, r, true)) return -EINVAL;
  if (a.tb[CTA_TUPLE_REPLY]) {
    if (!DecodeTuple(a.tb[CTA_TUPLE_REPLY], &r->reply, r, false)) return -EINVAL;
    r->present |= kHasReply;
  }
  if (r->family == 0) {
    const struct nfgenmsg* nfg = static_cast<const struct nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
    r->family = nfg->nfgen_family;
  }
  // The 32-bit scalars: attribute, field, presence bit. A new one is one row.
  static constexpr struct {
    int attr;
    uint32_t Record::*field;
    uint32_t bit;
  } kScalars[] = {
      {CTA_STATUS, &Record::status, kHasStatus}, {CTA_TIMEOUT, &Record::timeout, kHasTimeout},
      {CTA_MARK, &Record::mark, kHasMark},       {CTA_USE, &Record::use, kHasUse},
      {CTA_ID, &Record::id, kHasId},
  };
  for (const auto& s : kScalars) {
    if (!a.tb[s.attr]) continue;
    if (!GetBe32(a.tb[s.attr], &(r->*s.field))) return -EINVAL;
    r->present |= s.bit;
  }
  if (a.tb[CTA_PROTOINFO] && !DecodeProtoinfo(a.tb[CTA_PROTOINFO], r)) return -EINVAL;
  if (a.tb[CTA_COUNTERS_ORIG] || a.tb[CTA_COUNTERS_REPLY]) {
    if (a.tb[CTA_COUNTERS_ORIG] && !DecodeCounters(a.tb[CTA_COUNTERS_ORIG], &r->origPackets, &r->origBytes)) return -EINVAL;
    if (a.tb[CTA_COUNTERS_REPLY] && !DecodeCounters(a.tb[CTA_COUNTERS_REPLY], &r->replyPackets, &r->replyBytes)) return -EINVAL;
    r->present |= kHasCounters;
  }
  if (a.tb[CTA_TIMESTAMP]) {
    AttrTable<CTA_TIMESTAMP_MAX> ts;
    if (!ParseNested(a.tb[CTA_TIMESTAMP], &ts)) return -EINVAL;
    if (ts.tb[CTA_TIMESTAMP_START]) {
      if (!GetBe64(ts.tb[CTA_TIMESTAMP_START], &r->tsStart)) return -EINVAL;
      r->present |= kHasTimestampStart;
    }
    if (ts.tb[CTA_TIMESTAMP_STOP]) {
      if (!GetBe64(ts.tb[CTA_TIMESTAMP_STOP], &r->tsStop)) return -EINVAL;
      r->present |= kHasTimestampStop;
    }
  }
  if (a.tb[CTA_LABELS]) {
    size_t len = mnl_attr_get_payload_len(a.tb[CTA_LABELS]);
    if (len > sizeof(r->labels)) len = sizeof(r->labels);
    std::memcpy(r->labels, mnl_attr_get_payload(a.tb[CTA_LABELS]), len);
    r->present |= kHasLabels;
  }
  if (a.tb[CTA_HELP]) {
    AttrTable<CTA_HELP_MAX> help;
    if (!ParseNested(a.tb[CTA_HELP], &help)) return -EINVAL;
    if (help.tb[CTA_HELP_NAME]) AppendString(tail, kString_helper, help.tb[CTA_HELP_NAME]);
  }
  if (a.tb[CTA_SECCTX]) {
    AttrTable<CTA_SECCTX_MAX> ctx;
    if (!ParseNested(a.tb[CTA_SECCTX], &ctx)) return -EINVAL;
    if (ctx.tb[CTA_SECCTX_NAME]) AppendString(tail, kString_secctx, ctx.tb[CTA_SECCTX_NAME]);
  }
  EndTail(tail, &r->tailBytes);
  return 0;
}

int DecodeExpect(const struct nlmsghdr* nlh, ExpectRecord* x, std::string* tail) {
  std::memset(x, 0, sizeof(*x));
  if (tail) tail->clear();
  if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof(struct nfgenmsg)) return -EINVAL;
  AttrTable<CTA_EXPECT_MAX> a;
  std::memset(&a, 0, sizeof(a));
  if (mnl_attr_parse(nlh, sizeof(struct nfgenmsg), CollectCb<CTA_EXPECT_MAX>, &a) < 0) return -EINVAL;
  if (!a.tb[CTA_EXPECT_TUPLE] || !a.tb[CTA_EXPECT_MASTER]) return -EINVAL;
  // Each tuple decodes as an entry's would; what it says about ports and ICMP becomes this record's bits.
  auto tuple = [x](const struct nlattr* nest, RecordTuple* t, uint8_t* protocol, uint32_t portsBit, uint32_t icmpBit) {
    Record tmp;
    std::memset(&tmp, 0, sizeof(tmp));
    if (!DecodeTuple(nest, t, &tmp, true)) return false;
    if (protocol) *protocol = tmp.protocol;
    if (!x->family) x->family = tmp.family;
    if (tmp.present & kHasPorts) x->present |= portsBit;
    if (tmp.present & kHasIcmp) x->present |= icmpBit;
    return true;
  };
  if (!tuple(a.tb[CTA_EXPECT_TUPLE], &x->tuple, &x->protocol, kExpTuplePorts, kExpTupleIcmp)) return -EINVAL;
  if (!tuple(a.tb[CTA_EXPECT_MASTER], &x->master, &x->masterProtocol, kExpMasterPorts, kExpMasterIcmp)) return -EINVAL;
  if (a.tb[CTA_EXPECT_MASK] && !tuple(a.tb[CTA_EXPECT_MASK], &x->mask, nullptr, kExpMaskPorts, kExpMaskIcmp)) return -EINVAL;
  static constexpr struct {
    int attr;
    uint32_t ExpectRecord::*field;
    uint32_t bit;
  } kScalars[] = {
      {CTA_EXPECT_TIMEOUT, &ExpectRecord::timeout, 0}, {CTA_EXPECT_ID, &ExpectRecord::id, 0},
      {CTA_EXPECT_FLAGS, &ExpectRecord::flags, kExpHasFlags}, {CTA_EXPECT_CLASS, &ExpectRecord::klass, kExpHasClass},
  };
  for (const auto& s : kScalars) {
    if (!a.tb[s.attr]) continue;
    if (!GetBe32(a.tb[s.attr], &(x->*s.field))) return -EINVAL;
    x->present |= s.bit;
  }
  if (a.tb[CTA_EXPECT_ZONE]) {
    if (!GetBe16(a.tb[CTA_EXPECT_ZONE], &x->zone)) return -EINVAL;
    x->present |= kExpHasZone;
  }
  if (a.tb[CTA_EXPECT_HELP_NAME]) AppendString(tail, kString_helper, a.tb[CTA_EXPECT_HELP_NAME]);
  if (a.tb[CTA_EXPECT_NAT]) {
    AttrTable<CTA_EXPECT_NAT_MAX> nat;
    if (!ParseNested(a.tb[CTA_EXPECT_NAT], &nat)) return -EINVAL;
    if (nat.tb[CTA_EXPECT_NAT_DIR] && GetBe32(nat.tb[CTA_EXPECT_NAT_DIR], &x->natDir)) x->present |= kExpHasNat;
  }
  if (x->family == 0) x->family = static_cast<const struct nfgenmsg*>(mnl_nlmsg_get_payload(nlh))->nfgen_family;
  EndTail(tail, &x->tailBytes);
  return 0;
}

int DecodeRecord(const struct nlmsghdr* nlh, bool asEvent, Record* r, std::string* tail) {
  const bool expectation = NFNL_SUBSYS_ID(nlh->nlmsg_type) == NFNL_SUBSYS_CTNETLINK_EXP;
  RecordKind kind = asEvent ? EventKindOf(nlh) : expectation ? kKindExpEntry : kKindEntry;
  if (expectation) {
    // Same slot size as an entry (expect.h).
    ExpectRecord x;
    if (DecodeExpect(nlh, &x, tail) < 0) return -EINVAL;
    std::memcpy(r, &x, sizeof(*r));
  } else if (DecodeConntrack(nlh, r, tail) < 0) {
    return -EINVAL;
  }
  r->kind = kind;
  r->portid = nlh->nlmsg_pid;
  return 0;
}


}  // namespace ct
