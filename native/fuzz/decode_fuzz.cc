// libFuzzer target: netlink bytes in, records or a clean error out. Exercises
// exactly what the addon runs on every buffer the kernel sends: the message
// walker, the conntrack and expectation decoders, event classification and
// the matcher, and the change an update would make of each decoded entry
// (native/change.h) with the request it would send.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../batch.h"
#include "../change.h"
#include "../decode.h"
#include "../expect.h"
#include "../match.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Netlink buffers are 4-byte aligned in practice; copy to honour that.
  std::vector<uint32_t> aligned((size + 3) / 4);
  if (size) std::memcpy(aligned.data(), data, size);

  static ct::MatchFilter filter = [] {
    ct::MatchFilter f;
    const uint8_t v4[16] = {10, 0, 0, 0};
    const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8};
    f.src.Add(2, v4, 8);
    f.src.Add(10, v6, 32);
    f.srcDirection = ct::kDirEither;
    f.hasStateMask = true;
    f.tcpStates = 1u << 3;
    return f;
  }();
  // The other matcher paths: reply tuple, ICMP, NAT with an address, labels.
  static ct::MatchFilter replyNat = [] {
    ct::MatchFilter f;
    const uint8_t v4[16] = {10, 0, 0, 1};
    f.replySrc.Add(2, v4, 24);
    f.icmpType = 8;
    f.nat = 3;
    f.hasNatAddr = true;
    std::memcpy(f.natAddr, v4, 4);
    f.hasLabels = true;
    f.labels[0] = 1;
    return f;
  }();

  // Every part of a change: mark under a mask, status, labels, state with tags, timeout.
  static ct::ChangeSpec change = [] {
    ct::ChangeSpec c;
    c.hasMark = true, c.mark = 0x10, c.markMask = 0xf0;
    c.hasStatus = true, c.status = 0x6;
    c.hasLabels = true, c.labels[0] = 1, c.labelsMask[0] = 3;
    c.state = 4, c.hasVtags = true, c.vtagOriginal = 1, c.vtagReply = 2;
    c.hasTimeout = true, c.timeout = 30;
    return c;
  }();

  std::string tail;
  ct::RecordBatch batch;
  ct::ForEachMessage(aligned.data(), size, [&](const struct nlmsghdr* nlh) {
    ct::Record r;
    (void)ct::EventKindOf(nlh);
    // As dumps and events store it: the record, then its string tail.
    for (bool asEvent : {false, true}) {
      if (ct::DecodeRecord(nlh, asEvent, &r, &tail) != 0) continue;
      if (r.tailBytes != tail.size() || r.tailBytes % 8 != 0) __builtin_trap();
      batch.Add(r, tail);
    }
    if (ct::DecodeConntrack(nlh, &r) == 0) {
      (void)filter.Matches(r);
      (void)replyNat.Matches(r);
      ct::EntrySpec spec;
      ct::Record after;
      if (ct::ApplyChange(r, change, &spec, &after) == ct::ChangeResult::kChanged) {
        ct::MessageBuffer msg(4096);
        struct nlmsghdr* out = msg.Begin(0 /* IPCTNL_MSG_CT_NEW */, 0, spec.family, 0);
        ct::PutEntry(out, spec);
        msg.End(out);
      }
    }
    ct::ExpectRecord x;
    (void)ct::DecodeExpect(nlh, &x);
    return true;
  });
  return 0;
}
