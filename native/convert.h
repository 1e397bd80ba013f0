// JS values (already validated by src/filter.ts and src/conntrack.ts) to the
// plain C++ specs of request.h and match.h, and errno to JS errors.
#pragma once

#include <napi.h>

#include "change.h"
#include "expect.h"
#include "match.h"
#include "request.h"

namespace ct {

TupleSpec ToTuple(const Napi::Value& v);
EntrySpec ToEntrySpec(const Napi::Object& o);
ExpectSpec ToExpectSpec(const Napi::Object& o);
// An update's change (src/flow.ts encodeChange); a non-object changes nothing.
ChangeSpec ToChangeSpec(const Napi::Value& v);
KernelFilter ToKernelFilter(const Napi::Value& v);

// The rows src/filter.ts packs into one Buffer (so 10k CIDRs cost one
// Buffer, not 10k objects), laid out here once: the addon exports their
// layouts (ROW_LAYOUTS, from the lists below) and filter.ts packs by them.
// A prefix of the matcher's prefix sets; the address in network order.
struct PrefixRow {
  uint8_t family;  // AF_INET / AF_INET6
  uint8_t length;
  uint8_t addr[16];
};
// What the event socket's BPF filter drops early: a protocol (its number in
// addr[0]) or an original-direction source or destination prefix.
struct SocketFilterRow {
  uint8_t kind;  // SocketFilterKind
  uint8_t family;
  uint8_t length;
  uint8_t pad;
  uint8_t addr[16];
};
enum SocketFilterKind : uint8_t { kRowProtocol = 0, kRowSrc = 1, kRowDst = 2 };
#define CT_PREFIX_ROW_FIELDS(X) X(family) X(length) X(addr)
#define CT_SOCKET_ROW_FIELDS(X) X(kind) X(family) X(length) X(addr)
#define CT_SOCKET_ROW_KINDS(X) X(protocol, kRowProtocol) X(src, kRowSrc) X(dst, kRowDst)
// { prefix: { size, fields }, socketFilter: { size, fields, kinds } }
Napi::Object RowLayouts(Napi::Env env);

// Builds the matcher; prefix lists arrive as PrefixRow rows.
void ToMatchFilter(const Napi::Value& v, MatchFilter* out);

// An Error with `errno` (positive) and `op`, for src/errors.ts to wrap.
Napi::Error ErrnoError(Napi::Env env, int err, const char* op);

}  // namespace ct
