// What the kernel cannot filter, applied to decoded records before any JS
// object exists: address prefix sets (CIDRs, lists), port sets, state lists,
// zone. The TypeScript side (src/filter.ts) validates and compiles a Filter
// into this shape; native code never interprets names or strings.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <memory>
#include <unordered_set>
#include <vector>

#include "record.h"

namespace ct {

// A set of address prefixes of one family, grouped by prefix length so a
// lookup costs one hash probe per distinct length, not one per prefix.
class PrefixSet {
 public:
  void Add(uint8_t family, const uint8_t* addr, unsigned prefixLen);
  bool Contains(uint8_t family, const uint8_t* addr) const;
  bool empty() const { return groups_.empty(); }

 private:
  struct Key {
    uint64_t hi, lo;
    bool operator==(const Key& o) const { return hi == o.hi && lo == o.lo; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const { return std::hash<uint64_t>()(k.hi * 0x9E3779B97F4A7C15ull ^ k.lo); }
  };
  struct Group {
    uint8_t family;
    unsigned prefixLen;
    std::unordered_set<Key, KeyHash> keys;
  };
  static Key MaskedKey(uint8_t family, const uint8_t* addr, unsigned prefixLen);
  std::vector<Group> groups_;
};

enum AddressDirection : uint8_t { kDirOriginal = 0, kDirReply = 1, kDirEither = 2 };

struct MatchFilter {
  uint8_t family = 0;            // 0 = any
  int protocol = -1;             // -1 = any
  PrefixSet src, dst;            // empty = any
  AddressDirection srcDirection = kDirOriginal;  // which tuple's source `src` tests
  std::unique_ptr<std::bitset<65536>> sports, dports;  // null = any
  bool hasStateMask = false;
  uint32_t tcpStates = 0, sctpStates = 0, dccpStates = 0;  // bit n = state n
  uint32_t statusValue = 0, statusMask = 0;
  uint32_t markValue = 0, markMask = 0;
  int zone = -1;                 // -1 = any; the entry-wide zone (CTA_ZONE), 0 when absent
  int origZone = -1, replyZone = -1;  // -1 = any; per-direction zones (CTA_TUPLE_ZONE), 0 when absent
  // The reply tuple's own fields (conntrack -r/-q/--reply-port-src/--reply-port-dst).
  PrefixSet replySrc, replyDst;
  std::unique_ptr<std::bitset<65536>> replySports, replyDports;
  int icmpType = -1, icmpCode = -1, icmpId = -1;  // -1 = any; original tuple's ICMP fields
  // NAT as libnetfilter_conntrack's IS_SNAT/IS_SPAT/IS_DNAT/IS_DPAT define it (conntrack
  // --src-nat/--dst-nat/--any-nat): bit 0 source NAT, bit 1 destination NAT, both = either.
  uint8_t nat = 0;
  bool hasNatAddr = false;
  uint8_t natAddr[16] = {0};
  bool hasLabels = false;        // every bit of `labels` must be set (conntrack -l)
  uint8_t labels[16] = {0};

  bool Matches(const Record& r) const;
  bool MatchesAll() const;

 private:
  bool MatchesNat(const Record& r) const;
};

}  // namespace ct
