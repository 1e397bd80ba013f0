#include "match.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace ct {

PrefixSet::Key PrefixSet::MaskedKey(uint8_t family, const uint8_t* addr, unsigned prefixLen) {
  uint8_t bytes[16] = {0};
  size_t len = family == AF_INET ? 4 : 16;
  std::memcpy(bytes, addr, len);
  for (size_t bit = prefixLen; bit < len * 8; ++bit) bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  Key k;
  std::memcpy(&k.hi, bytes, 8);
  std::memcpy(&k.lo, bytes + 8, 8);
  return k;
}

void PrefixSet::Add(uint8_t family, const uint8_t* addr, unsigned prefixLen) {
  for (auto& g : groups_) {
    if (g.family == family && g.prefixLen == prefixLen) {
      g.keys.insert(MaskedKey(family, addr, prefixLen));
      return;
    }
  }
  groups_.push_back(Group{family, prefixLen, {}});
  groups_.back().keys.insert(MaskedKey(family, addr, prefixLen));
}

bool PrefixSet::Contains(uint8_t family, const uint8_t* addr) const {
  for (const auto& g : groups_) {
    if (g.family != family) continue;
    if (g.keys.count(MaskedKey(family, addr, g.prefixLen))) return true;
  }
  return false;
}

bool MatchFilter::MatchesAll() const {
  return family == 0 && protocol < 0 && src.empty() && dst.empty() && !sports && !dports && !hasStateMask &&
         statusMask == 0 && markMask == 0 && zone < 0 && origZone < 0 && replyZone < 0 && replySrc.empty() &&
         replyDst.empty() && !replySports && !replyDports && icmpType < 0 && icmpCode < 0 && icmpId < 0 && nat == 0 &&
         !hasLabels;
}

namespace {
constexpr uint32_t kSrcNatDone = 1u << 7;  // IPS_SRC_NAT_DONE
constexpr uint32_t kDstNatDone = 1u << 8;  // IPS_DST_NAT_DONE

bool SameAddress(const Record& r, const uint8_t* a, const uint8_t* b) {
  return std::memcmp(a, b, r.family == AF_INET ? 4 : 16) == 0;
}

// The layer-4 "all" word libnetfilter_conntrack compares: ports, or the ICMP id.
uint16_t L4Src(const Record& r, const RecordTuple& t) { return (r.present & kHasIcmp) ? t.icmpId : t.sport; }
uint16_t L4Dst(const Record& r, const RecordTuple& t) { return (r.present & kHasIcmp) ? t.icmpId : t.dport; }
}  // namespace

bool MatchFilter::MatchesNat(const Record& r) const {
  if (!(r.present & kHasReply)) return false;
  bool srcDone = (r.status & kSrcNatDone) != 0, dstDone = (r.status & kDstNatDone) != 0;
  // conntrack's filter_nat(): an address, when given, must be the translated one.
  bool snat = srcDone && !SameAddress(r, r.reply.dst, r.orig.src);
  bool spat = srcDone && L4Dst(r, r.reply) != L4Src(r, r.orig);
  bool dnat = dstDone && !SameAddress(r, r.reply.src, r.orig.dst);
  bool dpat = dstDone && L4Src(r, r.reply) != L4Dst(r, r.orig);
  bool hasSrc = hasNatAddr ? snat && SameAddress(r, natAddr, r.reply.dst) : snat || spat;
  bool hasDst = hasNatAddr ? dnat && SameAddress(r, natAddr, r.reply.src) : dnat || dpat;
  if (nat == 3) return hasSrc || hasDst;
  return nat == 1 ? hasSrc : hasDst;
}

bool MatchFilter::Matches(const Record& r) const {
  if (family && r.family != family) return false;
  if (protocol >= 0 && r.protocol != protocol) return false;
  if (zone >= 0 && r.zone != zone) return false;
  // DecodeConntrack zeroes the record: an absent per-direction zone reads 0, as conntrack treats it.
  if (origZone >= 0 && r.origZone != origZone) return false;
  if (replyZone >= 0 && r.replyZone != replyZone) return false;
  if ((r.mark & markMask) != markValue) return false;
  if ((r.status & statusMask) != statusValue) return false;
  if (!src.empty()) {
    bool hit = false;
    if (srcDirection != kDirReply) hit = src.Contains(r.family, r.orig.src);
    if (!hit && srcDirection != kDirOriginal) hit = (r.present & kHasReply) && src.Contains(r.family, r.reply.src);
    if (!hit) return false;
  }
  if (!dst.empty() && !dst.Contains(r.family, r.orig.dst)) return false;
  // GRE carries keys where other protocols carry ports: a port filter never matches them.
  bool ports = (r.present & kHasPorts) && r.protocol != IPPROTO_GRE;
  if (sports && (!ports || !sports->test(r.orig.sport))) return false;
  if (dports && (!ports || !dports->test(r.orig.dport))) return false;
  if (!replySrc.empty() || !replyDst.empty() || replySports || replyDports) {
    if (!(r.present & kHasReply)) return false;
    if (!replySrc.empty() && !replySrc.Contains(r.family, r.reply.src)) return false;
    if (!replyDst.empty() && !replyDst.Contains(r.family, r.reply.dst)) return false;
    if (replySports && (!ports || !replySports->test(r.reply.sport))) return false;
    if (replyDports && (!ports || !replyDports->test(r.reply.dport))) return false;
  }
  if (icmpType >= 0 || icmpCode >= 0 || icmpId >= 0) {
    if (!(r.present & kHasIcmp)) return false;
    if (icmpType >= 0 && r.orig.icmpType != icmpType) return false;
    if (icmpCode >= 0 && r.orig.icmpCode != icmpCode) return false;
    if (icmpId >= 0 && r.orig.icmpId != icmpId) return false;
  }
  if (nat && !MatchesNat(r)) return false;
  if (hasLabels) {
    if (!(r.present & kHasLabels)) return false;
    for (size_t i = 0; i < sizeof(labels); ++i) {
      if ((r.labels[i] & labels[i]) != labels[i]) return false;
    }
  }
  if (hasStateMask) {
    if (!(r.present & kHasState) || r.state >= 32) return false;
    uint32_t mask = r.protocol == IPPROTO_TCP ? tcpStates : r.protocol == IPPROTO_SCTP ? sctpStates
                  : r.protocol == IPPROTO_DCCP ? dccpStates : 0;
    if (!(mask & (1u << r.state))) return false;
  }
  return true;
}

}  // namespace ct
