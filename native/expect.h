// One expectation (the kernel's nf_conntrack_expect: a helper's prediction
// of a related connection, `conntrack -L expect`) flattened into a record of
// exactly Record's size, with `kind`, `portid`, `pid` and `tailBytes` at
// Record's offsets, so an event batch can carry entries and expectations
// side by side; the helper's name travels in the tail, as an entry's. The
// addon exports this layout (RECORD_LAYOUT.expect) for src/expectation.ts.
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "record.h"
#include "request.h"

namespace ct {

// Bits of ExpectRecord::present.
enum ExpectPresent : uint32_t {
  kExpHasZone = 1u << 0,
  kExpHasClass = 1u << 2,
  kExpHasNat = 1u << 3,
  kExpHasFlags = 1u << 4,
  kExpTuplePorts = 1u << 5,  // which tuples carry ports / ICMP fields
  kExpTupleIcmp = 1u << 6,
  kExpMaskPorts = 1u << 7,
  kExpMaskIcmp = 1u << 8,
  kExpMasterPorts = 1u << 9,
  kExpMasterIcmp = 1u << 10,
};

struct ExpectRecord {
  uint32_t id;             // 0
  uint32_t timeout;        // 4
  uint32_t flags;          // 8   NF_CT_EXPECT_PERMANENT/INACTIVE/USERSPACE
  uint32_t klass;          // 12  helper's expectation class
  uint32_t natDir;         // 16  CTA_EXPECT_NAT_DIR (kExpHasNat)
  uint32_t present;        // 20
  uint16_t zone;           // 24
  uint8_t family;          // 26
  uint8_t protocol;        // 27  the expected tuple's protocol
  uint8_t masterProtocol;  // 28
  uint8_t kind;            // 29  RecordKind, as Record::kind
  uint16_t reserved0;      // 30
  RecordTuple tuple;       // 32  what is expected
  RecordTuple mask;        // 72  which of its bits must match
  RecordTuple master;      // 112 the master entry's original tuple
  char reserved1[32];      // 152
  uint32_t portid;         // 184 as Record::portid
  uint32_t pid;            // 188 as Record::pid
  uint32_t reserved2;      // 192
  uint16_t reserved3;      // 196
  uint16_t tailBytes;      // 198 as Record::tailBytes
};
static_assert(sizeof(ExpectRecord) == sizeof(Record), "an expectation record fills a Record slot");
static_assert(offsetof(ExpectRecord, kind) == offsetof(Record, kind), "kind at Record's offset");
static_assert(offsetof(ExpectRecord, portid) == offsetof(Record, portid), "portid at Record's offset");
static_assert(offsetof(ExpectRecord, pid) == offsetof(Record, pid), "pid at Record's offset");
static_assert(offsetof(ExpectRecord, tailBytes) == offsetof(Record, tailBytes), "tailBytes at Record's offset");

#define CT_EXPECT_FIELDS(X)                                                                                     \
  X(id) X(timeout) X(flags) X(klass) X(natDir) X(present) X(zone) X(family) X(protocol) X(masterProtocol) X(kind) \
  X(tuple) X(mask) X(master) X(portid) X(pid) X(tailBytes)
#define CT_EXPECT_BITS(X)                                                                                       \
  X(zone, kExpHasZone) X(class, kExpHasClass) X(nat, kExpHasNat) X(flags, kExpHasFlags)                         \
  X(tuplePorts, kExpTuplePorts) X(tupleIcmp, kExpTupleIcmp) X(maskPorts, kExpMaskPorts) X(maskIcmp, kExpMaskIcmp) \
  X(masterPorts, kExpMasterPorts) X(masterIcmp, kExpMasterIcmp)

// create / get / delete of one expectation.
struct ExpectSpec {
  uint8_t family = 0;
  TupleSpec master, tuple, mask;
  bool hasTimeout = false, hasId = false, hasZone = false, hasFlags = false, hasClass = false;
  uint32_t timeout = 0, id = 0, flags = 0, klass = 0;
  uint16_t zone = 0;
  char helper[16] = {0};  // empty: none
};

// Decodes one IPCTNL_MSG_EXP_NEW/DELETE message; its strings go to `tail`
// (cleared first; none when null). 0, or -EINVAL when malformed.
int DecodeExpect(const struct nlmsghdr* nlh, ExpectRecord* out, std::string* tail = nullptr);
void PutExpect(struct nlmsghdr* nlh, const ExpectSpec& spec);

}  // namespace ct
