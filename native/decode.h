// Netlink conntrack message -> Record. One decoder shared by dumps, gets and
// events, and the entry point of the fuzz target (native/fuzz/).
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <string>

#include "record.h"

namespace ct {

// Decodes one IPCTNL_MSG_CT_NEW/DELETE message (dump reply or event); its
// string attributes go to `tail` (cleared first; none when null), and
// out->tailBytes says how long it is. Returns 0, or -EINVAL when the message
// is malformed; never reads outside nlh->nlmsg_len bytes (callers check that
// against the buffer first).
int DecodeConntrack(const struct nlmsghdr* nlh, Record* out, std::string* tail = nullptr);

// One message as the addon hands it to JS, for dumps, gets, events and
// decodeMessages() alike: an entry, or an expectation (by its subsystem) in
// a Record slot; `kind` its event kind when `asEvent` (kKindEntry: not an
// event), else kKindEntry/kKindExpEntry; `portid` the sender. 0 or -EINVAL.
int DecodeRecord(const struct nlmsghdr* nlh, bool asEvent, Record* out, std::string* tail);

// CTA_TUPLE_* nest -> RecordTuple; sets family, protocol and the ports/ICMP
// presence bits on `r` (and its per-direction zone: `isOrig` says which).
bool DecodeTuple(const struct nlattr* nest, RecordTuple* t, Record* r, bool isOrig);

// Event kind of a multicast message (kKindNew/Update/Destroy, kKindExpNew/
// ExpDestroy), or kKindEntry for a message that is not an event.
RecordKind EventKindOf(const struct nlmsghdr* nlh);

// Walks a buffer of netlink messages as received from the socket, checking
// every header against the buffer bounds. Returns false on a truncated or
// malformed buffer. `fn(nlh)` returns false to stop early.
template <typename Fn>
bool ForEachMessage(const void* buf, size_t len, Fn&& fn) {
  const char* p = static_cast<const char*>(buf);
  size_t off = 0;
  while (len - off >= sizeof(struct nlmsghdr)) {
    const struct nlmsghdr* nlh = reinterpret_cast<const struct nlmsghdr*>(p + off);
    if (nlh->nlmsg_len < sizeof(struct nlmsghdr) || nlh->nlmsg_len > len - off) return false;
    if (!fn(nlh)) return true;
    size_t step = NLMSG_ALIGN(nlh->nlmsg_len);
    if (step > len - off) break;
    off += step;
  }
  return true;
}

}  // namespace ct
