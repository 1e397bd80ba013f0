#include "events.h"

#include <errno.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "convert.h"
#include "decode.h"

namespace ct {

namespace {

// Attaches libnetfilter_conntrack's BPF program for what the kernel can drop
// before the event is ever queued on our socket: layer-4 protocols and
// original-direction address prefixes (`spec`: SocketFilterRow rows, convert.h).
int AttachKernelFilter(int fd, const std::vector<uint8_t>& spec) {
  if (spec.empty()) return 0;
  struct nfct_filter* f = nfct_filter_create();
  if (!f) return -ENOMEM;
  std::unique_ptr<struct nfct_filter, void (*)(struct nfct_filter*)> owned(f, nfct_filter_destroy);
  for (size_t off = 0; off + sizeof(SocketFilterRow) <= spec.size(); off += sizeof(SocketFilterRow)) {
    SocketFilterRow row;
    std::memcpy(&row, &spec[off], sizeof(row));
    const uint8_t kind = row.kind, family = row.family, prefix = row.length;
    const uint8_t* addr = row.addr;
    if (kind == kRowProtocol) {
      nfct_filter_add_attr_u32(f, NFCT_FILTER_L4PROTO, addr[0]);
    } else if (family == AF_INET) {
      struct nfct_filter_ipv4 v4;
      uint32_t be;
      std::memcpy(&be, addr, 4);
      v4.addr = ntohl(be);
      v4.mask = prefix == 0 ? 0 : (0xffffffffu << (32 - prefix));
      nfct_filter_add_attr(f, kind == kRowSrc ? NFCT_FILTER_SRC_IPV4 : NFCT_FILTER_DST_IPV4, &v4);
    } else {
      struct nfct_filter_ipv6 v6;
      for (int w = 0; w < 4; ++w) {
        uint32_t be;
        std::memcpy(&be, addr + 4 * w, 4);
        v6.addr[w] = ntohl(be);
        int bits = static_cast<int>(prefix) - 32 * w;
        v6.mask[w] = bits >= 32 ? 0xffffffffu : bits <= 0 ? 0 : (0xffffffffu << (32 - bits));
      }
      nfct_filter_add_attr(f, kind == kRowSrc ? NFCT_FILTER_SRC_IPV6 : NFCT_FILTER_DST_IPV6, &v6);
    }
  }
  if (nfct_filter_attach(fd, f) < 0) return -errno;
  return 0;
}

}  // namespace

void EventReader::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function fn = DefineClass(env, "EventReader",
                                  {InstanceMethod("open", &EventReader::Entry<&EventReader::Open>), InstanceMethod("take", &EventReader::Entry<&EventReader::Take>),
                                   InstanceMethod("setWaiting", &EventReader::Entry<&EventReader::SetWaiting>),
                                   InstanceMethod("setGatherMs", &EventReader::Entry<&EventReader::SetGatherMs>),
                                   InstanceMethod("stats", &EventReader::Entry<&EventReader::Stats>),
                                   InstanceMethod("processName", &EventReader::Entry<&EventReader::ProcessName>),
                                   InstanceMethod("close", &EventReader::Entry<&EventReader::Close>)});
  exports.Set("EventReader", fn);
}

// new EventReader(handle, { groups, bufferBytes, queueLimit, match, kernelFilter, resolveProcesses }, onReadable)
EventReader::EventReader(const Napi::CallbackInfo& info) : JsObjectWrap<EventReader>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsObject() || !info[2].IsFunction()) {
    Napi::TypeError::New(env, "EventReader(handle, options, onReadable)").ThrowAsJavaScriptException();
    return;
  }
  if (!JsCanRun(env)) return;  // its methods do nothing either (JsObjectWrap)
  Handle* handle = Napi::ObjectWrap<Handle>::Unwrap(info[0].As<Napi::Object>());
  if (handle == nullptr) return;  // not a Handle: Unwrap has thrown
  handle_ = handle->state();
  Napi::Object o = info[1].As<Napi::Object>();
  groups_ = Prop(o, "groups").As<Napi::Number>().Uint32Value();
  bufferBytes_ = Prop(o, "bufferBytes").As<Napi::Number>().Int32Value();
  queueLimit_ = Prop(o, "queueLimit").As<Napi::Number>().Uint32Value();
  ToMatchFilter(Prop(o, "match"), &match_);
  resolveProcesses_ = Truthy(Prop(o, "resolveProcesses"));
  Napi::Value kf = Prop(o, "kernelFilter");
  if (kf.IsBuffer()) {
    auto b = kf.As<Napi::Buffer<uint8_t>>();
    bpfSpec_.assign(b.Data(), b.Data() + b.Length());
  }
  tsfn_ = Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "conntrack-events", 0, 1);
  tsfnActive_ = true;
  tsfn_.Unref(env);
  // Raw N-API on both sides: node-addon-api's AddCleanupHook wraps the
  // callback, and the wrapped hook could not be removed in the destructor.
  hookAdded_ = napi_add_env_cleanup_hook(env, CleanupHook, this) == napi_ok;
}

EventReader::~EventReader() {
  Stop();
  if (hookAdded_) {
    // The environment may already be tearing down; the hook is ours to drop.
    napi_remove_env_cleanup_hook(Env(), CleanupHook, this);
  }
}

void EventReader::CleanupHook(void* self) {
  auto* r = static_cast<EventReader*>(self);
  r->hookAdded_ = false;
  r->Stop();
}

Napi::Value EventReader::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto sockHolder = std::make_shared<std::unique_ptr<NlSocket>>();
  auto wakeHolder = std::make_shared<UniqueFd>();
  auto effective = std::make_shared<int>(0);
  auto resolver = resolveProcesses_ ? std::make_shared<ProcessResolver>() : nullptr;
  auto st = handle_;
  unsigned groups = groups_;
  int bytes = bufferBytes_;
  std::vector<uint8_t> spec = bpfSpec_;
  // Keep this object alive until the promise settles.
  Ref();
  Napi::Value promise = RunOnPool(
      env, "events",
      [st, sockHolder, wakeHolder, groups, bytes, spec, effective, resolver]() -> int {
        if (st->closed) return -EBADF;
        if (resolver) {
          int rrc = st->WithNetns([&](int nsFd) { return resolver->Open(nsFd); });
          if (rrc < 0) return rrc;
        }
        int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (efd < 0) return -errno;
        *wakeHolder = UniqueFd(efd);
        int rc = st->WithNetns([&](int nsFd) { return NlSocket::Open(nsFd, groups, sockHolder.get()); });
        if (rc < 0) return rc;
        *effective = (*sockHolder)->SetReceiveBuffer(bytes);
        return AttachKernelFilter((*sockHolder)->fd(), spec);
      },
      [this, sockHolder, wakeHolder, effective, resolver](Napi::Env e) -> Napi::Value {
        if (closed_) return e.Undefined();
        resolver_ = resolver;
        sock_ = std::move(*sockHolder);
        wake_ = std::move(*wakeHolder);
        effectiveBuffer_ = *effective;
        thread_ = std::thread(&EventReader::Run, this);
        return e.Undefined();
      });
  if (promise.IsEmpty()) {  // never queued (JS cannot run any more)
    Unref();
    return promise;
  }
  Napi::Object p = promise.As<Napi::Object>();
  Napi::Value finally = Prop(p, "finally");
  if (!finally.IsFunction()) {  // JS stopped in between: the promise never settles
    Unref();
    return promise;
  }
  Napi::Function unref = Napi::Function::New(env, [this](const Napi::CallbackInfo& i) {
    Unref();
    return i.Env().Undefined();
  });
  return finally.As<Napi::Function>().Call(p, {unref});
}

Record EventReader::TakeLossMarker(uint64_t kernelLost) {
  Record marker{};
  marker.kind = kKindOverrun;
  uint64_t lost = kernelLost + pendingQueueLoss_;
  marker.lost = lost > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(lost);
  counters_.kernelDropped += kernelLost;
  counters_.queueDropped += pendingQueueLoss_;
  counters_.overruns++;
  pendingQueueLoss_ = 0;
  return marker;
}

void EventReader::Push(const Record* recs, size_t n, const std::string& tails, uint64_t kernelLost) {
  bool wasEmpty;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wasEmpty = queue_.empty();
    // A kernel loss coalesces with a pending queue-overflow count: one loss point.
    if (kernelLost) queue_.Push(TakeLossMarker(kernelLost), nullptr);
    const char* tail = tails.data();
    for (size_t i = 0; i < n; ++i) {
      const char* own = tail;
      tail += recs[i].tailBytes;
      counters_.received++;
      if (queue_.size() >= queueLimit_) {
        pendingQueueLoss_++;
        continue;
      }
      if (pendingQueueLoss_) queue_.Push(TakeLossMarker(0), nullptr);
      queue_.Push(recs[i], own);
    }
  }
  if ((wasEmpty || kernelLost) && !notifyPending_.exchange(true)) {
    tsfn_.NonBlockingCall();
  }
}

void EventReader::ReportDrops(bool enobufs) {
  int64_t drops = sock_->Drops();
  if (drops < 0) {
    if (enobufs) Push(nullptr, 0, {}, 1);  // no counter: at least one event was lost
    return;
  }
  if (drops > dropsSeen_) Push(nullptr, 0, {}, static_cast<uint64_t>(drops - dropsSeen_));
  dropsSeen_ = drops;
}

EventReader::RecvSlots::RecvSlots() : buf(kCount * kRecvBufferSize) {
  std::memset(msgs, 0, sizeof(msgs));
  for (unsigned i = 0; i < kCount; ++i) {
    iov[i] = {buf.data() + i * kRecvBufferSize, kRecvBufferSize};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
}

void EventReader::Decode(const RecvSlots& slots, int n) {
  std::vector<Record>& batch = batch_;
  std::string& tails = batchTails_;
  batch.clear();
  tails.clear();
  for (int i = 0; i < n; ++i) {
    ForEachMessage(slots.iov[i].iov_base, slots.msgs[i].msg_len, [&](const struct nlmsghdr* nlh) {
      Record r;
      if (EventKindOf(nlh) == kKindEntry || DecodeRecord(nlh, true, &r, &tail_) < 0) return true;
      // Expectations pass: the entry matcher does not apply to them.
      if (r.kind != kKindExpNew && r.kind != kKindExpDestroy && !match_.Matches(r)) return true;
      batch.push_back(r);
      tails += tail_;
      return true;
    });
  }
  if (batch.empty()) return;
  if (resolver_) resolver_->Resolve(batch.data(), batch.size(), true);
  Push(batch.data(), batch.size(), tails, 0);
}

// Each event is its own multicast message, so recvmmsg() takes up to
// kCount of them per system call where recv() took one: under a burst that
// is most of a reader's cost. The kernel raises ENOBUFS once per congestion
// episode and counts every drop until the socket is drained, so the drop
// counter is read on ENOBUFS and once more when the episode's queue is empty.
bool EventReader::Drain(RecvSlots* slots) {
  for (;;) {
    int n = ::recvmmsg(sock_->fd(), slots->msgs, RecvSlots::kCount, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        congested_ = true;
        ReportDrops(true);
        continue;
      }
      if (errno != EAGAIN) {
        std::lock_guard<std::mutex> lock(mu_);
        fatal_ = errno;
        return false;
      }
      n = 0;
    }
    Decode(*slots, n);
    // Fewer than asked: the queue is empty (poll() says so if not).
    if (n < static_cast<int>(RecvSlots::kCount)) {
      if (congested_) ReportDrops(false);
      congested_ = false;
      return true;
    }
  }
}

void EventReader::Run() {
  RecvSlots slots;
  batch_.reserve(RecvSlots::kCount * 4);
  dropsSeen_ = sock_->Drops();
  struct pollfd fds[2] = {{sock_->fd(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
  for (;;) {
    // A consumer that takes whole batches may let events gather first: one
    // wake-up of this thread (and of JS) per gatherMs under a trickle,
    // rather than one per event. The socket buffer holds them meanwhile.
    if (int gather = gatherMs_.load(std::memory_order_relaxed); gather > 0) {
      if (poll(&fds[1], 1, gather) > 0) break;  // stopped
    }
    int pr = poll(fds, 2, -1);
    if (pr < 0) {
      if (errno == EINTR) continue;
      std::lock_guard<std::mutex> lock(mu_);
      fatal_ = errno;
      break;
    }
    // Stopped, or failed; otherwise everything queued is drained before going back to poll().
    if (fds[1].revents || !Drain(&slots)) break;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
  }
  if (!notifyPending_.exchange(true)) tsfn_.NonBlockingCall();
}

Napi::Value EventReader::Take(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t max = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Uint32Value() : 4096;
  notifyPending_ = false;
  std::lock_guard<std::mutex> lock(mu_);
  // Everything will be consumed and the reader has queued a loss it could
  // not place: place it now rather than wait for the next event.
  if (pendingQueueLoss_ && queue_.size() < max) queue_.Push(TakeLossMarker(0), nullptr);
  if (queue_.empty() && (finished_ || fatal_)) {
    if (fatal_) {
      ErrnoError(env, fatal_, "events").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return env.Null();
  }
  size_t records, bytes;
  const uint8_t* front = queue_.Front(max, &records, &bytes);
  Napi::Value out = RecordsToBuffer(env, front, bytes);
  queue_.Pop(records, bytes);
  counters_.taken += records;
  return out;
}

Napi::Value EventReader::SetWaiting(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!tsfnActive_) return env.Undefined();
  if (Truthy(info[0]))
    tsfn_.Ref(env);
  else
    tsfn_.Unref(env);
  return env.Undefined();
}

Napi::Value EventReader::SetGatherMs(const Napi::CallbackInfo& info) {
  gatherMs_ = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  return info.Env().Undefined();
}

Napi::Value EventReader::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  std::lock_guard<std::mutex> lock(mu_);
  o.Set("received", static_cast<double>(counters_.received));
  o.Set("kernelDropped", static_cast<double>(counters_.kernelDropped));
  o.Set("queueDropped", static_cast<double>(counters_.queueDropped + pendingQueueLoss_));
  o.Set("overruns", static_cast<double>(counters_.overruns));
  o.Set("queued", static_cast<double>(queue_.size()));
  o.Set("taken", static_cast<double>(counters_.taken));
  o.Set("bufferBytes", effectiveBuffer_);
  return o;
}

Napi::Value EventReader::ProcessName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!resolver_ || info.Length() < 1 || !info[0].IsNumber()) return env.Undefined();
  std::string name = resolver_->NameOf(info[0].As<Napi::Number>().Uint32Value());
  return name.empty() ? env.Undefined() : Napi::String::New(env, name);
}

void EventReader::Stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    if (::write(wake_.get(), &one, sizeof(one)) < 0) {
      // eventfd writes only fail on counter overflow; the thread still wakes.
    }
    thread_.join();
  }
  sock_.reset();
  wake_ = UniqueFd();
  if (tsfnActive_) {
    tsfnActive_ = false;
    tsfn_.Abort();
  }
}

Napi::Value EventReader::Close(const Napi::CallbackInfo& info) {
  closed_ = true;
  Stop();
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.Clear();
    finished_ = true;
  }
  return info.Env().Undefined();
}

}  // namespace ct
