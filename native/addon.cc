// Module entry: exports the Handle (requests, dumps), DumpCursor, EventReader
// and LiveStore classes, the record layout, decodeMessages() and the stats
// counters' keys.
// Everything else lives in src/ (TypeScript).
#include <napi.h>

#include <dlfcn.h>
#include <errno.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "batch.h"
#include "convert.h"
#include "cursor.h"
#include "decode.h"
#include "events.h"
#include "expect.h"
#include "flow_json.h"
#include "handle.h"
#include "js_entry.h"
#include "record.h"
#include "stats.h"
#include "table.h"

namespace ct {
// native/unshare.cc: unshareThreadNetns, for conntrack/testing's Worker.
void InitThreadNetns(Napi::Env env, Napi::Object exports);
}  // namespace ct

namespace {

// The record layout as src/record.ts reads it: offsets from the struct
// itself (record.h's lists), so the two languages cannot disagree.
Napi::Object RecordLayout(Napi::Env env) {
  using ct::Record;
  using ct::RecordTuple;
  Napi::Object fields = Napi::Object::New(env);
#define CT_FIELD(name) fields.Set(#name, static_cast<uint32_t>(offsetof(Record, name)));
  CT_RECORD_FIELDS(CT_FIELD)
#undef CT_FIELD
  Napi::Object tuple = Napi::Object::New(env);
#define CT_TUPLE(name) tuple.Set(#name, static_cast<uint32_t>(offsetof(RecordTuple, name)));
  CT_TUPLE_FIELDS(CT_TUPLE)
#undef CT_TUPLE
  Napi::Object present = Napi::Object::New(env);
#define CT_BIT(name, bit) present.Set(#name, static_cast<uint32_t>(ct::bit));
  CT_PRESENT_BITS(CT_BIT)
#undef CT_BIT
  Napi::Object strings = Napi::Object::New(env);
#define CT_STRING(name, tag) strings.Set(#name, static_cast<uint32_t>(tag));
  CT_RECORD_STRINGS(CT_STRING)
#undef CT_STRING
  Napi::Object kinds = Napi::Object::New(env);
  kinds.Set("entry", static_cast<uint32_t>(ct::kKindEntry));
  kinds.Set("new", static_cast<uint32_t>(ct::kKindNew));
  kinds.Set("update", static_cast<uint32_t>(ct::kKindUpdate));
  kinds.Set("destroy", static_cast<uint32_t>(ct::kKindDestroy));
  kinds.Set("overrun", static_cast<uint32_t>(ct::kKindOverrun));
  kinds.Set("expectNew", static_cast<uint32_t>(ct::kKindExpNew));
  kinds.Set("expectDestroy", static_cast<uint32_t>(ct::kKindExpDestroy));
  kinds.Set("expectation", static_cast<uint32_t>(ct::kKindExpEntry));
  Napi::Object expectFields = Napi::Object::New(env);
#define CT_EXPECT_FIELD(name) expectFields.Set(#name, static_cast<uint32_t>(offsetof(ct::ExpectRecord, name)));
  CT_EXPECT_FIELDS(CT_EXPECT_FIELD)
#undef CT_EXPECT_FIELD
  Napi::Object expectBits = Napi::Object::New(env);
#define CT_EXPECT_BIT(name, bit) expectBits.Set(#name, static_cast<uint32_t>(ct::bit));
  CT_EXPECT_BITS(CT_EXPECT_BIT)
#undef CT_EXPECT_BIT
  Napi::Object expect = Napi::Object::New(env);
  expect.Set("fields", expectFields);
  expect.Set("present", expectBits);
  Napi::Object layout = Napi::Object::New(env);
  layout.Set("size", static_cast<uint32_t>(ct::kRecordSize));
  layout.Set("labelBytes", static_cast<uint32_t>(sizeof(Record::labels)));
  layout.Set("fields", fields);
  layout.Set("tuple", tuple);
  layout.Set("present", present);
  layout.Set("strings", strings);
  layout.Set("kinds", kinds);
  layout.Set("expect", expect);
  return layout;
}

// decodeMessages(buffer, events?): netlink messages -> the record batch a
// dump (or, with `events`, the event reader, unfiltered) would hand JS, by
// the same decoder (DecodeRecord); no socket, no privilege: the way the unit
// tests reach the decoder. A malformed message fails a dump with EBADMSG;
// the event reader skips it.
Napi::Value DecodeMessages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer()) {
    Napi::TypeError::New(env, "decodeMessages(buffer, events?)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto in = info[0].As<Napi::Buffer<uint8_t>>();
  const bool events = info.Length() > 1 && ct::Truthy(info[1]);
  // The kernel's buffers are 4-byte aligned; a Buffer's bytes need not be.
  std::vector<uint32_t> aligned((in.Length() + 3) / 4);
  if (in.Length()) std::memcpy(aligned.data(), in.Data(), in.Length());
  ct::RecordBatch out;
  std::string tail;
  bool malformed = false;
  bool whole = ct::ForEachMessage(aligned.data(), in.Length(), [&](const struct nlmsghdr* nlh) {
    if (nlh->nlmsg_type < NLMSG_MIN_TYPE || (events && ct::EventKindOf(nlh) == ct::kKindEntry)) return true;
    ct::Record r;
    if (ct::DecodeRecord(nlh, events, &r, &tail) < 0) {
      malformed = !events;
      return events;
    }
    out.Add(r, tail);
    return true;
  });
  if (!events && (malformed || !whole)) {
    ct::ErrnoError(env, EBADMSG, "decode").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return ct::RecordsToBuffer(env, out.data(), out.bytes());
}

// Threads that end on their own after a close() (a dump's reader, an event
// reader) may outlive the environment that loaded the addon, and Node
// dlcloses a Worker's addons when the Worker exits: with no other thread
// holding the library, its code was unmapped under such a thread (SIGSEGV at
// an unmapped pc). Pinned, the code stays for the life of the process.
void PinLibrary() {
  static const bool pinned = [] {
    Dl_info self;
    return dladdr(reinterpret_cast<void*>(&PinLibrary), &self) != 0 && self.dli_fname != nullptr &&
           dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) != nullptr;
  }();
  (void)pinned;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  PinLibrary();
  env.SetInstanceData<ct::AddonData>(new ct::AddonData());
  exports.Set("Handle", ct::Handle::Init(env));
  ct::DumpCursor::Init(env, exports);
  ct::EventReader::Init(env, exports);
  ct::LiveStore::Init(env, exports);
  ct::FlowJson::Init(env, exports);
  ct::InitThreadNetns(env, exports);
  exports.Set("RECORD_LAYOUT", RecordLayout(env));
  exports.Set("ROW_LAYOUTS", ct::RowLayouts(env));
  exports.Set("decodeMessages", Napi::Function::New(env, ct::JsEntry<DecodeMessages>, "decodeMessages"));
  Napi::Array counters = Napi::Array::New(env);
#define CT_COUNTER_KEY(key, attr) counters.Set(counters.Length(), #key);
  CT_STATS_COUNTERS(CT_COUNTER_KEY)
#undef CT_COUNTER_KEY
  exports.Set("STATS_COUNTERS", counters);
  return exports;
}

}  // namespace

NODE_API_MODULE(conntrack, Init)
