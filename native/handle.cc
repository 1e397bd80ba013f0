#include "handle.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#include <cstring>
#include <string>

#include "batch.h"
#include "bulk.h"
#include "change.h"
#include "convert.h"
#include "cursor.h"
#include "decode.h"
#include "expect.h"
#include "process.h"
#include "request.h"
#include "stats.h"

namespace ct {

int HandleState::Acquire(std::unique_ptr<NlSocket>* out) {
  if (closed) return -EBADF;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!idle.empty()) {
      *out = std::move(idle.back());
      idle.pop_back();
      return 0;
    }
  }
  return WithNetns([out](int nsFd) { return NlSocket::Open(nsFd, 0, out); });
}

int HandleState::WithNetns(const std::function<int(int nsFd)>& fn) {
  std::shared_ptr<const UniqueFd> ns;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (closed) return -EBADF;
    ns = netns_;
  }
  if (!netnsPath.empty() && !ns) return -EBADF;  // not opened (yet) or closed
  return fn(ns ? ns->get() : -1);
}

int HandleState::OpenNetnsPath() {
  if (netnsPath.empty()) return 0;
  UniqueFd fd;
  int rc = OpenNetns(netnsPath, &fd);
  if (rc < 0) return rc;
  std::lock_guard<std::mutex> lock(mu);
  if (closed) return -EBADF;
  netns_ = std::make_shared<const UniqueFd>(std::move(fd));
  return 0;
}

void HandleState::Release(std::unique_ptr<NlSocket> s) {
  if (!s || closed) return;
  std::lock_guard<std::mutex> lock(mu);
  if (idle.size() < 4) idle.push_back(std::move(s));
}

void HandleState::CloseAll() {
  std::lock_guard<std::mutex> lock(mu);
  closed = true;
  idle.clear();
  netns_.reset();
}

Napi::Value RecordsToBuffer(Napi::Env env, const void* data, size_t bytes) {
  return Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(data), bytes);
}

Napi::Function Handle::Init(Napi::Env env) {
  return DefineClass(env, "Handle",
                     {InstanceMethod("open", &Handle::Entry<&Handle::Open>), InstanceMethod("get", &Handle::Entry<&Handle::Get>), InstanceMethod("create", &Handle::Entry<&Handle::Create>),
                      InstanceMethod("createMany", &Handle::Entry<&Handle::CreateMany>),
                      InstanceMethod("update", &Handle::Entry<&Handle::Update>), InstanceMethod("delete", &Handle::Entry<&Handle::Delete>),
                      InstanceMethod("flush", &Handle::Entry<&Handle::Flush>),
                      InstanceMethod("expectDump", &Handle::Entry<&Handle::ExpectDump>), InstanceMethod("expectGet", &Handle::Entry<&Handle::ExpectGet>),
                      InstanceMethod("expectCreate", &Handle::Entry<&Handle::ExpectCreate>),
                      InstanceMethod("expectDelete", &Handle::Entry<&Handle::ExpectDelete>),
                      InstanceMethod("expectFlush", &Handle::Entry<&Handle::ExpectFlush>),
                      InstanceMethod("stats", &Handle::Entry<&Handle::Stats>),
                      InstanceMethod("dump", &Handle::Entry<&Handle::Dump>), InstanceMethod("processOf", &Handle::Entry<&Handle::ProcessOf>),
                      InstanceMethod("readFile", &Handle::Entry<&Handle::ReadFile>),
                      InstanceMethod("writeFile", &Handle::Entry<&Handle::WriteFile>), InstanceMethod("statMode", &Handle::Entry<&Handle::StatMode>),
                      InstanceMethod("namespaceId", &Handle::Entry<&Handle::NamespaceId>),
                      InstanceMethod("close", &Handle::Entry<&Handle::Close>)});
}

Handle::Handle(const Napi::CallbackInfo& info) : JsObjectWrap<Handle>(info) {
  state_ = std::make_shared<HandleState>();
  if (info.Length() > 0 && info[0].IsString()) state_->netnsPath = info[0].As<Napi::String>().Utf8Value();
}

Napi::Value Handle::Open(const Napi::CallbackInfo& info) {
  auto st = state_;
  return RunOnPool(info.Env(), "open", [st]() { return st->OpenNetnsPath(); }, nullptr);
}

Handle::~Handle() { state_->CloseAll(); }

// Every single request the handle makes, entries' and expectations': its
// message and what JS gets back. Flush's version 1 asks the kernel to honour
// nfgen_family (older kernels flush all).
namespace {
constexpr uint8_t kCt = NFNL_SUBSYS_CTNETLINK, kExp = NFNL_SUBSYS_CTNETLINK_EXP;
constexpr uint16_t kExcl = NLM_F_CREATE | NLM_F_EXCL;
}  // namespace
const Handle::Shapes Handle::kShapes = {
    // op                     subsys type                        flags        version answer
    {"get",                   kCt,   IPCTNL_MSG_CT_GET,          0,           0,      Answer::kRecordOrNull},
    {"get",                   kCt,   IPCTNL_MSG_CT_GET_CTRZERO,  0,           0,      Answer::kRecordOrNull},
    {"create",                kCt,   IPCTNL_MSG_CT_NEW,          kExcl,       0,      Answer::kNothing},
    {"delete",                kCt,   IPCTNL_MSG_CT_DELETE,       0,           0,      Answer::kFound},
    {"flush",                 kCt,   IPCTNL_MSG_CT_DELETE,       0,           1,      Answer::kNothing},
    {"expectations.dump",     kExp,  IPCTNL_MSG_EXP_GET,         NLM_F_DUMP,  0,      Answer::kRecords},
    {"expectations.get",      kExp,  IPCTNL_MSG_EXP_GET,         0,           0,      Answer::kRecordOrNull},
    {"expectations.create",   kExp,  IPCTNL_MSG_EXP_NEW,         kExcl,       0,      Answer::kNothing},
    {"expectations.delete",   kExp,  IPCTNL_MSG_EXP_DELETE,      0,           0,      Answer::kFound},
    {"expectations.flush",    kExp,  IPCTNL_MSG_EXP_DELETE,      0,           0,      Answer::kNothing},
};

namespace {

// One request/ACK exchange on a pooled socket. The socket goes back to the
// pool only after a clean exchange; after a transport error it is dropped.
int RunRequest(const std::shared_ptr<HandleState>& st, MessageBuffer& msg,
               const std::function<int(const struct nlmsghdr*)>& onMessage) {
  std::unique_ptr<NlSocket> sock;
  int rc = st->Acquire(&sock);
  if (rc < 0) return rc;
  struct nlmsghdr* nlh = reinterpret_cast<struct nlmsghdr*>(const_cast<char*>(msg.data()));
  rc = sock->Transact(nlh, onMessage);
  // Kernel verdicts (ENOENT, EEXIST, EINVAL, EPERM...) leave the socket clean.
  if (rc != -ENOBUFS && rc != -EBADMSG && rc != -EINTR) st->Release(std::move(sock));
  return rc;
}

// Reads one entry by its key; `found` stays false when the kernel has none.
int GetRecord(const std::shared_ptr<HandleState>& st, const EntrySpec& key, Record* out, std::string* tail, bool* found) {
  MessageBuffer msg(1024);
  struct nlmsghdr* nlh = msg.Begin(IPCTNL_MSG_CT_GET, 0, key.family, 0);
  PutEntry(nlh, key);
  msg.End(nlh);
  int rc = RunRequest(st, msg, [&](const struct nlmsghdr* m) {
    if (DecodeRecord(m, false, out, tail) < 0) return -EBADMSG;
    *found = true;
    return 0;
  });
  return rc == -ENOENT ? 0 : rc;
}

struct StatsResult {
  uint32_t count = 0, max = 0;
  bool hasGlobal = false;
  struct Cpu {
    uint16_t cpu;
    uint32_t v[CTA_STATS_MAX + 1];
  };
  std::vector<Cpu> cpus;
};

int CollectStatsAttr(const struct nlattr* attr, void* data) {
  auto* v = static_cast<uint32_t*>(data);
  int type = mnl_attr_get_type(attr);
  if (type > 0 && type <= CTA_STATS_MAX && mnl_attr_validate(attr, MNL_TYPE_U32) >= 0)
    v[type] = ntohl(mnl_attr_get_u32(attr));
  return MNL_CB_OK;
}

int CollectGlobalAttr(const struct nlattr* attr, void* data) {
  auto* r = static_cast<StatsResult*>(data);
  int type = mnl_attr_get_type(attr);
  if (mnl_attr_validate(attr, MNL_TYPE_U32) < 0) return MNL_CB_OK;
  if (type == CTA_STATS_GLOBAL_ENTRIES) r->count = ntohl(mnl_attr_get_u32(attr)), r->hasGlobal = true;
  if (type == CTA_STATS_GLOBAL_MAX_ENTRIES) r->max = ntohl(mnl_attr_get_u32(attr));
  return MNL_CB_OK;
}

}  // namespace

// createMany(specs): creates in batches (SendBatched, the bulk delete's path:
// no ACK per entry), for conntrack/testing's fill(). Resolves the refusals as
// a flat array [index, errno, index, errno, ...]; empty when all were made.
Napi::Value Handle::CreateMany(const Napi::CallbackInfo& info) {
  auto specs = std::make_shared<std::vector<EntrySpec>>();
  if (info.Length() > 0 && info[0].IsArray()) {
    Napi::Array list = info[0].As<Napi::Array>();
    specs->reserve(list.Length());
    for (uint32_t i = 0; i < list.Length(); ++i) specs->push_back(ToEntrySpec(Prop(list, i).As<Napi::Object>()));
  }
  auto st = state_;
  auto failures = std::make_shared<std::vector<std::pair<uint32_t, int>>>();
  auto exec = [st, specs, failures]() -> int {
    std::unique_ptr<NlSocket> sock;
    int rc = st->Acquire(&sock);
    if (rc < 0) return rc;
    static const std::atomic<bool> never{false};
    rc = SendBatched(sock.get(), *specs, IPCTNL_MSG_CT_NEW, never, [&](size_t i, int err) {
      failures->emplace_back(static_cast<uint32_t>(i), err);
    }, NLM_F_CREATE | NLM_F_EXCL);
    if (rc == 0) st->Release(std::move(sock));
    return rc;
  };
  return RunOnPool(info.Env(), "createMany", exec, [failures](Napi::Env e) -> Napi::Value {
    Napi::Array out = Napi::Array::New(e, failures->size() * 2);
    for (size_t i = 0; i < failures->size(); ++i) {
      out.Set(static_cast<uint32_t>(2 * i), (*failures)[i].first);
      out.Set(static_cast<uint32_t>(2 * i + 1), (*failures)[i].second);
    }
    return out;
  });
}

// update(key, change, id?): the entry is read by its key and checked against
// `id` when one is given (the kernel ignores CTA_ID in an update, so the
// check is made here, just before the write); then only what the change
// would alter is sent, as conntrack -U sends it. Resolves { result, record }:
// 'updated' with the entry as the update left it, 'unchanged' or
// 'fixedTimeout' with the entry as it is, 'replaced' with the entry that
// holds the tuple now, or 'missing'.
Napi::Value Handle::Update(const Napi::CallbackInfo& info) {
  EntrySpec key;
  if (info.Length() > 0 && info[0].IsObject()) key = ToEntrySpec(info[0].As<Napi::Object>());
  ChangeSpec change = ToChangeSpec(info.Length() > 1 ? info[1] : info.Env().Undefined());
  const bool hasId = info.Length() > 2 && info[2].IsNumber();
  const uint32_t id = hasId ? info[2].As<Napi::Number>().Uint32Value() : 0;
  auto st = state_;
  auto record = std::make_shared<Record>();
  auto tail = std::make_shared<std::string>();
  auto result = std::make_shared<const char*>("missing");
  auto exec = [st, key, change, hasId, id, record, tail, result]() -> int {
    bool found = false;
    int rc = GetRecord(st, key, record.get(), tail.get(), &found);
    if (rc < 0 || !found) return rc;
    if (hasId && (!(record->present & kHasId) || record->id != id)) {
      *result = "replaced";
      return 0;
    }
    EntrySpec request;
    Record after;
    switch (ApplyChange(*record, change, &request, &after)) {
      case ChangeResult::kUnchanged:
        *result = "unchanged";
        return 0;
      case ChangeResult::kFixedTimeout:
        *result = "fixedTimeout";
        return 0;
      case ChangeResult::kChanged:
        break;
    }
    MessageBuffer msg(1024);
    struct nlmsghdr* nlh = msg.Begin(IPCTNL_MSG_CT_NEW, 0, request.family, 0);
    PutEntry(nlh, request);
    msg.End(nlh);
    rc = RunRequest(st, msg, {});
    if (rc == -ENOENT) return 0;  // gone between the read and the write: 'missing'
    if (rc < 0) return rc;
    *record = after;
    *result = "updated";
    return 0;
  };
  return RunOnPool(info.Env(), "update", exec, [record, tail, result](Napi::Env e) -> Napi::Value {
    Napi::Object o = Napi::Object::New(e);
    o.Set("result", *result);
    if (std::strcmp(*result, "missing") != 0) {
      // The change leaves the strings as they were: the tail is the entry's.
      RecordBatch one;
      one.Add(*record, *tail);
      o.Set("record", RecordsToBuffer(e, one.data(), one.bytes()));
    }
    return o;
  });
}

// One request, one reply (or a dump's many), for entries and expectations
// alike: what the message is and what JS gets back come from its shape.
// What "not found" means is decided here, once: get() resolves null and
// delete() false on the kernel's ENOENT.
Napi::Value Handle::RunShaped(Napi::Env env, const RequestShape& shape, uint8_t family,
                              std::function<void(struct nlmsghdr*)> put) {
  auto st = state_;
  auto records = std::make_shared<RecordBatch>();
  auto missing = std::make_shared<bool>(false);
  auto exec = [st, &shape, family, put = std::move(put), records, missing]() -> int {
    MessageBuffer msg(1024);
    struct nlmsghdr* nlh = msg.Begin(shape.type, shape.flags, family, 0, shape.version, shape.subsys);
    if (put) put(nlh);
    msg.End(nlh);
    std::string tail;
    int rc = RunRequest(st, msg, [&](const struct nlmsghdr* m) {
      Record r;
      if (DecodeRecord(m, false, &r, &tail) < 0) return -EBADMSG;
      records->Add(r, tail);
      return 0;
    });
    if (rc == -ENOENT && shape.answer == Answer::kRecordOrNull) return 0;
    if (rc == -ENOENT && shape.answer == Answer::kFound) {
      *missing = true;
      return 0;
    }
    return rc;
  };
  return RunOnPool(env, shape.op, exec, [&shape, records, missing](Napi::Env e) -> Napi::Value {
    switch (shape.answer) {
      case Answer::kRecords:
        return RecordsToBuffer(e, records->data(), records->bytes());
      case Answer::kRecordOrNull: {
        if (records->empty()) return e.Null();
        size_t len;
        const uint8_t* first = records->BytesOf(0, &len);
        return RecordsToBuffer(e, first, len);
      }
      case Answer::kFound:
        return Napi::Boolean::New(e, !*missing);
      case Answer::kNothing:
        break;
    }
    return e.Undefined();
  });
}

namespace {

EntrySpec EntryArg(const Napi::CallbackInfo& info) {
  return info.Length() > 0 && info[0].IsObject() ? ToEntrySpec(info[0].As<Napi::Object>()) : EntrySpec();
}
ExpectSpec ExpectArg(const Napi::CallbackInfo& info) {
  return info.Length() > 0 && info[0].IsObject() ? ToExpectSpec(info[0].As<Napi::Object>()) : ExpectSpec();
}

}  // namespace

Napi::Value Handle::RunEntry(const Napi::CallbackInfo& info, const RequestShape& shape) {
  EntrySpec spec = EntryArg(info);
  const RequestShape& s = &shape == &kShapes.get && spec.zeroCounters ? kShapes.getZero : shape;
  return RunShaped(info.Env(), s, spec.family, [spec](struct nlmsghdr* nlh) { PutEntry(nlh, spec); });
}
Napi::Value Handle::RunExpect(const Napi::CallbackInfo& info, const RequestShape& shape, bool withSpec) {
  ExpectSpec spec = ExpectArg(info);
  std::function<void(struct nlmsghdr*)> put;
  if (withSpec) put = [spec](struct nlmsghdr* nlh) { PutExpect(nlh, spec); };
  return RunShaped(info.Env(), shape, spec.family, std::move(put));
}

Napi::Value Handle::Get(const Napi::CallbackInfo& info) { return RunEntry(info, kShapes.get); }
Napi::Value Handle::Create(const Napi::CallbackInfo& info) { return RunEntry(info, kShapes.create); }
Napi::Value Handle::Delete(const Napi::CallbackInfo& info) { return RunEntry(info, kShapes.del); }
Napi::Value Handle::Flush(const Napi::CallbackInfo& info) { return RunEntry(info, kShapes.flush); }
Napi::Value Handle::ExpectDump(const Napi::CallbackInfo& info) { return RunExpect(info, kShapes.expectDump, false); }
Napi::Value Handle::ExpectGet(const Napi::CallbackInfo& info) { return RunExpect(info, kShapes.expectGet, true); }
Napi::Value Handle::ExpectCreate(const Napi::CallbackInfo& info) { return RunExpect(info, kShapes.expectCreate, true); }
Napi::Value Handle::ExpectDelete(const Napi::CallbackInfo& info) { return RunExpect(info, kShapes.expectDelete, true); }
Napi::Value Handle::ExpectFlush(const Napi::CallbackInfo& info) { return RunExpect(info, kShapes.expectFlush, false); }

Napi::Value Handle::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = state_;
  auto result = std::make_shared<StatsResult>();
  auto exec = [st, result]() -> int {
    MessageBuffer msg(512);
    struct nlmsghdr* nlh = msg.Begin(IPCTNL_MSG_CT_GET_STATS, 0, AF_UNSPEC, 0);
    msg.End(nlh);
    int rc = RunRequest(st, msg, [&](const struct nlmsghdr* m) {
      mnl_attr_parse(m, sizeof(struct nfgenmsg), CollectGlobalAttr, result.get());
      return 0;
    });
    if (rc < 0) return rc;
    MessageBuffer cpuMsg(512);
    nlh = cpuMsg.Begin(IPCTNL_MSG_CT_GET_STATS_CPU, NLM_F_DUMP, AF_UNSPEC, 0);
    cpuMsg.End(nlh);
    return RunRequest(st, cpuMsg, [&](const struct nlmsghdr* m) {
      StatsResult::Cpu cpu{};
      const struct nfgenmsg* nfg = static_cast<const struct nfgenmsg*>(mnl_nlmsg_get_payload(m));
      cpu.cpu = ntohs(nfg->res_id);
      mnl_attr_parse(m, sizeof(struct nfgenmsg), CollectStatsAttr, cpu.v);
      result->cpus.push_back(cpu);
      return 0;
    });
  };
  return RunOnPool(env, "stats", exec, [result](Napi::Env e) -> Napi::Value {
    Napi::Object o = Napi::Object::New(e);
    o.Set("count", result->count);
    o.Set("max", result->max);
    Napi::Array cpus = Napi::Array::New(e, result->cpus.size());
    for (size_t i = 0; i < result->cpus.size(); ++i) {
      const auto& c = result->cpus[i];
      Napi::Object co = Napi::Object::New(e);
      co.Set("cpu", c.cpu);
#define CT_COUNTER(key, attr) co.Set(#key, c.v[attr]);
      CT_STATS_COUNTERS(CT_COUNTER)
#undef CT_COUNTER
      cpus.Set(static_cast<uint32_t>(i), co);
    }
    o.Set("perCpu", cpus);
    return o;
  });
}

Napi::Value Handle::Dump(const Napi::CallbackInfo& info) {
  return DumpCursor::New(info.Env(), state_, info[0], info[1]);
}

// The process owning netlink port `portid` in the handle's namespace, or undefined.
Napi::Value Handle::ProcessOf(const Napi::CallbackInfo& info) {
  uint32_t portid = info[0].As<Napi::Number>().Uint32Value();
  auto st = state_;
  auto rec = std::make_shared<Record>();
  auto name = std::make_shared<std::string>();
  return RunOnPool(
      info.Env(), "processOf",
      [st, portid, rec, name]() {
        ProcessResolver resolver;
        int rc = st->WithNetns([&](int nsFd) { return resolver.Open(nsFd); });
        if (rc < 0) return rc;
        rec->portid = portid;
        resolver.Resolve(rec.get(), 1, false);
        if (rec->pid) *name = resolver.NameOf(rec->pid);
        return 0;
      },
      [rec, name](Napi::Env e) -> Napi::Value {
        if (!rec->pid || name->empty()) return e.Undefined();
        Napi::Object o = Napi::Object::New(e);
        o.Set("pid", rec->pid);
        o.Set("name", *name);
        return o;
      });
}

Napi::Value Handle::ReadFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  auto st = state_;
  auto out = std::make_shared<std::string>();
  return RunOnPool(
      env, "readFile", [st, path, out]() {
        return st->WithNetns([&](int nsFd) { return ReadFileInNetns(nsFd, path, out.get()); });
      },
      [out](Napi::Env e) -> Napi::Value { return Napi::String::New(e, *out); });
}

Napi::Value Handle::WriteFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::string data = info[1].As<Napi::String>().Utf8Value();
  auto st = state_;
  return RunOnPool(env, "writeFile", [st, path, data]() {
        return st->WithNetns([&](int nsFd) { return WriteFileInNetns(nsFd, path, data); });
      }, nullptr);
}

Napi::Value Handle::StatMode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  auto st = state_;
  auto mode = std::make_shared<uint32_t>(0);
  return RunOnPool(
      env, "statMode", [st, path, mode]() {
        return st->WithNetns([&](int nsFd) { return StatModeInNetns(nsFd, path, mode.get()); });
      },
      [mode](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, *mode); });
}

Napi::Value Handle::NamespaceId(const Napi::CallbackInfo& info) {
  auto st = state_;
  auto id = std::make_shared<NetnsIdentity>();
  return RunOnPool(
      info.Env(), "namespaceId", [st, id]() { return st->WithNetns([&](int nsFd) { return IdentifyNetns(nsFd, id.get()); }); },
      [id](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        o.Set("dev", Napi::Number::New(e, static_cast<double>(id->dev)));
        o.Set("inode", Napi::Number::New(e, static_cast<double>(id->ino)));
        o.Set("ctimeSec", Napi::Number::New(e, static_cast<double>(id->ctimeSec)));
        o.Set("ctimeNsec", Napi::Number::New(e, id->ctimeNsec));
        return o;
      });
}

Napi::Value Handle::Close(const Napi::CallbackInfo& info) {
  state_->CloseAll();
  return info.Env().Undefined();
}

}  // namespace ct
