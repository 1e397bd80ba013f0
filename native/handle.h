// The JS-visible Handle: one per Conntrack.open(). Owns the namespace fd and
// a small pool of request sockets; every request runs on the libuv thread
// pool (pool.h's RunOnPool), never on the JS thread.
#pragma once

#include <linux/netlink.h>
#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "js_entry.h"
#include "netns.h"
#include "pool.h"
#include "socket.h"

namespace ct {

// Per-environment state of the addon (constructors used from C++).
struct AddonData {
  Napi::FunctionReference cursorCtor;
};

struct HandleState {
  std::string netnsPath;  // empty = the process's own namespace
  std::mutex mu;
  std::vector<std::unique_ptr<NlSocket>> idle;
  std::atomic<bool> closed{false};

  // Runs `fn` with the namespace fd (-1: the process's own namespace). The fd
  // is shared with in-flight work: close() drops the handle's reference, and
  // the fd closes when the last job using it returns. -EBADF once closed.
  int WithNetns(const std::function<int(int nsFd)>& fn);
  // Opens netnsPath (on a pool thread: the open must never block JS).
  int OpenNetnsPath();
  // A clean request socket from the pool, or a new one in the namespace.
  int Acquire(std::unique_ptr<NlSocket>* out);
  // Back to the pool (or closed when the handle is closed).
  void Release(std::unique_ptr<NlSocket> s);
  void CloseAll();

 private:
  std::shared_ptr<const UniqueFd> netns_;
};

class Handle : public JsObjectWrap<Handle> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Handle(const Napi::CallbackInfo& info);
  ~Handle() override;
  std::shared_ptr<HandleState> state() const { return state_; }

 private:
  Napi::Value Open(const Napi::CallbackInfo& info);
  // What JS gets back from a single request.
  enum class Answer {
    kNothing,
    kRecordOrNull,  // the first record; null on ENOENT
    kRecords,       // every record of a dump
    kFound,         // false on ENOENT, else true
  };
  // A request's message and answer (the table kShapes in handle.cc).
  struct RequestShape {
    const char* op;
    uint8_t subsys;
    uint8_t type;
    uint16_t flags;
    uint8_t version;
    Answer answer;
  };
  struct Shapes {
    RequestShape get, getZero, create, del, flush, expectDump, expectGet, expectCreate, expectDelete, expectFlush;
  };
  static const Shapes kShapes;
  Napi::Value RunShaped(Napi::Env env, const RequestShape& shape, uint8_t family, std::function<void(struct nlmsghdr*)> put);
  Napi::Value RunEntry(const Napi::CallbackInfo& info, const RequestShape& shape);
  Napi::Value RunExpect(const Napi::CallbackInfo& info, const RequestShape& shape, bool withSpec);
  Napi::Value Get(const Napi::CallbackInfo& info);
  Napi::Value Create(const Napi::CallbackInfo& info);
  Napi::Value CreateMany(const Napi::CallbackInfo& info);
  Napi::Value Update(const Napi::CallbackInfo& info);
  Napi::Value Delete(const Napi::CallbackInfo& info);
  Napi::Value Flush(const Napi::CallbackInfo& info);
  Napi::Value ExpectDump(const Napi::CallbackInfo& info);
  Napi::Value ExpectGet(const Napi::CallbackInfo& info);
  Napi::Value ExpectCreate(const Napi::CallbackInfo& info);
  Napi::Value ExpectDelete(const Napi::CallbackInfo& info);
  Napi::Value ExpectFlush(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Dump(const Napi::CallbackInfo& info);
  Napi::Value ProcessOf(const Napi::CallbackInfo& info);
  Napi::Value ReadFile(const Napi::CallbackInfo& info);
  Napi::Value WriteFile(const Napi::CallbackInfo& info);
  Napi::Value StatMode(const Napi::CallbackInfo& info);
  Napi::Value NamespaceId(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  std::shared_ptr<HandleState> state_;
};

// Copies records into a new Buffer for JS.
Napi::Value RecordsToBuffer(Napi::Env env, const void* data, size_t bytes);

}  // namespace ct
