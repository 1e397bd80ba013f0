#include "convert.h"

#include <cstddef>
#include <cstring>
#include <limits>
#include <utility>

#include "js_entry.h"

namespace ct {
namespace {

bool GetNumber(const Napi::Object& o, const char* key, double* out) {
  Napi::Value v = Prop(o, key);
  if (!v.IsNumber()) return false;
  *out = v.As<Napi::Number>().DoubleValue();
  return true;
}

template <typename T>
bool GetUint(const Napi::Object& o, const char* key, T* out) {
  double d;
  if (!GetNumber(o, key, &d)) return false;
  // TypeScript validated the value; clamping keeps a stray NaN or negative
  // from being undefined behaviour in the conversion.
  constexpr double kMax = static_cast<double>(std::numeric_limits<T>::max());
  *out = !(d > 0) ? T(0) : d >= kMax ? std::numeric_limits<T>::max() : static_cast<T>(d);
  return true;
}

bool GetAddress(const Napi::Object& o, const char* key, uint8_t* out) {
  Napi::Value v = Prop(o, key);
  if (!v.IsBuffer()) return false;
  auto buf = v.As<Napi::Buffer<uint8_t>>();
  if (buf.Length() != 4 && buf.Length() != 16) return false;
  std::memcpy(out, buf.Data(), buf.Length());
  return true;
}

// A 16-byte label bitmap (bit i of byte i/8, as the kernel's CTA_LABELS).
bool GetBytes16(const Napi::Object& o, const char* key, uint8_t* out) {
  Napi::Value v = Prop(o, key);
  if (!v.IsBuffer()) return false;
  auto buf = v.As<Napi::Buffer<uint8_t>>();
  if (buf.Length() != 16) return false;
  std::memcpy(out, buf.Data(), 16);
  return true;
}

void AddPrefixes(const Napi::Value& v, PrefixSet* set) {
  if (!v.IsBuffer()) return;
  auto buf = v.As<Napi::Buffer<uint8_t>>();
  for (size_t off = 0; off + sizeof(PrefixRow) <= buf.Length(); off += sizeof(PrefixRow)) {
    PrefixRow row;
    std::memcpy(&row, buf.Data() + off, sizeof(row));
    set->Add(row.family, row.addr, row.length);
  }
}

std::unique_ptr<std::bitset<65536>> ToPortSet(const Napi::Value& v) {
  if (!v.IsArray()) return nullptr;
  auto arr = v.As<Napi::Array>();
  auto set = std::make_unique<std::bitset<65536>>();
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value p = Prop(arr, i);
    if (p.IsNumber()) set->set(p.As<Napi::Number>().Uint32Value() & 0xffff);
  }
  return set;
}

}  // namespace

TupleSpec ToTuple(const Napi::Value& v) {
  TupleSpec t;
  if (!v.IsObject()) return t;
  Napi::Object o = v.As<Napi::Object>();
  t.present = true;
  t.hasSrc = GetAddress(o, "src", t.src);
  t.hasDst = GetAddress(o, "dst", t.dst);
  double d;
  if (GetNumber(o, "protocol", &d)) t.protocol = static_cast<int>(d);
  t.hasSport = GetUint(o, "sport", &t.sport);
  t.hasDport = GetUint(o, "dport", &t.dport);
  t.hasIcmpType = GetUint(o, "icmpType", &t.icmpType);
  t.hasIcmpCode = GetUint(o, "icmpCode", &t.icmpCode);
  t.hasIcmpId = GetUint(o, "icmpId", &t.icmpId);
  t.hasZone = GetUint(o, "zone", &t.zone);
  return t;
}

EntrySpec ToEntrySpec(const Napi::Object& o) {
  EntrySpec s;
  GetUint(o, "family", &s.family);
  s.orig = ToTuple(Prop(o, "original"));
  s.reply = ToTuple(Prop(o, "reply"));
  s.hasTimeout = GetUint(o, "timeout", &s.timeout);
  s.hasStatus = GetUint(o, "status", &s.status);
  s.hasMark = GetUint(o, "mark", &s.mark);
  s.hasZone = GetUint(o, "zone", &s.zone);
  s.hasId = GetUint(o, "id", &s.id);
  double d;
  if (GetNumber(o, "state", &d)) s.state = static_cast<int>(d);
  s.hasLabels = GetBytes16(o, "labels", s.labels);
  s.hasLabelsMask = GetBytes16(o, "labelsMask", s.labelsMask);
  s.hasVtags = GetUint(o, "vtagOriginal", &s.vtagOriginal) && GetUint(o, "vtagReply", &s.vtagReply);
  s.hasRole = GetUint(o, "dccpRole", &s.dccpRole);
  s.zeroCounters = Truthy(Prop(o, "zeroCounters"));
  s.hasMarkMask = GetUint(o, "markMask", &s.markMask);
  for (const auto& [key, nat] : {std::pair<const char*, EntrySpec::Nat*>{"snat", &s.snat}, {"dnat", &s.dnat}}) {
    Napi::Value v = Prop(o, key);
    if (!v.IsObject()) continue;
    Napi::Object n = v.As<Napi::Object>();
    nat->present = GetAddress(n, "address", nat->addr);
    nat->hasPort = GetUint(n, "port", &nat->port);
  }
  return s;
}

ChangeSpec ToChangeSpec(const Napi::Value& v) {
  ChangeSpec c;
  if (!v.IsObject()) return c;
  Napi::Object o = v.As<Napi::Object>();
  c.hasTimeout = GetUint(o, "timeout", &c.timeout);
  double d;
  if (GetNumber(o, "state", &d)) c.state = static_cast<int>(d);
  c.hasVtags = GetUint(o, "vtagOriginal", &c.vtagOriginal) && GetUint(o, "vtagReply", &c.vtagReply);
  c.hasRole = GetUint(o, "dccpRole", &c.dccpRole);
  c.hasStatus = GetUint(o, "status", &c.status);
  c.hasMark = GetUint(o, "mark", &c.mark);
  if (!GetUint(o, "markMask", &c.markMask)) c.markMask = 0xffffffff;
  c.hasLabels = GetBytes16(o, "labels", c.labels) && GetBytes16(o, "labelsMask", c.labelsMask);
  return c;
}

ExpectSpec ToExpectSpec(const Napi::Object& o) {
  ExpectSpec s;
  GetUint(o, "family", &s.family);
  s.master = ToTuple(Prop(o, "master"));
  s.tuple = ToTuple(Prop(o, "tuple"));
  s.mask = ToTuple(Prop(o, "mask"));
  s.hasTimeout = GetUint(o, "timeout", &s.timeout);
  s.hasId = GetUint(o, "id", &s.id);
  s.hasZone = GetUint(o, "zone", &s.zone);
  s.hasFlags = GetUint(o, "flags", &s.flags);
  s.hasClass = GetUint(o, "class", &s.klass);
  Napi::Value helper = Prop(o, "helper");
  if (helper.IsString()) {
    std::string h = helper.As<Napi::String>().Utf8Value();
    std::strncpy(s.helper, h.c_str(), sizeof(s.helper) - 1);
  }
  return s;
}

KernelFilter ToKernelFilter(const Napi::Value& v) {
  KernelFilter f;
  if (!v.IsObject()) return f;
  Napi::Object o = v.As<Napi::Object>();
  GetUint(o, "family", &f.family);
  f.hasMark = GetUint(o, "mark", &f.mark) && GetUint(o, "markMask", &f.markMask);
  f.hasStatus = GetUint(o, "status", &f.status) && GetUint(o, "statusMask", &f.statusMask);
  GetUint(o, "origFlags", &f.origFlags);
  f.tuple = ToTuple(Prop(o, "tuple"));
  f.zeroCounters = Truthy(Prop(o, "zeroCounters"));
  return f;
}

void ToMatchFilter(const Napi::Value& v, MatchFilter* m) {
  if (!v.IsObject()) return;
  Napi::Object o = v.As<Napi::Object>();
  GetUint(o, "family", &m->family);
  double d;
  if (GetNumber(o, "protocol", &d)) m->protocol = static_cast<int>(d);
  if (GetNumber(o, "zone", &d)) m->zone = static_cast<int>(d);
  if (GetNumber(o, "origZone", &d)) m->origZone = static_cast<int>(d);
  if (GetNumber(o, "replyZone", &d)) m->replyZone = static_cast<int>(d);
  AddPrefixes(Prop(o, "src"), &m->src);
  AddPrefixes(Prop(o, "dst"), &m->dst);
  uint8_t dir = 0;
  if (GetUint(o, "srcDirection", &dir)) m->srcDirection = static_cast<AddressDirection>(dir > 2 ? 0 : dir);
  m->sports = ToPortSet(Prop(o, "sports"));
  m->dports = ToPortSet(Prop(o, "dports"));
  bool t = GetUint(o, "tcpStates", &m->tcpStates);
  bool s = GetUint(o, "sctpStates", &m->sctpStates);
  bool c = GetUint(o, "dccpStates", &m->dccpStates);
  m->hasStateMask = t || s || c;
  GetUint(o, "statusValue", &m->statusValue);
  GetUint(o, "statusMask", &m->statusMask);
  GetUint(o, "markValue", &m->markValue);
  GetUint(o, "markMask", &m->markMask);
  AddPrefixes(Prop(o, "replySrc"), &m->replySrc);
  AddPrefixes(Prop(o, "replyDst"), &m->replyDst);
  m->replySports = ToPortSet(Prop(o, "replySports"));
  m->replyDports = ToPortSet(Prop(o, "replyDports"));
  if (GetNumber(o, "icmpType", &d)) m->icmpType = static_cast<int>(d);
  if (GetNumber(o, "icmpCode", &d)) m->icmpCode = static_cast<int>(d);
  if (GetNumber(o, "icmpId", &d)) m->icmpId = static_cast<int>(d);
  GetUint(o, "nat", &m->nat);
  m->hasNatAddr = GetAddress(o, "natAddress", m->natAddr);
  m->hasLabels = GetBytes16(o, "labels", m->labels);
}

Napi::Object RowLayouts(Napi::Env env) {
  Napi::Object prefixFields = Napi::Object::New(env);
#define CT_ROW_FIELD(name) prefixFields.Set(#name, static_cast<uint32_t>(offsetof(PrefixRow, name)));
  CT_PREFIX_ROW_FIELDS(CT_ROW_FIELD)
#undef CT_ROW_FIELD
  Napi::Object socketFields = Napi::Object::New(env);
#define CT_ROW_FIELD(name) socketFields.Set(#name, static_cast<uint32_t>(offsetof(SocketFilterRow, name)));
  CT_SOCKET_ROW_FIELDS(CT_ROW_FIELD)
#undef CT_ROW_FIELD
  Napi::Object kinds = Napi::Object::New(env);
#define CT_ROW_KIND(name, kind) kinds.Set(#name, static_cast<uint32_t>(kind));
  CT_SOCKET_ROW_KINDS(CT_ROW_KIND)
#undef CT_ROW_KIND
  Napi::Object prefix = Napi::Object::New(env);
  prefix.Set("size", static_cast<uint32_t>(sizeof(PrefixRow)));
  prefix.Set("fields", prefixFields);
  Napi::Object socket = Napi::Object::New(env);
  socket.Set("size", static_cast<uint32_t>(sizeof(SocketFilterRow)));
  socket.Set("fields", socketFields);
  socket.Set("kinds", kinds);
  Napi::Object layouts = Napi::Object::New(env);
  layouts.Set("prefix", prefix);
  layouts.Set("socketFilter", socket);
  return layouts;
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* op) {
  Napi::Error e = Napi::Error::New(env, std::string(op) + ": " + std::strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("op", Napi::String::New(env, op));
  return e;
}

}  // namespace ct
