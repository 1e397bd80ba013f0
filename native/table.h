// The store behind ct.liveTable(): the table's entries as fixed-size slots in
// one dense array, found through an open-addressing index of 32-bit slot
// numbers (linear probing, deletion by backward shift: no tombstones), as the
// kernel's own hash keeps entries by tuple. Counts by protocol/state, by
// source and by destination are kept beside it, per entry and reversible.
//
// Why native and why this shape: a JS Map keyed by strings cost 224 B per
// entry at 1M entries; here an entry costs its 48-byte slot plus ~8 bytes of
// index (with `entries`, 68 more bytes of detail and 8 of reply index), and
// the records the event reader and the dump cursor already produce are
// applied here directly: a followed event never becomes a JS object.
// Arrays live in their own mappings (mmap/mremap), so growing one never
// holds two copies and shrinking one gives its pages back.
//
// No policy: JS decides when to sync, what an overrun means, and formats.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include "record.h"

namespace ct {

// A growable array of trivially copyable T in an anonymous mapping of its own.
template <typename T>
class MappedArray {
 public:
  MappedArray() = default;
  MappedArray(const MappedArray&) = delete;
  MappedArray& operator=(const MappedArray&) = delete;
  ~MappedArray() { Release(); }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  size_t size() const { return size_; }
  // Appends a zeroed element; false when memory ran out.
  bool Grow();
  void PopBack();
  void Release();

 private:
  bool Resize(size_t capacity);
  T* data_ = nullptr;
  size_t size_ = 0, capacity_ = 0;
};

// Open addressing over slot numbers (stored +1; 0 is empty). The keys live in
// the caller's arrays: `eq(slot)` and `hashOf(slot)` read them.
class SlotIndex {
 public:
  SlotIndex() = default;
  SlotIndex(const SlotIndex&) = delete;
  SlotIndex& operator=(const SlotIndex&) = delete;
  ~SlotIndex() { Release(); }
  template <typename Eq>
  int64_t Find(uint64_t hash, Eq eq) const;
  template <typename HashOf>
  bool Insert(uint64_t hash, uint32_t slot, HashOf hashOf);
  template <typename HashOf>
  void Erase(uint64_t hash, uint32_t slot, HashOf hashOf);
  // The element `from` moved to `to` (a swap-remove): repoint its index entry.
  void Move(uint64_t hash, uint32_t from, uint32_t to);
  void Release();

 private:
  template <typename HashOf>
  bool Rehash(size_t capacity, HashOf hashOf);
  uint32_t* slots_ = nullptr;
  size_t mask_ = 0, count_ = 0;
};

// The kernel's identity of an entry (original tuple, zones), or of a tuple to
// find. The first kKeyBytes bytes are the key; state/flags/gen ride in the
// rest of the slot.
struct TableSlot {
  uint8_t src[16];
  uint8_t dst[16];
  uint16_t sport, dport;  // ports or GRE keys; ICMP: type | code << 8, id
  uint16_t zone, origZone, replyZone;
  uint8_t family, protocol;
  uint8_t bits;   // kKeyPorts, kKeyIcmp, kKeyOrigZone, kKeyReplyZone
  uint8_t state;  // kNoState when the kernel sent none
  uint8_t flags;  // kSlotAssured, kSlotUnwatched
  uint8_t gen;    // the sync that last saw it
};
static_assert(sizeof(TableSlot) == 48, "slot layout");
constexpr size_t kKeyBytes = offsetof(TableSlot, state);

// With `entries`: what a get() needs besides the key, per slot.
struct TableDetail {
  RecordTuple reply;
  uint32_t id, status, timeout, mark, use, present;
  uint32_t extra;  // 1 + index into extras, 0: none
};

// The rarer, larger fields, only for entries that have one.
struct TableExtra {
  uint64_t counters[4];
  uint64_t tsStart, tsStop;
  uint8_t labels[16];
  char helper[16];
  uint32_t vtagOriginal, vtagReply;
};

struct SourceCount {
  uint8_t addr[16];
  uint8_t family;
  uint32_t entries;
};
struct DestinationCount {
  uint8_t addr[16];
  uint16_t dport;
  uint8_t family, protocol, hasPort;
  uint32_t entries;
};

class LiveStore : public Napi::ObjectWrap<LiveStore> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit LiveStore(const Napi::CallbackInfo& info);

 private:
  Napi::Value BeginSync(const Napi::CallbackInfo& info);
  Napi::Value EndSync(const Napi::CallbackInfo& info);
  Napi::Value ApplyDump(const Napi::CallbackInfo& info);
  Napi::Value ApplyEvents(const Napi::CallbackInfo& info);
  Napi::Value Counters(const Napi::CallbackInfo& info);
  Napi::Value Groups(const Napi::CallbackInfo& info);
  Napi::Value TopSources(const Napi::CallbackInfo& info);
  Napi::Value TopDestinations(const Napi::CallbackInfo& info);
  Napi::Value Get(const Napi::CallbackInfo& info);
  Napi::Value Find(const Napi::CallbackInfo& info);
  Napi::Value Records(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);

  // kind: kKindEntry (a dump), kKindNew/Update/Destroy (an event).
  bool Apply(const Record& r);
  int64_t Lookup(const TableSlot& key) const;
  int64_t LookupReply(const TableSlot& key) const;
  bool Insert(const Record& r, const TableSlot& key);
  void Update(uint32_t i, const Record& r);
  void Remove(uint32_t i);
  void Count(uint32_t i, int sign);
  void StoreDetail(uint32_t i, const Record& r, bool merge);
  TableSlot ReplyKey(uint32_t i) const;
  void ToRecord(uint32_t i, Record* r) const;
  bool KeyFromSpec(Napi::Object spec, TableSlot* key);

  bool entries_ = false;
  bool failed_ = false;  // out of memory once: the figures are wrong until the next sync
  uint8_t gen_ = 0;
  uint32_t syncs_ = 0;
  MappedArray<TableSlot> slots_;
  MappedArray<TableDetail> details_;
  MappedArray<TableExtra> extras_;
  MappedArray<uint32_t> freeExtras_;
  SlotIndex byOriginal_, byReply_;
  MappedArray<SourceCount> sources_;
  SlotIndex sourceIndex_;
  MappedArray<DestinationCount> destinations_;
  SlotIndex destinationIndex_;
  struct Group {
    uint64_t entries = 0, assured = 0;
  };
  std::unordered_map<uint16_t, Group> groups_;  // protocol << 8 | state
  uint64_t assured_ = 0, unwatched_ = 0;
  uint64_t events_[3] = {0, 0, 0};  // new, update, destroy
  uint64_t lost_ = 0;
};

}  // namespace ct
