// Module entry: exports the Handle (requests, dumps), DumpCursor and
// EventReader classes. Everything else lives in src/ (TypeScript).
#include <napi.h>

#include "cursor.h"
#include "events.h"
#include "handle.h"
#include "record.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData<ct::AddonData>(new ct::AddonData());
  exports.Set("Handle", ct::Handle::Init(env));
  ct::DumpCursor::Init(env, exports);
  ct::EventReader::Init(env, exports);
  exports.Set("RECORD_SIZE", Napi::Number::New(env, ct::kRecordSize));
  return exports;
}

}  // namespace

NODE_API_MODULE(conntrack, Init)
