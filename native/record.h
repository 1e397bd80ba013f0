// One conntrack entry (or event) flattened into a fixed 200-byte record,
// followed in its batch by a tail of its variable-length attributes.
//
// Why a flat record instead of building JS objects in C++: a 250k-entry dump
// would cost ~10M N-API calls (one per field). Instead native code decodes
// netlink into these records in the thread pool, hands JS one Buffer per
// batch, and src/record.ts turns the bytes into objects with a DataView.
// The addon exports this layout at load (RECORD_LAYOUT: size, field offsets,
// presence bits, kinds; see addon.cc), and src/record.ts reads its offsets
// from there: this struct is the one source of the layout.
// All integers are host (little-endian) order; addresses are network order.
//
// Strings (the helper's name, the security context, whatever comes next) do
// not widen the fixed record: each record is followed by `tailBytes` bytes
// of string attributes (tag u8, 0 u8, length u16, the bytes; the whole tail
// zero-padded to a multiple of 8, so records stay 8-byte aligned), and a
// record without strings costs nothing more. A batch is record, tail,
// record, tail... (batch.h); an event queue keeps the tails in FIFO order.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ct {

struct RecordTuple {
  uint8_t src[16];     // IPv4 uses the first 4 bytes
  uint8_t dst[16];
  uint16_t sport;      // host order
  uint16_t dport;
  uint8_t icmpType;
  uint8_t icmpCode;
  uint16_t icmpId;     // host order
};
static_assert(sizeof(RecordTuple) == 40, "tuple layout");

// Bits of Record::present: which optional attributes the kernel sent.
enum RecordPresent : uint32_t {
  kHasStatus = 1u << 0,
  kHasTimeout = 1u << 1,
  kHasMark = 1u << 2,
  kHasUse = 1u << 3,
  kHasZone = 1u << 4,
  kHasState = 1u << 5,
  kHasCounters = 1u << 6,
  kHasTimestampStart = 1u << 7,
  kHasTimestampStop = 1u << 8,
  kHasLabels = 1u << 9,
  kHasReply = 1u << 11,
  kHasPorts = 1u << 12,     // tuple carries sport/dport (tcp, udp, sctp, ...)
  kHasIcmp = 1u << 13,      // tuple carries icmp type/code/id
  kHasId = 1u << 14,
  kHasOrigZone = 1u << 16,  // CTA_TUPLE_ZONE in the original tuple (a zone for that direction only)
  kHasReplyZone = 1u << 17, // CTA_TUPLE_ZONE in the reply tuple
  kHasVtags = 1u << 18,     // SCTP verification tags (CTA_PROTOINFO_SCTP_VTAG_*)
};

// Record::kind
enum RecordKind : uint8_t {
  kKindEntry = 0,
  kKindNew = 1,
  kKindUpdate = 2,
  kKindDestroy = 3,
  kKindOverrun = 4,  // not an entry: `lost` events were dropped here
  kKindExpNew = 5,   // an ExpectRecord (expect.h): a new expectation
  kKindExpDestroy = 6,
  kKindExpEntry = 7, // an ExpectRecord of a dump or get
};

struct Record {
  uint32_t id;          // 0
  uint32_t status;      // 4
  uint32_t timeout;     // 8
  uint32_t mark;        // 12
  uint32_t use;         // 16
  uint32_t present;     // 20
  uint16_t zone;        // 24
  uint8_t family;       // 26  AF_INET / AF_INET6
  uint8_t protocol;     // 27  IPPROTO_*
  uint8_t state;        // 28  TCP/SCTP/DCCP state number
  uint8_t kind;         // 29  RecordKind
  uint16_t origZone;    // 30  zone of the original direction only (kHasOrigZone)
  RecordTuple orig;     // 32
  RecordTuple reply;    // 72
  uint64_t origPackets; // 112
  uint64_t origBytes;   // 120
  uint64_t replyPackets;// 128
  uint64_t replyBytes;  // 136
  uint64_t tsStart;     // 144 ns since the epoch
  uint64_t tsStop;      // 152
  uint8_t labels[16];   // 160 bit i of the kernel's label bitmap
  uint32_t vtagOriginal;// 176 SCTP verification tag of the original direction (kHasVtags)
  uint32_t vtagReply;   // 180
  uint32_t portid;      // 184 events: netlink port of the process whose request caused it (0: the kernel)
  uint32_t pid;         // 188 events with process resolution: the requesting process (0: unknown)
  uint32_t lost;        // 192 overrun records: how many events were lost here
  uint16_t replyZone;   // 196 zone of the reply direction only (kHasReplyZone)
  uint16_t tailBytes;   // 198 bytes of string attributes following this record (a multiple of 8)
};
constexpr size_t kRecordSize = 200;
static_assert(sizeof(Record) == kRecordSize, "record layout");
static_assert(offsetof(Record, orig) == 32, "record layout");
static_assert(offsetof(Record, reply) == 72, "record layout");
static_assert(offsetof(Record, origPackets) == 112, "record layout");
static_assert(offsetof(Record, labels) == 160, "record layout");
static_assert(offsetof(Record, tailBytes) == 198, "record layout");

// The string attributes a record's tail may hold, by tag (0 ends a tail).
// A new string is one row here and one AppendString() in decode.cc: the
// addon exports the names, src/record.ts sets `entry[name]` for each.
#define CT_RECORD_STRINGS(X) X(helper, 1) X(secctx, 2)
enum RecordString : uint8_t {
#define CT_STRING_TAG(name, tag) kString_##name = tag,
  CT_RECORD_STRINGS(CT_STRING_TAG)
#undef CT_STRING_TAG
};
// A string longer than this is cut (security contexts run to a few dozen bytes).
constexpr size_t kMaxStringBytes = 4096;

// The layout the addon exports as RECORD_LAYOUT (addon.cc) and src/record.ts
// decodes with: every field, tuple field and presence bit by its JS name.
// A new field goes into the struct above and into these lists.
#define CT_RECORD_FIELDS(X)                                                                                   \
  X(id) X(status) X(timeout) X(mark) X(use) X(present) X(zone) X(family) X(protocol) X(state) X(kind)         \
  X(origZone) X(orig) X(reply) X(origPackets) X(origBytes) X(replyPackets) X(replyBytes) X(tsStart) X(tsStop) \
  X(labels) X(vtagOriginal) X(vtagReply) X(portid) X(pid) X(lost) X(replyZone) X(tailBytes)
#define CT_TUPLE_FIELDS(X) X(src) X(dst) X(sport) X(dport) X(icmpType) X(icmpCode) X(icmpId)
#define CT_PRESENT_BITS(X)                                                                               \
  X(status, kHasStatus) X(timeout, kHasTimeout) X(mark, kHasMark) X(use, kHasUse) X(zone, kHasZone)      \
  X(state, kHasState) X(counters, kHasCounters) X(timestampStart, kHasTimestampStart)                    \
  X(timestampStop, kHasTimestampStop) X(labels, kHasLabels) X(reply, kHasReply) X(ports, kHasPorts)      \
  X(icmp, kHasIcmp) X(id, kHasId) X(origZone, kHasOrigZone) X(replyZone, kHasReplyZone) X(vtags, kHasVtags)

}  // namespace ct
