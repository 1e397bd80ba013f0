#include "cursor.h"

#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "convert.h"
#include "decode.h"

namespace ct {

DumpState::~DumpState() {
  if (wake_ >= 0) ::close(wake_);
}

void DumpState::WakeLocked() {
  uint64_t one = 1;
  if (wake_ >= 0) (void)!::write(wake_, &one, sizeof(one));
}

void DumpState::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled = true;
  WakeLocked();
  cv_.notify_all();
}

int DumpState::Start() {
  int rc = handle->Acquire(&sock);
  if (rc < 0) return rc;
  MessageBuffer msg(1024);
  seq = sock->NextSeq();
  struct nlmsghdr* nlh = msg.Begin(kernel.zeroCounters ? IPCTNL_MSG_CT_GET_CTRZERO : IPCTNL_MSG_CT_GET, NLM_F_DUMP, kernel.family, seq);
  PutDumpFilter(nlh, kernel);
  msg.End(nlh);
  rc = sock->Send(msg.data(), msg.size());
  if (rc < 0) return rc;
  started = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (wake_ < 0) wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_ < 0) return -errno;
    if (cancelled) return -ECANCELED;
    readerDone_ = false;
    readerError_ = 0;
    received_.clear();
    readerRunning_ = true;
  }
  // Detached, and owning this state while it runs: see the comment on DumpState.
  std::thread([self = shared_from_this()] { self->ReaderLoop(); }).detach();
  return 0;
}

void DumpState::ReaderLoop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return cancelled || stopping_ || received_.size() < kReadAhead; });
      if (cancelled || stopping_) break;
    }
    // Wait for data or for the wake-up, never in recv() alone: Cancel() must reach us.
    // wake_ stays open while this reader runs (it is closed only once readerRunning_ is false).
    int wakeFd;
    {
      std::lock_guard<std::mutex> lock(mu_);
      wakeFd = wake_;
    }
    struct pollfd fds[2] = {{sock->fd(), POLLIN, 0}, {wakeFd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      std::lock_guard<std::mutex> lock(mu_);
      readerError_ = -errno;
      break;
    }
    if (fds[1].revents) break;
    std::vector<char> buf(kRecvBufferSize);
    ssize_t n = sock->Recv(buf.data(), buf.size());
    bool last = n <= 0;
    if (n > 0) {
      buf.resize(static_cast<size_t>(n));
      ForEachMessage(buf.data(), buf.size(), [&](const struct nlmsghdr* nlh) {
        if (nlh->nlmsg_seq == seq && (nlh->nlmsg_type == NLMSG_DONE || nlh->nlmsg_type == NLMSG_ERROR)) last = true;
        return !last;
      });
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (n < 0) readerError_ = static_cast<int>(n);
    if (n > 0) received_.push_back(std::move(buf));
    cv_.notify_all();
    if (last) break;
  }
  // The last touch of this state's members; `self` may destroy it right after.
  std::lock_guard<std::mutex> lock(mu_);
  readerDone_ = true;
  readerRunning_ = false;
  cv_.notify_all();
}

void DumpState::StopReader() {
  std::unique_lock<std::mutex> lock(mu_);
  if (readerRunning_) {
    stopping_ = true;
    WakeLocked();
    cv_.notify_all();
    cv_.wait(lock, [&] { return !readerRunning_; });
    stopping_ = false;
  }
  // No reader: the eventfd goes (a restarted reader gets a fresh one), so a
  // finished cursor holds no descriptor until it is garbage-collected.
  if (wake_ >= 0) {
    ::close(wake_);
    wake_ = -1;
  }
}

int DumpState::Step(RecordBatch* out) {
  if (cancelled) return -ECANCELED;
  if (handle->closed) return -EBADF;
  if (!started) {
    int rc = Start();
    if (rc < 0) return rc;
  }
  std::vector<char> buf;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !received_.empty() || readerDone_ || cancelled; });
    if (received_.empty()) {
      if (readerError_) return readerError_;
      return cancelled ? -ECANCELED : -EBADMSG;  // the reader stopped without DONE
    }
    buf = std::move(received_.front());
    received_.pop_front();
    cv_.notify_all();
  }
  int result = 1;
  bool ok = ForEachMessage(buf.data(), buf.size(), [&](const struct nlmsghdr* nlh) {
    if (nlh->nlmsg_seq != seq) return true;  // stale reply from an earlier request
    if (nlh->nlmsg_type == NLMSG_DONE) {
      result = 0;
      return false;
    }
    if (nlh->nlmsg_type == NLMSG_ERROR) {
      const struct nlmsgerr* err = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
      result = nlh->nlmsg_len >= mnl_nlmsg_size(sizeof(*err)) && err->error < 0 ? err->error : 0;
      return false;
    }
    if (nlh->nlmsg_type < NLMSG_MIN_TYPE) return true;
    Record r;
    if (DecodeRecord(nlh, false, &r, &tail_) < 0) {
      result = -EBADMSG;
      return false;
    }
    emitted = true;
    if (match.Matches(r)) out->Add(r, tail_);
    return true;
  });
  if (!ok) return -EBADMSG;
  // Kernels without CTA_FILTER support (or without a flag we asked for)
  // refuse the dump up front: retry unfiltered, the native matcher still
  // applies every condition.
  if ((result == -EOPNOTSUPP || result == -EINVAL) && kernel.origFlags && !emitted) {
    kernel.origFlags = 0;
    StopReader();
    sock.reset();
    started = false;
    return 1;
  }
  if (result <= 0) {
    done = true;
    StopReader();
  }
  return result;
}

void DumpState::Finish(bool clean) {
  Cancel();
  StopReader();
  if (clean && done && sock) handle->Release(std::move(sock));
  sock.reset();
}

void DumpCursor::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function fn = DefineClass(env, "DumpCursor",
                                  {InstanceMethod("next", &DumpCursor::Entry<&DumpCursor::Next>), InstanceMethod("count", &DumpCursor::Entry<&DumpCursor::Count>),
                                   InstanceMethod("collect", &DumpCursor::Entry<&DumpCursor::Collect>),
                                   InstanceMethod("deleteCollected", &DumpCursor::Entry<&DumpCursor::DeleteCollected>),
                                   InstanceMethod("deleteStreaming", &DumpCursor::Entry<&DumpCursor::DeleteStreaming>),
                                   InstanceMethod("updateStreaming", &DumpCursor::Entry<&DumpCursor::UpdateStreaming>),
                                   InstanceMethod("cancel", &DumpCursor::Entry<&DumpCursor::Cancel>), InstanceMethod("close", &DumpCursor::Entry<&DumpCursor::Close>)});
  env.GetInstanceData<AddonData>()->cursorCtor = Napi::Persistent(fn);
  exports.Set("DumpCursor", fn);
}

Napi::Value DumpCursor::New(Napi::Env env, std::shared_ptr<HandleState> handle, Napi::Value kernel, Napi::Value match) {
  // The filters first: a cursor exists only with the whole of them (reading
  // them can fail half-way once JS cannot run, and then nothing is made).
  KernelFilter kernelFilter = ToKernelFilter(kernel);
  MatchFilter matchFilter;
  ToMatchFilter(match, &matchFilter);
  if (!JsCanRun(env)) return Napi::Value();
  Napi::Object obj = env.GetInstanceData<AddonData>()->cursorCtor.New({});
  DumpCursor* c = obj.IsEmpty() ? nullptr : Napi::ObjectWrap<DumpCursor>::Unwrap(obj);
  if (c == nullptr) return Napi::Value();
  c->state_->handle = std::move(handle);
  c->state_->kernel = std::move(kernelFilter);
  c->state_->match = std::move(matchFilter);
  return obj;
}

DumpCursor::DumpCursor(const Napi::CallbackInfo& info) : JsObjectWrap<DumpCursor>(info) {
  state_ = std::make_shared<DumpState>();
  // Raw N-API, as EventReader does, so the destructor can remove the very hook it added.
  hookAdded_ = napi_add_env_cleanup_hook(info.Env(), CleanupHook, state_.get()) == napi_ok;
}

// Never blocks: the reader wakes and exits on its own, and frees the state when it is the last owner.
DumpCursor::~DumpCursor() {
  state_->Cancel();
  if (hookAdded_) napi_remove_env_cleanup_hook(Env(), CleanupHook, state_.get());
}

void DumpCursor::CleanupHook(void* state) { static_cast<DumpState*>(state)->Cancel(); }

// One operation at a time per cursor: the claim ends when `exec` returns.
Napi::Value DumpCursor::RunClaimed(Napi::Env env, const char* op, std::function<int(DumpState&)> exec,
                                   std::function<Napi::Value(Napi::Env)> done) {
  bool expected = false;
  if (!state_->handle || !state_->busy.compare_exchange_strong(expected, true)) {
    ErrnoError(env, EBUSY, op).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto st = state_;
  Napi::Value promise = RunOnPool(
      env, op,
      [st, exec = std::move(exec)]() {
        int rc = exec(*st);
        st->busy = false;
        return rc;
      },
      std::move(done));
  if (promise.IsEmpty()) st->busy = false;  // never queued: nothing runs to release the claim
  return promise;
}

Napi::Value DumpCursor::Next(const Napi::CallbackInfo& info) {
  size_t max = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Uint32Value() : 1024;
  if (max == 0) max = 1;
  auto out = std::make_shared<RecordBatch>();
  out->Reserve(max + 256);
  auto st = state_;
  return RunClaimed(
      info.Env(), "dump",
      [out, max](DumpState& d) {
        int rc = 1;
        while (!d.done && out->size() < max) {
          rc = d.Step(out.get());
          if (rc <= 0) break;
        }
        if (rc < 0 || d.done || d.cancelled) d.Finish(rc == 0 && d.done);
        return rc < 0 ? rc : 0;
      },
      [st, out](Napi::Env e) -> Napi::Value {
        if (out->empty() && st->done) return e.Null();
        return RecordsToBuffer(e, out->data(), out->bytes());
      });
}

Napi::Value DumpCursor::Count(const Napi::CallbackInfo& info) {
  auto total = std::make_shared<uint64_t>(0);
  return RunClaimed(
      info.Env(), "count",
      [total](DumpState& d) {
        RecordBatch batch;
        int rc = 1;
        while (rc > 0) {
          batch.Clear();
          rc = d.Step(&batch);
          *total += batch.size();
        }
        d.Finish(rc == 0);
        return rc;
      },
      [total](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, static_cast<double>(*total)); });
}

Napi::Value DumpCursor::Cancel(const Napi::CallbackInfo& info) {
  state_->Cancel();
  return info.Env().Undefined();
}

Napi::Value DumpCursor::Close(const Napi::CallbackInfo& info) {
  // Never waits on the JS thread: cancel at once; the socket is closed on the
  // pool, after the reader has stopped (a worker still running closes it as it returns).
  state_->Cancel();
  bool expected = false;
  if (state_->handle && state_->busy.compare_exchange_strong(expected, true)) {
    auto st = state_;
    Napi::Value queued = RunOnPool(
        info.Env(), "close",
        [st]() {
          st->Finish(false);
          st->busy = false;
          return 0;
        },
        nullptr);
    if (queued.IsEmpty()) st->busy = false;  // the state's destructor closes the socket
  }
  return info.Env().Undefined();
}

}  // namespace ct
