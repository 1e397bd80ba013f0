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
// Builds the matcher; prefix lists arrive packed as 18-byte rows
// (family u8, prefix length u8, address 16 bytes) so 10k CIDRs cost one Buffer.
void ToMatchFilter(const Napi::Value& v, MatchFilter* out);

// An Error with `errno` (positive) and `op`, for src/errors.ts to wrap.
Napi::Error ErrnoError(Napi::Env env, int err, const char* op);

}  // namespace ct
