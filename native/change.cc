#include "change.h"

#include <cstring>

namespace ct {

namespace {

TupleSpec TupleOf(const Record& r, const RecordTuple& t) {
  TupleSpec s;
  s.present = true;
  s.hasSrc = s.hasDst = true;
  std::memcpy(s.src, t.src, 16);
  std::memcpy(s.dst, t.dst, 16);
  s.protocol = r.protocol;
  if (r.present & kHasPorts) {
    s.hasSport = s.hasDport = true;
    s.sport = t.sport;
    s.dport = t.dport;
  }
  if (r.present & kHasIcmp) {
    s.hasIcmpType = s.hasIcmpCode = s.hasIcmpId = true;
    s.icmpType = t.icmpType;
    s.icmpCode = t.icmpCode;
    s.icmpId = t.icmpId;
  }
  return s;
}

// What a label bitmap or mark becomes: the bits under the mask cleared, then
// the value XORed in (the kernel's own rule for CTA_MARK_MASK and CTA_LABELS_MASK).
uint32_t Masked(uint32_t old, uint32_t value, uint32_t mask) { return (old & ~mask) ^ value; }

constexpr uint8_t kProtocolSctp = 132;

}  // namespace

EntrySpec KeyOf(const Record& r) {
  EntrySpec spec;
  spec.family = r.family;
  spec.orig = TupleOf(r, r.orig);
  // An entry zoned in one direction is found only with that zone in its tuple.
  spec.orig.hasZone = (r.present & kHasOrigZone) != 0;
  spec.orig.zone = r.origZone;
  spec.hasZone = (r.present & kHasZone) != 0;
  spec.zone = r.zone;
  return spec;
}

ChangeResult ApplyChange(const Record& current, const ChangeSpec& change, EntrySpec* request, Record* after) {
  *request = KeyOf(current);
  *after = current;
  bool changed = false;

  if (change.hasMark) {
    uint32_t old = (current.present & kHasMark) ? current.mark : 0;
    after->mark = Masked(old, change.mark, change.markMask);
    after->present |= kHasMark;
    if (after->mark != old) {
      // Value and mask go to the kernel, which applies them to the mark as it is then.
      request->hasMark = true;
      request->mark = change.mark;
      request->hasMarkMask = change.markMask != 0xffffffff;
      request->markMask = change.markMask;
      changed = true;
    }
  }
  if (change.hasStatus) {
    after->status = current.status | (change.status & kSettableStatus);
    if (after->status != current.status) {
      // The flags the entry has, plus the new ones: the kernel refuses (EBUSY) a
      // status that would clear SEEN_REPLY, ASSURED, EXPECTED or CONFIRMED.
      request->hasStatus = true;
      request->status = after->status;
      changed = true;
    }
  }
  if (change.hasLabels) {
    bool differs = false;
    for (size_t i = 0; i < sizeof(after->labels); ++i) {
      uint8_t old = (current.present & kHasLabels) ? current.labels[i] : 0;
      after->labels[i] = static_cast<uint8_t>(Masked(old, change.labels[i], change.labelsMask[i]));
      differs = differs || after->labels[i] != old;
    }
    if (differs) {
      after->present |= kHasLabels;
      request->hasLabels = request->hasLabelsMask = true;
      std::memcpy(request->labels, change.labels, sizeof(request->labels));
      std::memcpy(request->labelsMask, change.labelsMask, sizeof(request->labelsMask));
      changed = true;
    }
  }
  if (change.state >= 0) {
    bool stateDiffers = !(current.present & kHasState) || current.state != change.state;
    bool tagsDiffer = change.hasVtags && (!(current.present & kHasVtags) || current.vtagOriginal != change.vtagOriginal ||
                                          current.vtagReply != change.vtagReply);
    // No record field holds a DCCP role: a role given is always sent.
    if (stateDiffers || tagsDiffer || change.hasRole) {
      request->state = change.state;
      // The kernel sets an SCTP state only with both tags: without new ones, the
      // entry's own go with it (a dumped SCTP entry always carries them).
      const bool ownTags = !change.hasVtags && current.protocol == kProtocolSctp && (current.present & kHasVtags);
      request->hasVtags = change.hasVtags || ownTags;
      request->vtagOriginal = change.hasVtags ? change.vtagOriginal : current.vtagOriginal;
      request->vtagReply = change.hasVtags ? change.vtagReply : current.vtagReply;
      request->hasRole = change.hasRole;
      request->dccpRole = change.dccpRole;
      after->state = static_cast<uint8_t>(change.state);
      after->present |= kHasState;
      if (change.hasVtags) {
        after->vtagOriginal = change.vtagOriginal;
        after->vtagReply = change.vtagReply;
        after->present |= kHasVtags;
      }
      changed = true;
    }
  }
  if (change.hasTimeout && (!(current.present & kHasTimeout) || current.timeout != change.timeout)) {
    // The kernel refuses the whole update (EPERM) rather than skip the timeout.
    if ((current.status & kStatusFixedTimeout) != 0) return ChangeResult::kFixedTimeout;
    request->hasTimeout = true;
    request->timeout = change.timeout;
    after->timeout = change.timeout;
    after->present |= kHasTimeout;
    changed = true;
  }
  return changed ? ChangeResult::kChanged : ChangeResult::kUnchanged;
}

}  // namespace ct
