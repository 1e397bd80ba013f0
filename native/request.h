// Builders for every request this package sends to nfnetlink_conntrack.
// The specs are plain data converted from JS by addon glue; deciding what to
// send (defaults, derived reply tuples, which filter runs in the kernel) is
// done in TypeScript.
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ct {

struct TupleSpec {
  bool present = false;
  bool hasSrc = false, hasDst = false;
  uint8_t src[16] = {0}, dst[16] = {0};
  int protocol = -1;
  bool hasSport = false, hasDport = false;
  uint16_t sport = 0, dport = 0;
  bool hasIcmpType = false, hasIcmpCode = false, hasIcmpId = false;
  uint8_t icmpType = 0, icmpCode = 0;
  uint16_t icmpId = 0;
  bool hasZone = false;  // CTA_TUPLE_ZONE: a zone of this direction only
  uint16_t zone = 0;
};

// create / update / get / delete of one entry.
struct EntrySpec {
  uint8_t family = 0;
  TupleSpec orig, reply;
  bool hasTimeout = false, hasStatus = false, hasMark = false, hasZone = false, hasId = false;
  uint32_t timeout = 0, status = 0, mark = 0, id = 0;
  uint16_t zone = 0;
  int state = -1;  // TCP/SCTP/DCCP state number
  // CTA_LABELS, and CTA_LABELS_MASK for a change of some bits only.
  bool hasLabels = false, hasLabelsMask = false;
  uint8_t labels[16] = {0}, labelsMask[16] = {0};
  bool hasVtags = false;  // SCTP verification tags (sent with the state)
  uint32_t vtagOriginal = 0, vtagReply = 0;
  bool hasRole = false;   // DCCP role of the original tuple (0 client, 1 server)
  uint8_t dccpRole = 0;
  bool zeroCounters = false;  // get: IPCTNL_MSG_CT_GET_CTRZERO (read and reset the counters)
  bool hasMarkMask = false;   // update: the kernel zeroes these bits, then XORs `mark` in (CTA_MARK_MASK)
  uint32_t markMask = 0;
  // create: source / destination NAT (CTA_NAT_SRC / CTA_NAT_DST), an address and optionally a port.
  struct Nat {
    bool present = false;
    uint8_t addr[16] = {0};
    bool hasPort = false;
    uint16_t port = 0;
  } snat, dnat;
};

// What the kernel filters during a dump (see ctnetlink_alloc_filter()).
struct KernelFilter {
  uint8_t family = 0;
  bool hasMark = false, hasStatus = false;
  uint32_t mark = 0, markMask = 0, status = 0, statusMask = 0;
  uint32_t origFlags = 0;  // CTA_FILTER_F_* bits; needs family and `tuple`
  TupleSpec tuple;
  bool zeroCounters = false;  // IPCTNL_MSG_CT_GET_CTRZERO: read and reset the counters
};

// A growing buffer of netlink messages (one or many per sendmsg).
class MessageBuffer {
 public:
  explicit MessageBuffer(size_t capacity = 8192) : buf_(capacity) {}
  // Starts a new ctnetlink message of `msgType` (IPCTNL_MSG_*).
  struct nlmsghdr* Begin(uint8_t msgType, uint16_t flags, uint8_t family, uint32_t seq, uint8_t version = 0,
                         uint8_t subsys = 1 /* NFNL_SUBSYS_CTNETLINK */);
  void Reset() { used_ = 0; }
  size_t size() const { return used_; }
  const char* data() const { return buf_.data(); }
  size_t remaining() const { return buf_.size() - used_; }
  // Closes the message started by Begin().
  void End(struct nlmsghdr* nlh) { used_ += NLMSG_ALIGN(nlh->nlmsg_len); }

 private:
  std::vector<char> buf_;
  size_t used_ = 0;
};

// Largest encoded entry message; Begin() callers check remaining() against it.
constexpr size_t kMaxEntryMessage = 512;

void PutTuple(struct nlmsghdr* nlh, uint16_t type, uint8_t family, const TupleSpec& t);
void PutEntry(struct nlmsghdr* nlh, const EntrySpec& spec);
void PutDumpFilter(struct nlmsghdr* nlh, const KernelFilter& f);

}  // namespace ct
