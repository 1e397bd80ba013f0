// The store behind ct.liveTable(): the table's entries as fixed-size slots in
// one dense array, found through an open-addressing index of 32-bit slot
// numbers (linear probing, deletion by backward shift: no tombstones), as the
// kernel's own hash keeps entries by tuple. Counts by protocol/state, by
// source and by destination are kept beside it, per entry and reversible.
//
// Why native and why this shape: a JS Map keyed by strings cost 224 B per
// entry at 1M entries; here an IPv4 entry costs its 24-byte slot (IPv6: 48)
// plus ~8 bytes of index (with `entries`, 68 more bytes of detail and 8 of
// reply index): one shelf of slots per address size. The records the event
// reader and the dump cursor already produce are applied here directly: a
// followed event never becomes a JS object.
// Arrays live in their own mappings (mmap/mremap), so growing one never
// holds two copies and shrinking one gives its pages back.
//
// No policy: JS decides when to sync, what an overrun means, and formats.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "js_entry.h"
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
  // Room for n elements without growing on the way (a hint: false when memory ran out).
  bool Reserve(size_t n) { return capacity_ >= n || Resize(n); }
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
  // Room for n members at most half full, rehashed once now rather than at every doubling on the way.
  template <typename HashOf>
  bool Reserve(size_t n, HashOf hashOf);
  // The element `from` moved to `to` (a swap-remove): repoint its index entry.
  void Move(uint64_t hash, uint32_t from, uint32_t to);
  void Release();

 private:
  template <typename HashOf>
  bool Rehash(size_t capacity, HashOf hashOf);
  uint32_t* slots_ = nullptr;
  size_t mask_ = 0, count_ = 0;
};

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

class Store;  // table.cc: the two shelves (IPv4, IPv6) and what they share

class LiveStore : public JsObjectWrap<LiveStore> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit LiveStore(const Napi::CallbackInfo& info);
  ~LiveStore() override;

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
  Napi::Value TrimHeap(const Napi::CallbackInfo& info);
  Napi::Value Lookup(const Napi::CallbackInfo& info, bool orReply);

  std::unique_ptr<Store> store_;
};

}  // namespace ct
