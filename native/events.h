// Conntrack event subscription. A dedicated reader thread drains the
// multicast socket as fast as the kernel fills it, decodes and filters each
// event, and appends records to a bounded queue that JS empties in batches
// (take()). Losses are never silent: a kernel overrun (ENOBUFS, counted by
// the socket's SO_MEMINFO drop counter) or a full queue becomes an overrun
// record at the point of loss carrying the exact number of events lost.
#pragma once

#include <napi.h>

#include <sys/socket.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "batch.h"
#include "handle.h"
#include "js_entry.h"
#include "match.h"
#include "netns.h"
#include "process.h"
#include "record.h"

namespace ct {

struct EventCounters {
  uint64_t received = 0;       // events read from the socket that passed the filter
  uint64_t kernelDropped = 0;  // events the kernel could not queue (ENOBUFS)
  uint64_t queueDropped = 0;   // events discarded because the queue was full
  uint64_t overruns = 0;       // loss incidents (one overrun record each)
  uint64_t taken = 0;          // records handed to JS
};

class EventReader : public JsObjectWrap<EventReader> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit EventReader(const Napi::CallbackInfo& info);
  ~EventReader() override;

 private:
  Napi::Value Open(const Napi::CallbackInfo& info);
  Napi::Value Take(const Napi::CallbackInfo& info);
  Napi::Value SetWaiting(const Napi::CallbackInfo& info);
  Napi::Value SetGatherMs(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value ProcessName(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  // recvmmsg()'s buffers: one multicast message (one event) per slot.
  struct RecvSlots {
    static constexpr unsigned kCount = 16;
    RecvSlots();
    std::vector<char> buf;
    struct iovec iov[kCount];
    struct mmsghdr msgs[kCount];
  };
  void Run();
  // Receives until the socket is empty; false once it failed (fatal_ set).
  bool Drain(RecvSlots* slots);
  // Decodes, filters and queues the `n` messages recvmmsg() filled.
  void Decode(const RecvSlots& slots, int n);
  // Queues what the kernel dropped since dropsSeen_ (at least one event on ENOBUFS without a counter).
  void ReportDrops(bool enobufs);
  // `n` records and their tails (`tails`: each record's tailBytes, in order).
  void Push(const Record* recs, size_t n, const std::string& tails, uint64_t kernelLost);
  // An overrun record for `kernelLost` plus the queue overflow not yet
  // placed; counts both. Call with mu_ held.
  Record TakeLossMarker(uint64_t kernelLost);
  void Stop();
  static void CleanupHook(void* self);

  std::shared_ptr<HandleState> handle_;
  unsigned groups_ = 0;
  int bufferBytes_ = 0;
  size_t queueLimit_ = 0;
  MatchFilter match_;
  std::vector<uint8_t> bpfSpec_;  // packed prefix rows + protocols, see AttachKernelFilter
  bool resolveProcesses_ = false;
  std::shared_ptr<ProcessResolver> resolver_;  // set when resolveProcesses_

  // The reader thread's own: what one recv() decoded, kept across drains so the hot path allocates nothing.
  std::vector<Record> batch_;
  std::string batchTails_, tail_;
  int64_t dropsSeen_ = 0;   // the socket's drop counter, as last read
  bool congested_ = false;  // ENOBUFS seen: the counter may move until the socket is drained

  std::unique_ptr<NlSocket> sock_;
  UniqueFd wake_;  // eventfd: tells the reader thread to stop
  std::thread thread_;
  std::mutex mu_;
  RecordQueue queue_;
  uint64_t pendingQueueLoss_ = 0;
  EventCounters counters_;
  int fatal_ = 0;  // errno that stopped the reader
  bool finished_ = false;
  int effectiveBuffer_ = 0;

  Napi::ThreadSafeFunction tsfn_;
  bool tsfnActive_ = false;
  std::atomic<bool> notifyPending_{false};
  std::atomic<int> gatherMs_{0};  // setGatherMs(): how long the thread lets events gather before each drain
  bool closed_ = false;
  bool hookAdded_ = false;
};

}  // namespace ct
