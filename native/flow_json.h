// The NDJSON text of flow records (src/flows.ts FlowRecord), written from
// event records. This is the one place a flow record becomes text: in JS the
// same line cost more than the kernel's own delivery of the event (about
// 2.5 µs of string building against 1.5-2.3 µs for the raw reader's recv on
// this machine), and a logger's whole budget is twice the raw reader. The
// names JS knows (protocols, states) come from JS; the field names and their
// order are FlowRecord's, checked against JSON.stringify(flowRecord(entry))
// by test/unit/flow-json.test.ts.
#pragma once

#include <napi.h>

#include <string>
#include <vector>

#include "js_entry.h"
#include "record.h"

namespace ct {

class FlowJson : public JsObjectWrap<FlowJson> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  // new FlowJson({ protocols: (string | undefined)[], states: { [protonum]: string[] } })
  explicit FlowJson(const Napi::CallbackInfo& info);

 private:
  // lines(records: Buffer, prefix: string) -> { text: string, records: number, lost: number }
  Napi::Value Lines(const Napi::CallbackInfo& info);
  void AppendRecord(const Record& r, const std::string& prefix, std::string* out) const;

  std::vector<std::string> protocols_;            // by protocol number; empty: print the number
  std::vector<std::vector<std::string>> states_;  // by protocol number, then state number
};

}  // namespace ct
