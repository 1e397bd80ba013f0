// What an update changes on an entry as it is now: the computation
// conntrack -U makes for each entry it updates (mark under a mask, status
// flags added to the existing ones, labels added or cleared), done on the
// record the kernel just sent, so that an update that would change nothing
// is not sent at all. Shared by ct.update() (handle.cc: read, compare,
// write) and ct.updateWhere() (cursor.cc: while the dump is read).
#pragma once

#include <cstdint>

#include "record.h"
#include "request.h"

namespace ct {

// What TypeScript asks to change (src/flow.ts encodeChange); each part is
// applied only when its `has` flag (or state >= 0) says so.
struct ChangeSpec {
  bool hasTimeout = false;
  uint32_t timeout = 0;
  int state = -1;  // TCP/SCTP/DCCP state number, sent with the tags or role below
  bool hasVtags = false;
  uint32_t vtagOriginal = 0, vtagReply = 0;
  bool hasRole = false;
  uint8_t dccpRole = 0;
  bool hasStatus = false;
  uint32_t status = 0;  // flags to set: the kernel never clears one
  bool hasMark = false;
  uint32_t mark = 0, markMask = 0xffffffff;  // new = (old & ~markMask) ^ mark
  bool hasLabels = false;
  uint8_t labels[16] = {0}, labelsMask[16] = {0};  // new = (old & ~labelsMask) ^ labels
};

// Status flags ctnetlink lets an update set; the kernel keeps the others
// (IPS_UNCHANGEABLE_MASK: NAT, EXPECTED, CONFIRMED, DYING, SEQ_ADJUST,
// TEMPLATE, OFFLOAD...) for itself and ignores them in a request.
constexpr uint32_t kSettableStatus = (1u << 1) /* SEEN_REPLY */ | (1u << 2) /* ASSURED */ |
                                     (1u << 10) /* FIXED_TIMEOUT */ | (1u << 12) /* NAT_CLASH */ |
                                     (1u << 13) /* HELPER */;
constexpr uint32_t kStatusFixedTimeout = 1u << 10;

enum class ChangeResult {
  kUnchanged,     // the entry already is what the change asks: nothing to send
  kChanged,       // `request` holds the update, `after` the entry as it will be
  kFixedTimeout,  // the change moves the timeout of a FIXED_TIMEOUT entry: the kernel refuses (EPERM)
};

// The key the kernel finds `r` by: family, original tuple (with a zone of
// that direction only), the zone of both directions. Deletes and updates
// of dumped entries send it.
EntrySpec KeyOf(const Record& r);

// Builds the update of `current` that `change` asks for: only the parts
// that differ, on current's key. `after` is `current` with the change applied.
ChangeResult ApplyChange(const Record& current, const ChangeSpec& change, EntrySpec* request, Record* after);

}  // namespace ct
