#include "flow_json.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ct {

namespace {

constexpr uint32_t kStatusSrcNat = 1u << 4;  // IPS_SRC_NAT
constexpr uint32_t kStatusDstNat = 1u << 5;  // IPS_DST_NAT
constexpr uint8_t kProtoGre = 47;            // GRE keys travel in the port attributes

void AppendUint(uint64_t v, std::string* out) {
  char buf[24];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, res.ptr);
}

// A counter as JSON.stringify writes Number(v): exact below 2^53; beyond
// that the double's shortest digits that read back as it (the closest such,
// as printf rounds), padded with zeros, as JS prints them. printf and strtod,
// not floating-point to_chars: the prebuilt binary may need no libstdc++
// newer than 3.4.22 (scripts/prebuild.mjs).
void AppendNumber(uint64_t v, std::string* out) {
  if (v < (1ull << 53)) return AppendUint(v, out);
  const double d = static_cast<double>(v);
  char buf[40];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*e", digits - 1, d);
    if (std::strtod(buf, nullptr) != d) continue;
    const char* e = std::strchr(buf, 'e');
    const int exponent = std::atoi(e + 1);  // 15 to 19: 2^53 <= d < 2^64
    for (const char* p = buf; p < e; ++p) {
      if (*p != '.') out->push_back(*p);
    }
    out->append(static_cast<size_t>(exponent + 1 - digits), '0');
    return;
  }
}

void AppendAddress(const uint8_t* a, bool v4, std::string* out) {
  out->push_back('"');
  if (v4) {
    for (int i = 0; i < 4; ++i) {
      if (i) out->push_back('.');
      AppendUint(a[i], out);
    }
  } else {
    char buf[INET6_ADDRSTRLEN];
    if (inet_ntop(AF_INET6, a, buf, sizeof(buf))) out->append(buf);
  }
  out->push_back('"');
}

// An address of a tuple the kernel did not send: record.ts gives ''.
void AppendTupleAddress(const Record& r, const RecordTuple& t, bool sent, bool src, std::string* out) {
  if (!sent) {
    out->append("\"\"");
    return;
  }
  AppendAddress(src ? t.src : t.dst, r.family != AF_INET6, out);
}

// As record.ts tupleOf(): ports (or GRE keys), or ICMP fields, as the kernel sent them; the tuple's own zone.
void AppendTuple(const Record& r, const RecordTuple& t, bool sent, bool hasZone, uint16_t zone, std::string* out) {
  out->append("{\"src\":");
  AppendTupleAddress(r, t, sent, true, out);
  out->append(",\"dst\":");
  AppendTupleAddress(r, t, sent, false, out);
  if (sent && (r.present & kHasPorts)) {
    const bool gre = r.protocol == kProtoGre;
    out->append(gre ? ",\"srcKey\":" : ",\"sport\":");
    AppendUint(t.sport, out);
    out->append(gre ? ",\"dstKey\":" : ",\"dport\":");
    AppendUint(t.dport, out);
  } else if (sent && (r.present & kHasIcmp)) {
    out->append(",\"icmp\":{\"type\":");
    AppendUint(t.icmpType, out);
    out->append(",\"code\":");
    AppendUint(t.icmpCode, out);
    out->append(",\"id\":");
    AppendUint(t.icmpId, out);
    out->push_back('}');
  }
  if (hasZone) {
    out->append(",\"zone\":");
    AppendUint(zone, out);
  }
  out->push_back('}');
}

// One side of the translation, read from the reply tuple as flows.ts natOf() reads it.
void AppendNatPoint(const Record& r, bool src, std::string* out) {
  const bool sent = (r.present & kHasReply) != 0;
  out->append("{\"address\":");
  AppendTupleAddress(r, r.reply, sent, src, out);
  if (sent && (r.present & kHasPorts) && r.protocol != kProtoGre) {
    out->append(",\"port\":");
    AppendUint(src ? r.reply.sport : r.reply.dport, out);
  }
  out->push_back('}');
}

void AppendNat(const Record& r, std::string* out) {
  const bool snat = r.status & kStatusSrcNat, dnat = r.status & kStatusDstNat;
  if (!snat && !dnat) return;
  out->append(",\"nat\":{");
  if (snat) {
    out->append("\"source\":");
    AppendNatPoint(r, false, out);  // the source its packets leave with: the reply's destination
  }
  if (dnat) {
    out->append(snat ? ",\"destination\":" : "\"destination\":");
    AppendNatPoint(r, true, out);  // where they really go: the reply's source
  }
  out->push_back('}');
}

void AppendPair(const char* name, uint64_t original, uint64_t reply, std::string* out) {
  out->append(name);
  out->append("{\"original\":");
  AppendNumber(original, out);
  out->append(",\"reply\":");
  AppendNumber(reply, out);
  out->push_back('}');
}

void AppendTimes(const Record& r, std::string* out) {
  if (!(r.present & kHasTimestampStart)) return;
  const uint64_t start = r.tsStart / 1000000, stop = r.tsStop / 1000000;
  out->append(",\"startMs\":");
  AppendUint(start, out);
  if (!(r.present & kHasTimestampStop)) return;
  out->append(",\"endMs\":");
  AppendUint(stop, out);
  out->append(",\"durationMs\":");
  if (stop < start) {
    out->push_back('-');
    AppendUint(start - stop, out);
  } else {
    AppendUint(stop - start, out);
  }
}

void AppendLabels(const Record& r, std::string* out) {
  out->append(",\"labels\":[");
  bool first = true;
  for (size_t i = 0; i < sizeof(r.labels); ++i) {
    for (int b = 0; b < 8; ++b) {
      if (!(r.labels[i] & (1 << b))) continue;
      if (!first) out->push_back(',');
      first = false;
      AppendUint(i * 8 + b, out);
    }
  }
  out->push_back(']');
}

}  // namespace

void FlowJson::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("FlowJson", DefineClass(env, "FlowJson", {InstanceMethod("lines", &FlowJson::Entry<&FlowJson::Lines>)}));
}

FlowJson::FlowJson(const Napi::CallbackInfo& info) : JsObjectWrap<FlowJson>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) {
    Napi::TypeError::New(env, "FlowJson({ protocols, states })").ThrowAsJavaScriptException();
    return;
  }
  if (!JsCanRun(env)) return;  // its methods do nothing either (JsObjectWrap)
  Napi::Object o = info[0].As<Napi::Object>();
  protocols_.assign(256, std::string());
  states_.assign(256, std::vector<std::string>());
  Napi::Value protocols = Prop(o, "protocols");
  if (protocols.IsArray()) {
    Napi::Array a = protocols.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length() && i < 256; ++i) {
      Napi::Value v = Prop(a, i);
      if (v.IsString()) protocols_[i] = v.As<Napi::String>().Utf8Value();
    }
  }
  Napi::Value states = Prop(o, "states");
  if (states.IsObject()) {
    Napi::Object s = states.As<Napi::Object>();
    for (uint32_t p = 0; p < 256; ++p) {
      Napi::Value names = Prop(s, p);
      if (!names.IsArray()) continue;
      Napi::Array a = names.As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i) {
        Napi::Value name = Prop(a, i);
        states_[p].push_back(name.IsString() ? name.As<Napi::String>().Utf8Value() : std::string());
      }
    }
  }
}

// The fields in FlowRecord's order, each only when flows.ts flowRecord() sets it.
void FlowJson::AppendRecord(const Record& r, const std::string& prefix, std::string* out) const {
  out->push_back('{');
  out->append(prefix);
  out->append(r.kind == kKindNew ? "\"event\":\"start\",\"id\":" : "\"event\":\"end\",\"id\":");
  AppendUint(r.id, out);
  out->append(r.family == AF_INET6 ? ",\"family\":\"ipv6\",\"protocol\":" : ",\"family\":\"ipv4\",\"protocol\":");
  const std::string& proto = protocols_[r.protocol];
  if (proto.empty()) {
    AppendUint(r.protocol, out);
  } else {
    out->push_back('"');
    out->append(proto);
    out->push_back('"');
  }
  out->append(",\"original\":");
  AppendTuple(r, r.orig, true, r.present & kHasOrigZone, r.origZone, out);
  out->append(",\"reply\":");
  AppendTuple(r, r.reply, r.present & kHasReply, r.present & kHasReplyZone, r.replyZone, out);
  AppendNat(r, out);
  AppendTimes(r, out);
  if (r.present & kHasCounters) {
    AppendPair(",\"packets\":", r.origPackets, r.replyPackets, out);
    AppendPair(",\"bytes\":", r.origBytes, r.replyBytes, out);
  }
  const std::vector<std::string>& states = states_[r.protocol];
  if ((r.present & kHasState) && r.state < states.size()) {
    out->append(",\"state\":\"");
    out->append(states[r.state]);
    out->push_back('"');
  }
  if (r.present & kHasMark) {
    out->append(",\"mark\":");
    AppendUint(r.mark, out);
  }
  out->append(",\"zone\":");
  AppendUint(r.zone, out);
  if (r.present & kHasLabels) AppendLabels(r, out);
  out->append("}\n");
}

Napi::Value FlowJson::Lines(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsString()) {
    Napi::TypeError::New(env, "lines(records, prefix)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto in = info[0].As<Napi::Buffer<uint8_t>>();
  const std::string prefix = info[1].As<Napi::String>().Utf8Value();
  std::string out;
  out.reserve(in.Length() * 3 / 2);
  uint32_t records = 0;
  uint64_t lost = 0;
  for (size_t off = 0; off + sizeof(Record) <= in.Length();) {
    Record r;
    std::memcpy(&r, in.Data() + off, sizeof(r));
    off += sizeof(Record) + r.tailBytes;
    if (r.kind == kKindOverrun) {
      out.push_back('{');
      out.append(prefix);
      out.append("\"event\":\"lost\",\"count\":");
      AppendUint(r.lost, &out);
      out.append("}\n");
      lost += r.lost;
    } else if (r.kind == kKindNew || r.kind == kKindDestroy) {
      AppendRecord(r, prefix, &out);
      records++;
    }
  }
  Napi::Object result = Napi::Object::New(env);
  // The text is ASCII but for the caller's fields, which are UTF-8: only then is it decoded as such.
  const bool ascii = std::all_of(prefix.begin(), prefix.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  napi_value text;
  if (ascii) {
    napi_create_string_latin1(env, out.data(), out.size(), &text);
  } else {
    napi_create_string_utf8(env, out.data(), out.size(), &text);
  }
  result.Set("text", Napi::Value(env, text));
  result.Set("records", records);
  result.Set("lost", static_cast<double>(lost));
  return result;
}

}  // namespace ct
