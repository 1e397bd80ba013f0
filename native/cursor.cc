#include "cursor.h"

#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <unordered_set>

#include "change.h"
#include "convert.h"
#include "decode.h"

namespace ct {

namespace {

// Deletes and updates go out this many per sendmsg: ~120-200 bytes each stays
// well under the default 208 KiB socket send buffer.
constexpr size_t kBatch = 512;
}  // namespace

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

int DumpState::Step(std::vector<Record>* out) {
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
    if (DecodeConntrack(nlh, &r) < 0) {
      result = -EBADMSG;
      return false;
    }
    ++scanned;
    emitted = true;
    if (match.Matches(r)) out->push_back(r);
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

int SendBatched(NlSocket* sock, const std::vector<EntrySpec>& requests, uint8_t msgType,
                const std::atomic<bool>& cancelled, const std::function<void(size_t, int)>& onFailure,
                uint16_t flags) {
  // Room for the error replies of a whole batch, should all of them fail.
  sock->SetReceiveBuffer(4 << 20);
  std::vector<char> rbuf(kRecvBufferSize);
  MessageBuffer msg(kBatch * 200 + 1024);
  for (size_t start = 0; start < requests.size(); start += kBatch) {
    if (cancelled) return -ECANCELED;
    size_t n = std::min(kBatch, requests.size() - start);
    msg.Reset();
    uint32_t base = sock->NextSeq();
    for (size_t i = 0; i < n; ++i) {
      const EntrySpec& spec = requests[start + i];
      // No NLM_F_ACK: the kernel answers only failures.
      struct nlmsghdr* nlh = msg.Begin(msgType, flags, spec.family, base + static_cast<uint32_t>(i));
      PutEntry(nlh, spec);
      msg.End(nlh);
      if (i + 1 < n) sock->NextSeq();
    }
    // The sentinel: its reply arrives after every error of the batch.
    uint32_t sentinel = sock->NextSeq();
    struct nlmsghdr* nlh = msg.Begin(IPCTNL_MSG_CT_GET_STATS, NLM_F_ACK, AF_UNSPEC, sentinel);
    msg.End(nlh);
    int rc = sock->Send(msg.data(), msg.size());
    if (rc < 0) return rc;

    bool sentinelSeen = false;
    while (!sentinelSeen) {
      ssize_t got = sock->Recv(rbuf.data(), rbuf.size());
      if (got < 0) return static_cast<int>(got);
      bool ok = ForEachMessage(rbuf.data(), static_cast<size_t>(got), [&](const struct nlmsghdr* m) {
        if (m->nlmsg_seq == sentinel) {
          if (m->nlmsg_type == NLMSG_ERROR) sentinelSeen = true;
          return true;
        }
        if (m->nlmsg_type != NLMSG_ERROR || m->nlmsg_seq < base || m->nlmsg_seq >= base + n) return true;
        if (m->nlmsg_len < mnl_nlmsg_size(sizeof(struct nlmsgerr))) return true;
        const struct nlmsgerr* err = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(m));
        if (err->error < 0) onFailure(start + (m->nlmsg_seq - base), -err->error);
        return true;
      });
      if (!ok) return -EBADMSG;
    }
  }
  return 0;
}

int DeleteRecords(NlSocket* sock, const std::vector<Record>& records, const std::atomic<bool>& cancelled,
                  BulkOutcome* outcome) {
  std::vector<EntrySpec> requests;
  requests.reserve(records.size());
  for (const Record& r : records) {
    EntrySpec spec = KeyOf(r);
    // The id makes the kernel refuse a newer flow that reuses the tuple.
    spec.hasId = (r.present & kHasId) != 0;
    spec.id = r.id;
    requests.push_back(spec);
  }
  size_t errors = 0;
  int rc = SendBatched(sock, requests, IPCTNL_MSG_CT_DELETE, cancelled, [&](size_t i, int err) {
    ++errors;
    if (err == ENOENT) ++outcome->alreadyGone;
    else outcome->failed.emplace_back(records[i], err);
  });
  if (rc == 0) outcome->applied += records.size() - errors;
  return rc;
}

int UpdateRecords(NlSocket* sock, const std::vector<Record>& records, const ChangeSpec& change,
                  const std::atomic<bool>& cancelled, BulkOutcome* outcome) {
  std::vector<EntrySpec> requests;
  std::vector<const Record*> before;
  std::vector<Record> after;
  requests.reserve(records.size());
  before.reserve(records.size());
  after.reserve(records.size());
  for (const Record& r : records) {
    EntrySpec request;
    Record changed;
    switch (ApplyChange(r, change, &request, &changed)) {
      case ChangeResult::kUnchanged:
        break;  // conntrack -U skips it too
      case ChangeResult::kFixedTimeout:
        outcome->failed.emplace_back(r, EPERM);
        break;
      case ChangeResult::kChanged:
        requests.push_back(request);
        before.push_back(&r);
        after.push_back(changed);
        break;
    }
  }
  std::vector<bool> ok(requests.size(), true);
  int rc = SendBatched(sock, requests, IPCTNL_MSG_CT_NEW, cancelled, [&](size_t i, int err) {
    ok[i] = false;
    // A vanished entry answers ENOENT: the update never creates (no NLM_F_CREATE).
    if (err == ENOENT) ++outcome->alreadyGone;
    else outcome->failed.emplace_back(*before[i], err);
  });
  if (rc < 0) return rc;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!ok[i]) continue;
    ++outcome->applied;
    if (outcome->keepApplied) outcome->appliedRecords.push_back(after[i]);
  }
  return 0;
}

void DumpCursor::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function fn = DefineClass(env, "DumpCursor",
                                  {InstanceMethod("next", &DumpCursor::Next), InstanceMethod("count", &DumpCursor::Count),
                                   InstanceMethod("collect", &DumpCursor::Collect),
                                   InstanceMethod("deleteCollected", &DumpCursor::DeleteCollected),
                                   InstanceMethod("deleteStreaming", &DumpCursor::DeleteStreaming),
                                   InstanceMethod("updateStreaming", &DumpCursor::UpdateStreaming),
                                   InstanceMethod("cancel", &DumpCursor::Cancel), InstanceMethod("close", &DumpCursor::Close)});
  env.GetInstanceData<AddonData>()->cursorCtor = Napi::Persistent(fn);
  exports.Set("DumpCursor", fn);
}

Napi::Value DumpCursor::New(Napi::Env env, std::shared_ptr<HandleState> handle, Napi::Value kernel, Napi::Value match) {
  Napi::Object obj = env.GetInstanceData<AddonData>()->cursorCtor.New({});
  DumpCursor* c = Napi::ObjectWrap<DumpCursor>::Unwrap(obj);
  c->state_->handle = std::move(handle);
  c->state_->kernel = ToKernelFilter(kernel);
  ToMatchFilter(match, &c->state_->match);
  return obj;
}

DumpCursor::DumpCursor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DumpCursor>(info) {
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
  return RunOnPool(
      env, op,
      [st, exec = std::move(exec)]() {
        int rc = exec(*st);
        st->busy = false;
        return rc;
      },
      std::move(done));
}

Napi::Value DumpCursor::Next(const Napi::CallbackInfo& info) {
  size_t max = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Uint32Value() : 1024;
  if (max == 0) max = 1;
  auto out = std::make_shared<std::vector<Record>>();
  out->reserve(max + 256);
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
        return RecordsToBuffer(e, out->data(), out->size() * sizeof(Record));
      });
}

Napi::Value DumpCursor::Count(const Napi::CallbackInfo& info) {
  auto total = std::make_shared<uint64_t>(0);
  return RunClaimed(
      info.Env(), "count",
      [total](DumpState& d) {
        std::vector<Record> batch;
        int rc = 1;
        while (rc > 0) {
          batch.clear();
          rc = d.Step(&batch);
          *total += batch.size();
        }
        d.Finish(rc == 0);
        return rc;
      },
      [total](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, static_cast<double>(*total)); });
}

namespace {
Napi::Value OutcomeToJs(Napi::Env e, const BulkOutcome& outcome) {
  Napi::Object o = Napi::Object::New(e);
  o.Set("matched", static_cast<double>(outcome.matched));
  o.Set("applied", static_cast<double>(outcome.applied));
  o.Set("alreadyGone", static_cast<double>(outcome.alreadyGone));
  Napi::Array failed = Napi::Array::New(e, outcome.failed.size());
  for (size_t i = 0; i < outcome.failed.size(); ++i) {
    Napi::Object f = Napi::Object::New(e);
    f.Set("record", RecordsToBuffer(e, &outcome.failed[i].first, sizeof(Record)));
    f.Set("errno", outcome.failed[i].second);
    failed.Set(static_cast<uint32_t>(i), f);
  }
  o.Set("failed", failed);
  if (outcome.keepApplied) {
    o.Set("records", RecordsToBuffer(e, outcome.appliedRecords.data(), outcome.appliedRecords.size() * sizeof(Record)));
  }
  return o;
}

// Identity of an entry for de-duplication: id, zone and original tuple.
uint64_t EntryKey(const Record& r) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  auto mix = [&h](const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  mix(&r.id, sizeof(r.id));
  mix(&r.zone, sizeof(r.zone));
  mix(&r.origZone, sizeof(r.origZone));
  mix(&r.protocol, sizeof(r.protocol));
  mix(&r.orig, sizeof(r.orig));
  return h;
}

// The bulk path deletes and updates share: while the dump is still being
// received, a second socket sends each batch of matches as soon as it is
// full, so the kernel's dump work (in the reader thread's recv) and its
// delete or update work (in this thread's sendmsg) run side by side. Should
// the kernel emit an entry twice (it restarts a hash bucket when the entry it
// stopped at vanished), matches are de-duplicated so each is counted and
// changed once. A dry run goes the same way and only counts, so it cannot
// disagree with the run it previews.
int StreamMatches(DumpState& d, bool dryRun, BulkOutcome* outcome,
                  const std::function<int(NlSocket*, const std::vector<Record>&)>& apply) {
  std::unique_ptr<NlSocket> sock;
  int rc = dryRun ? 0 : d.handle->Acquire(&sock);
  std::unordered_set<uint64_t> seen;
  std::vector<Record> received, batch;
  while (rc >= 0) {
    received.clear();
    rc = d.Step(&received);
    if (rc < 0) break;
    for (const Record& r : received)
      if (seen.insert(EntryKey(r)).second) batch.push_back(r);
    if (batch.size() >= kBatch || (rc == 0 && !batch.empty())) {
      outcome->matched += batch.size();
      int arc = dryRun ? 0 : apply(sock.get(), batch);
      batch.clear();
      if (arc < 0) rc = arc;
    }
    if (rc == 0) break;
  }
  d.Finish(rc == 0);
  if (rc == 0 && sock) d.handle->Release(std::move(sock));
  return rc;
}
}  // namespace

Napi::Value DumpCursor::DeleteStreaming(const Napi::CallbackInfo& info) {
  const bool dryRun = info.Length() > 0 && info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value();
  auto outcome = std::make_shared<BulkOutcome>();
  return RunClaimed(
      info.Env(), "delete",
      [outcome, dryRun](DumpState& d) {
        return StreamMatches(d, dryRun, outcome.get(), [&](NlSocket* sock, const std::vector<Record>& batch) {
          return DeleteRecords(sock, batch, d.cancelled, outcome.get());
        });
      },
      [outcome](Napi::Env e) { return OutcomeToJs(e, *outcome); });
}

// updateStreaming(change, dryRun, keepUpdated): what conntrack -U does for each
// entry of its dump (the change computed on the entry as dumped, entries it
// would not change skipped), on the bulk path; with keepUpdated, the updated
// entries as the update left them.
Napi::Value DumpCursor::UpdateStreaming(const Napi::CallbackInfo& info) {
  ChangeSpec change = ToChangeSpec(info[0]);
  const bool dryRun = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  auto outcome = std::make_shared<BulkOutcome>();
  outcome->keepApplied = info.Length() > 2 && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
  return RunClaimed(
      info.Env(), "update",
      [outcome, dryRun, change](DumpState& d) {
        return StreamMatches(d, dryRun, outcome.get(), [&](NlSocket* sock, const std::vector<Record>& batch) {
          return UpdateRecords(sock, batch, change, d.cancelled, outcome.get());
        });
      },
      [outcome](Napi::Env e) { return OutcomeToJs(e, *outcome); });
}

// Reads the whole (filtered) table into `collected`. A netlink socket cannot
// take requests mid-dump, so deletion is a second step: DeleteCollected().
Napi::Value DumpCursor::Collect(const Napi::CallbackInfo& info) {
  auto st = state_;
  return RunClaimed(
      info.Env(), "delete",
      [](DumpState& d) {
        d.collected.clear();
        int rc = 1;
        while (rc > 0) rc = d.Step(&d.collected);
        if (rc < 0) d.Finish(false);
        return rc;
      },
      [st](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, static_cast<double>(st->collected.size())); });
}

Napi::Value DumpCursor::DeleteCollected(const Napi::CallbackInfo& info) {
  auto outcome = std::make_shared<BulkOutcome>();
  return RunClaimed(
      info.Env(), "delete",
      [outcome](DumpState& d) {
        outcome->matched = d.collected.size();
        int rc = 0;
        if (!d.collected.empty()) {
          if (!d.sock) rc = d.handle->Acquire(&d.sock);
          if (rc == 0) rc = DeleteRecords(d.sock.get(), d.collected, d.cancelled, outcome.get());
        }
        d.collected.clear();
        d.collected.shrink_to_fit();
        d.done = true;
        d.Finish(rc == 0);
        return rc;
      },
      [outcome](Napi::Env e) { return OutcomeToJs(e, *outcome); });
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
    RunOnPool(
        info.Env(), "close",
        [st]() {
          st->Finish(false);
          st->busy = false;
          return 0;
        },
        nullptr);
  }
  return info.Env().Undefined();
}

}  // namespace ct
