// The bulk delete and update on a dump cursor's matches (bulk.cc): requests
// sent in batches on a second socket while the dump is still received.
#pragma once

#include <atomic>
#include <functional>
#include <vector>

#include "batch.h"
#include "change.h"
#include "cursor.h"
#include "request.h"
#include "socket.h"

namespace ct {

// What a bulk delete or update did: entries matched, deleted or updated
// (`applied`), already gone, and refused (with the kernel's errno).
struct BulkOutcome {
  uint64_t matched = 0, applied = 0, alreadyGone = 0;
  RecordBatch failed;             // the entries refused
  std::vector<int> failedErrno;   // and the kernel's errno for each
  bool keepApplied = false;       // updates: keep each updated entry as the update left it
  RecordBatch appliedRecords;
  void Fail(const RecordBatch& from, size_t i, int err) {
    failed.Add(from, i);
    failedErrno.push_back(err);
  }
};

// Sends one request per spec in batches (many messages per sendmsg, no
// ACKs: the kernel answers only failures, read in bulk after an ACKed
// sentinel ending each batch). `onFailure(i, errno)` hears of each refusal.
// `flags`: NLM_F_CREATE | NLM_F_EXCL makes a batch of IPCTNL_MSG_CT_NEW creates.
int SendBatched(NlSocket* sock, const std::vector<EntrySpec>& requests, uint8_t msgType,
                const std::atomic<bool>& cancelled, const std::function<void(size_t, int)>& onFailure,
                uint16_t flags = 0);
// Deletes `records` by key and id (a newer flow on the same tuple is left alone).
int DeleteRecords(NlSocket* sock, const RecordBatch& records, const std::atomic<bool>& cancelled,
                  BulkOutcome* outcome);
// Applies `change` to each of `records` as dumped; those it would not change are skipped.
int UpdateRecords(NlSocket* sock, const RecordBatch& records, const ChangeSpec& change,
                  const std::atomic<bool>& cancelled, BulkOutcome* outcome);

}  // namespace ct
