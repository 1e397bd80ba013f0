// A streaming dump: the kernel produces entries only as fast as we recv(), so
// reading one batch per next() call keeps memory bounded however slow the
// consumer. The same cursor also counts, and bulk-deletes or bulk-updates the
// matching entries entirely in native code, without a JS object per entry
// (those methods live in bulk.cc).
#pragma once

#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "batch.h"
#include "handle.h"
#include "js_entry.h"
#include "match.h"
#include "netns.h"
#include "record.h"
#include "request.h"

namespace ct {

// The kernel does a dump's work inside our recv() calls, so a reader thread
// receives ahead (at most kReadAhead buffers: memory stays bounded) while
// the pool thread decodes and matches what was already received.
//
// The reader waits in poll() on the socket and an eventfd, so Cancel() wakes
// it at once from any thread. It is detached and holds a shared_ptr to this
// state: nothing ever joins it, least of all the JS thread (a GC finalizer
// may drop the last reference of a cursor); only pool threads wait for it to
// stop (StopReader), and that wait ends as soon as the eventfd is signalled.
struct DumpState : std::enable_shared_from_this<DumpState> {
  std::shared_ptr<HandleState> handle;
  KernelFilter kernel;
  MatchFilter match;
  std::unique_ptr<NlSocket> sock;
  uint32_t seq = 0;
  bool started = false, done = false, emitted = false;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> busy{false};
  RecordBatch collected;  // matches kept by Collect() for DeleteCollected()

  ~DumpState();
  int Start();
  // One received buffer of messages; matching records go to `out`.
  // Returns 1 (more to come), 0 (dump finished) or -errno.
  int Step(RecordBatch* out);
  // Stops the reader and returns the socket to the pool (clean) or closes it.
  // Pool threads only: it waits for the reader to stop.
  void Finish(bool clean);
  // Any thread, never blocks: the reader and any waiting Step() see it at once.
  void Cancel();

 private:
  static constexpr size_t kReadAhead = 16;
  void ReaderLoop();
  void StopReader();
  void WakeLocked();  // with mu_ held
  int wake_ = -1;     // eventfd, readable once the reader must stop; guarded by mu_, open only while a reader may run
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<char>> received_;
  bool readerRunning_ = false;
  bool stopping_ = false;
  bool readerDone_ = false;
  int readerError_ = 0;
  std::string tail_;  // Step's decoding space for a record's strings
};

class DumpCursor : public JsObjectWrap<DumpCursor> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  static Napi::Value New(Napi::Env env, std::shared_ptr<HandleState> handle, Napi::Value kernel, Napi::Value match);
  explicit DumpCursor(const Napi::CallbackInfo& info);
  ~DumpCursor() override;

 private:
  Napi::Value Next(const Napi::CallbackInfo& info);
  Napi::Value Count(const Napi::CallbackInfo& info);
  Napi::Value Collect(const Napi::CallbackInfo& info);
  Napi::Value DeleteCollected(const Napi::CallbackInfo& info);
  Napi::Value DeleteStreaming(const Napi::CallbackInfo& info);
  Napi::Value UpdateStreaming(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value RunClaimed(Napi::Env env, const char* op, std::function<int(DumpState&)> exec,
                         std::function<Napi::Value(Napi::Env)> done);
  // Environment teardown (a worker terminated mid-dump): cancel, so the reader exits.
  static void CleanupHook(void* state);

  std::shared_ptr<DumpState> state_;
  bool hookAdded_ = false;
};

}  // namespace ct
