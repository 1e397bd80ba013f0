// The bulk delete and update: every match of a dump cursor deleted, or
// changed as conntrack -U changes it, in native code while the dump is still
// being received (DumpCursor's deleteStreaming(), updateStreaming(), and the
// two-step collect() + deleteCollected()).
#include "bulk.h"

#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

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

int DeleteRecords(NlSocket* sock, const RecordBatch& records, const std::atomic<bool>& cancelled,
                  BulkOutcome* outcome) {
  std::vector<EntrySpec> requests;
  requests.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const Record r = records.At(i);
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
    else outcome->Fail(records, i, err);
  });
  if (rc == 0) outcome->applied += records.size() - errors;
  return rc;
}

int UpdateRecords(NlSocket* sock, const RecordBatch& records, const ChangeSpec& change,
                  const std::atomic<bool>& cancelled, BulkOutcome* outcome) {
  std::vector<EntrySpec> requests;
  std::vector<size_t> before;  // which of `records` each request changes
  std::vector<Record> after;
  requests.reserve(records.size());
  before.reserve(records.size());
  after.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    EntrySpec request;
    Record changed;
    switch (ApplyChange(records.At(i), change, &request, &changed)) {
      case ChangeResult::kUnchanged:
        break;  // conntrack -U skips it too
      case ChangeResult::kFixedTimeout:
        outcome->Fail(records, i, EPERM);
        break;
      case ChangeResult::kChanged:
        requests.push_back(request);
        before.push_back(i);
        after.push_back(changed);
        break;
    }
  }
  std::vector<bool> ok(requests.size(), true);
  int rc = SendBatched(sock, requests, IPCTNL_MSG_CT_NEW, cancelled, [&](size_t i, int err) {
    ok[i] = false;
    // A vanished entry answers ENOENT: the update never creates (no NLM_F_CREATE).
    if (err == ENOENT) ++outcome->alreadyGone;
    else outcome->Fail(records, before[i], err);
  });
  if (rc < 0) return rc;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!ok[i]) continue;
    ++outcome->applied;
    // The change leaves the strings as they were: the tail is the entry's.
    if (outcome->keepApplied) outcome->appliedRecords.Add(after[i], records.TailOf(before[i]));
  }
  return 0;
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
    size_t len;
    const uint8_t* bytes = outcome.failed.BytesOf(i, &len);
    f.Set("record", RecordsToBuffer(e, bytes, len));
    f.Set("errno", outcome.failedErrno[i]);
    failed.Set(static_cast<uint32_t>(i), f);
  }
  o.Set("failed", failed);
  if (outcome.keepApplied) o.Set("records", RecordsToBuffer(e, outcome.appliedRecords.data(), outcome.appliedRecords.bytes()));
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
                  const std::function<int(NlSocket*, const RecordBatch&)>& apply) {
  std::unique_ptr<NlSocket> sock;
  int rc = dryRun ? 0 : d.handle->Acquire(&sock);
  std::unordered_set<uint64_t> seen;
  RecordBatch received, batch;
  while (rc >= 0) {
    received.Clear();
    rc = d.Step(&received);
    if (rc < 0) break;
    for (size_t i = 0; i < received.size(); ++i)
      if (seen.insert(EntryKey(received.At(i))).second) batch.Add(received, i);
    if (batch.size() >= kBatch || (rc == 0 && !batch.empty())) {
      outcome->matched += batch.size();
      int arc = dryRun ? 0 : apply(sock.get(), batch);
      batch.Clear();
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
        return StreamMatches(d, dryRun, outcome.get(), [&](NlSocket* sock, const RecordBatch& batch) {
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
        return StreamMatches(d, dryRun, outcome.get(), [&](NlSocket* sock, const RecordBatch& batch) {
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
        d.collected.Clear();
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
        d.collected = RecordBatch();
        d.done = true;
        d.Finish(rc == 0);
        return rc;
      },
      [outcome](Napi::Env e) { return OutcomeToJs(e, *outcome); });
}

}  // namespace ct
