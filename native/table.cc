#include "table.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "handle.h"

namespace ct {

namespace {

constexpr uint8_t kKeyPorts = 1, kKeyIcmp = 2, kKeyOrigZone = 4, kKeyReplyZone = 8;
constexpr uint8_t kNoState = 0xff;
constexpr uint8_t kSlotAssured = 1, kSlotUnwatched = 2;
constexpr uint32_t kStatusAssured = 1u << 2;  // IPS_ASSURED
constexpr uint32_t kExtraBits = kHasCounters | kHasTimestampStart | kHasTimestampStop | kHasLabels | kHasHelper | kHasVtags;

uint64_t HashBytes(const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, b + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  uint64_t w = 0;
  std::memcpy(&w, b + i, n - i);
  h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 29);
}

// Large arrays ask for huge pages: a lookup touches a random slot, and on
// 4 KiB pages that is a TLB miss as well as a cache miss (most of a lookup's
// time at a million entries). Small ones stay on 4 KiB pages, as a huge page
// would be mostly unused memory.
void* Hugepages(void* p, size_t bytes) {
  if (p != MAP_FAILED && bytes >= (4u << 20)) madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

size_t PageRound(size_t bytes) {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}

// The key of one direction's tuple: addresses, ports or ICMP fields, the
// entry's zone; the directional zones only for the original (the entry's identity).
void TupleKey(const Record& r, const RecordTuple& t, bool original, TableSlot* k) {
  std::memset(k, 0, sizeof(*k));
  size_t addrBytes = r.family == 2 ? 4 : 16;
  std::memcpy(k->src, t.src, addrBytes);
  std::memcpy(k->dst, t.dst, addrBytes);
  k->family = r.family;
  k->protocol = r.protocol;
  k->zone = r.zone;
  if (r.present & kHasPorts) {
    k->sport = t.sport;
    k->dport = t.dport;
    k->bits |= kKeyPorts;
  } else if (r.present & kHasIcmp) {
    k->sport = static_cast<uint16_t>(t.icmpType | t.icmpCode << 8);
    k->dport = t.icmpId;
    k->bits |= kKeyIcmp;
  }
  if (!original) return;
  if (r.present & kHasOrigZone) {
    k->origZone = r.origZone;
    k->bits |= kKeyOrigZone;
  }
  if (r.present & kHasReplyZone) {
    k->replyZone = r.replyZone;
    k->bits |= kKeyReplyZone;
  }
}

// The key is 45 bytes: five 8-byte words and 5 bytes of a sixth (whose rest
// is state, flags and gen), compared and hashed inline (a libc memcmp per
// probe cost more than the rest of a lookup).
static_assert(kKeyBytes == 45 && sizeof(TableSlot) == 48, "key layout");
inline uint64_t Word(const TableSlot& k, size_t i) {
  uint64_t w;
  std::memcpy(&w, reinterpret_cast<const uint8_t*>(&k) + 8 * i, 8);
  return w;
}
inline uint64_t Tail(const TableSlot& k) { return Word(k, 5) & 0xffffffffffull; }
inline uint64_t KeyHash(const TableSlot& k) {
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < 5; ++i) {
    h = (h ^ Word(k, i)) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  h = (h ^ Tail(k)) * 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 29);
}
inline bool SameKey(const TableSlot& a, const TableSlot& b) {
  return ((Word(a, 0) ^ Word(b, 0)) | (Word(a, 1) ^ Word(b, 1)) | (Word(a, 2) ^ Word(b, 2)) | (Word(a, 3) ^ Word(b, 3)) |
          (Word(a, 4) ^ Word(b, 4)) | (Tail(a) ^ Tail(b))) == 0;
}

// Removes element i of a dense array indexed by `index`: the last element takes its place.
template <typename T, typename HashOf>
void SwapRemove(MappedArray<T>& arr, SlotIndex& index, uint32_t i, uint64_t hash, HashOf hashOf) {
  index.Erase(hash, i, hashOf);
  uint32_t last = static_cast<uint32_t>(arr.size() - 1);
  if (i != last) {
    index.Move(hashOf(last), last, i);
    arr[i] = arr[last];
  }
  arr.PopBack();
}

// One more or one less entry counted under `probe`'s key (the bytes before `entries`).
template <typename T>
bool Bump(MappedArray<T>& arr, SlotIndex& index, const T& probe, int sign) {
  constexpr size_t kBytes = offsetof(T, entries);
  uint64_t h = HashBytes(&probe, kBytes);
  auto hashOf = [&arr](uint32_t s) { return HashBytes(&arr[s], kBytes); };
  int64_t i = index.Find(h, [&](uint32_t s) { return std::memcmp(&arr[s], &probe, kBytes) == 0; });
  if (sign > 0) {
    if (i < 0) {
      if (!arr.Grow()) return false;
      i = static_cast<int64_t>(arr.size() - 1);
      arr[i] = probe;
      arr[i].entries = 0;
      if (!index.Insert(h, static_cast<uint32_t>(i), hashOf)) {
        arr.PopBack();
        return false;
      }
    }
    arr[i].entries++;
    return true;
  }
  if (i >= 0 && --arr[i].entries == 0) SwapRemove(arr, index, static_cast<uint32_t>(i), h, hashOf);
  return true;
}

template <typename T>
std::vector<uint32_t> Largest(const MappedArray<T>& arr, size_t n, bool (*before)(const T&, const T&)) {
  std::vector<uint32_t> order(arr.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  n = std::min(n, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                    [&](uint32_t a, uint32_t b) { return before(arr[a], arr[b]); });
  order.resize(n);
  return order;
}

bool SourceBefore(const SourceCount& a, const SourceCount& b) {
  if (a.entries != b.entries) return a.entries > b.entries;
  if (a.family != b.family) return a.family < b.family;
  return std::memcmp(a.addr, b.addr, 16) < 0;
}

bool DestinationBefore(const DestinationCount& a, const DestinationCount& b) {
  if (a.entries != b.entries) return a.entries > b.entries;
  if (a.protocol != b.protocol) return a.protocol < b.protocol;
  if (a.family != b.family) return a.family < b.family;
  int c = std::memcmp(a.addr, b.addr, 16);
  if (c != 0) return c < 0;
  return a.dport < b.dport;
}

uint32_t U32(Napi::Object o, const char* name, uint32_t otherwise) {
  Napi::Value v = o.Get(name);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : otherwise;
}

}  // namespace

template <typename T>
bool MappedArray<T>::Resize(size_t capacity) {
  size_t oldBytes = PageRound(capacity_ * sizeof(T)), bytes = PageRound(capacity * sizeof(T));
  void* p = Hugepages(data_ ? mremap(data_, oldBytes, bytes, MREMAP_MAYMOVE)
                            : mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                      bytes);
  if (p == MAP_FAILED) return false;
  data_ = static_cast<T*>(p);
  capacity_ = bytes / sizeof(T);
  return true;
}

template <typename T>
bool MappedArray<T>::Grow() {
  if (size_ == capacity_ && !Resize(capacity_ ? capacity_ * 2 : 1)) return false;
  std::memset(&data_[size_], 0, sizeof(T));
  ++size_;
  return true;
}

template <typename T>
void MappedArray<T>::PopBack() {
  --size_;
  // Give pages back once three quarters are unused (hysteresis: no thrash at the boundary).
  if (capacity_ * sizeof(T) > (1u << 20) && size_ < capacity_ / 4) Resize(capacity_ / 2);
}

template <typename T>
void MappedArray<T>::Release() {
  if (data_) munmap(data_, PageRound(capacity_ * sizeof(T)));
  data_ = nullptr;
  size_ = capacity_ = 0;
}

template <typename Eq>
int64_t SlotIndex::Find(uint64_t hash, Eq eq) const {
  if (!slots_) return -1;
  for (size_t p = hash & mask_;; p = (p + 1) & mask_) {
    uint32_t v = slots_[p];
    if (v == 0) return -1;
    if (eq(v - 1)) return v - 1;
  }
}

template <typename HashOf>
bool SlotIndex::Rehash(size_t capacity, HashOf hashOf) {
  void* p = Hugepages(mmap(nullptr, PageRound(capacity * 4), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), capacity * 4);
  if (p == MAP_FAILED) return false;
  uint32_t* fresh = static_cast<uint32_t*>(p);
  size_t mask = capacity - 1;
  for (size_t i = 0; slots_ && i <= mask_; ++i) {
    uint32_t v = slots_[i];
    if (v == 0) continue;
    size_t q = hashOf(v - 1) & mask;
    while (fresh[q]) q = (q + 1) & mask;
    fresh[q] = v;
  }
  if (slots_) munmap(slots_, PageRound((mask_ + 1) * 4));
  slots_ = fresh;
  mask_ = mask;
  return true;
}

template <typename HashOf>
bool SlotIndex::Insert(uint64_t hash, uint32_t slot, HashOf hashOf) {
  // At most half full: a miss (every insert starts with one) probes 2.5 slots
  // on average, against 8.5 at three quarters; 4 bytes a slot keep that cheap.
  if (!slots_ && !Rehash(1024, hashOf)) return false;
  if ((count_ + 1) * 2 > mask_ + 1 && !Rehash((mask_ + 1) * 2, hashOf)) return false;
  size_t p = hash & mask_;
  while (slots_[p]) p = (p + 1) & mask_;
  slots_[p] = slot + 1;
  ++count_;
  return true;
}

template <typename HashOf>
void SlotIndex::Erase(uint64_t hash, uint32_t slot, HashOf hashOf) {
  if (!slots_) return;
  size_t p = hash & mask_;
  while (slots_[p] != slot + 1) {
    if (slots_[p] == 0) return;
    p = (p + 1) & mask_;
  }
  // Backward shift: pull later members of the probe run into the hole
  // unless their home lies cyclically after it.
  for (size_t j = (p + 1) & mask_; slots_[j]; j = (j + 1) & mask_) {
    size_t home = hashOf(slots_[j] - 1) & mask_;
    if (((j - home) & mask_) >= ((j - p) & mask_)) {
      slots_[p] = slots_[j];
      p = j;
    }
  }
  slots_[p] = 0;
  --count_;
  if (mask_ + 1 > 4096 && count_ * 8 < mask_ + 1) Rehash((mask_ + 1) / 2, hashOf);
}

void SlotIndex::Move(uint64_t hash, uint32_t from, uint32_t to) {
  if (!slots_) return;
  for (size_t p = hash & mask_; slots_[p]; p = (p + 1) & mask_) {
    if (slots_[p] == from + 1) {
      slots_[p] = to + 1;
      return;
    }
  }
}

void SlotIndex::Release() {
  if (slots_) munmap(slots_, PageRound((mask_ + 1) * 4));
  slots_ = nullptr;
  mask_ = count_ = 0;
}

void LiveStore::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function fn = DefineClass(
      env, "LiveStore",
      {InstanceMethod("beginSync", &LiveStore::BeginSync), InstanceMethod("endSync", &LiveStore::EndSync),
       InstanceMethod("applyDump", &LiveStore::ApplyDump), InstanceMethod("applyEvents", &LiveStore::ApplyEvents),
       InstanceMethod("counters", &LiveStore::Counters), InstanceMethod("groups", &LiveStore::Groups),
       InstanceMethod("topSources", &LiveStore::TopSources),
       InstanceMethod("topDestinations", &LiveStore::TopDestinations), InstanceMethod("get", &LiveStore::Get),
       InstanceMethod("find", &LiveStore::Find), InstanceMethod("records", &LiveStore::Records),
       InstanceMethod("release", &LiveStore::Release)});
  exports.Set("LiveStore", fn);
}

// new LiveStore(entries: boolean)
LiveStore::LiveStore(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LiveStore>(info) {
  entries_ = info.Length() > 0 && info[0].ToBoolean();
}

int64_t LiveStore::Lookup(const TableSlot& key) const {
  return byOriginal_.Find(KeyHash(key), [&](uint32_t s) { return SameKey(slots_[s], key); });
}

int64_t LiveStore::LookupReply(const TableSlot& key) const {
  return byReply_.Find(KeyHash(key), [&](uint32_t s) { return SameKey(ReplyKey(s), key); });
}

TableSlot LiveStore::ReplyKey(uint32_t i) const {
  Record r;
  r.family = slots_[i].family;
  r.protocol = slots_[i].protocol;
  r.zone = slots_[i].zone;
  uint8_t bits = slots_[i].bits;
  r.present = (bits & kKeyPorts ? uint32_t{kHasPorts} : 0u) | (bits & kKeyIcmp ? uint32_t{kHasIcmp} : 0u);
  TableSlot k;
  TupleKey(r, details_[i].reply, false, &k);
  return k;
}

void LiveStore::Count(uint32_t i, int sign) {
  const TableSlot& s = slots_[i];
  Group& g = groups_[static_cast<uint16_t>(s.protocol << 8 | s.state)];
  bool assured = s.flags & kSlotAssured;
  g.entries += sign;
  g.assured += assured ? sign : 0;
  assured_ += assured ? sign : 0;
  if (g.entries == 0) groups_.erase(static_cast<uint16_t>(s.protocol << 8 | s.state));
}

bool LiveStore::Insert(const Record& r, const TableSlot& key) {
  if (!slots_.Grow()) return false;
  uint32_t i = static_cast<uint32_t>(slots_.size() - 1);
  if (entries_ && !details_.Grow()) {
    slots_.PopBack();
    return false;
  }
  TableSlot& s = slots_[i];
  s = key;
  s.state = r.present & kHasState ? r.state : kNoState;
  s.flags = r.status & kStatusAssured ? kSlotAssured : 0;
  // Every entry of the first dump may predate the subscription (see src/live-table.ts).
  if (r.kind == kKindEntry && syncs_ == 1) {
    s.flags |= kSlotUnwatched;
    unwatched_++;
  }
  s.gen = gen_;
  auto hashOf = [this](uint32_t x) { return KeyHash(slots_[x]); };
  if (!byOriginal_.Insert(KeyHash(key), i, hashOf)) {
    if (s.flags & kSlotUnwatched) unwatched_--;
    slots_.PopBack();
    if (entries_) details_.PopBack();
    return false;
  }
  if (entries_) {
    StoreDetail(i, r, false);
    TableSlot reply = ReplyKey(i);
    if (LookupReply(reply) < 0) byReply_.Insert(KeyHash(reply), i, [this](uint32_t x) { return KeyHash(ReplyKey(x)); });
  }
  Count(i, 1);
  SourceCount src{};
  std::memcpy(src.addr, key.src, 16);
  src.family = key.family;
  DestinationCount dst{};
  std::memcpy(dst.addr, key.dst, 16);
  dst.family = key.family;
  dst.protocol = key.protocol;
  // GRE keys travel as ports but are no destination port.
  if ((key.bits & kKeyPorts) && key.protocol != 47) {
    dst.dport = key.dport;
    dst.hasPort = 1;
  }
  return Bump(sources_, sourceIndex_, src, 1) && Bump(destinations_, destinationIndex_, dst, 1);
}

void LiveStore::Update(uint32_t i, const Record& r) {
  Count(i, -1);
  TableSlot& s = slots_[i];
  // UPDATE events carry the state only when it changed: keep the one we had.
  if (r.present & kHasState) s.state = r.state;
  if (r.present & kHasStatus) s.flags = (s.flags & ~kSlotAssured) | (r.status & kStatusAssured ? kSlotAssured : 0);
  if (r.kind != kKindEntry && (s.flags & kSlotUnwatched)) {
    s.flags &= ~kSlotUnwatched;
    unwatched_--;
  }
  s.gen = gen_;
  Count(i, 1);
  if (!entries_) return;
  TableSlot before = ReplyKey(i);
  StoreDetail(i, r, true);
  TableSlot after = ReplyKey(i);
  if (SameKey(before, after)) return;
  auto hashOf = [this](uint32_t x) { return KeyHash(ReplyKey(x)); };
  // The index still files i under its old reply key: find it there by number.
  byReply_.Erase(KeyHash(before), i, hashOf);
  if (LookupReply(after) < 0) byReply_.Insert(KeyHash(after), i, hashOf);
}

void LiveStore::StoreDetail(uint32_t i, const Record& r, bool merge) {
  TableDetail& d = details_[i];
  uint32_t p = r.present;
  if (p & kHasReply) d.reply = r.reply;
  if (p & kHasId) d.id = r.id;
  if (p & kHasStatus) d.status = r.status;
  if (p & kHasTimeout) d.timeout = r.timeout;
  if (p & kHasMark) d.mark = r.mark;
  if (p & kHasUse) d.use = r.use;
  d.present = (merge ? d.present : 0) | p;
  if (!(p & kExtraBits)) return;
  if (d.extra == 0) {
    uint32_t x;
    if (freeExtras_.size() > 0) {
      x = freeExtras_[freeExtras_.size() - 1];
      freeExtras_.PopBack();
      std::memset(&extras_[x], 0, sizeof(TableExtra));
    } else {
      if (!extras_.Grow()) {
        failed_ = true;
        d.present &= ~kExtraBits;
        return;
      }
      x = static_cast<uint32_t>(extras_.size() - 1);
    }
    d.extra = x + 1;
  }
  TableExtra& e = extras_[d.extra - 1];
  if (p & kHasCounters) {
    e.counters[0] = r.origPackets;
    e.counters[1] = r.origBytes;
    e.counters[2] = r.replyPackets;
    e.counters[3] = r.replyBytes;
  }
  if (p & kHasTimestampStart) e.tsStart = r.tsStart;
  if (p & kHasTimestampStop) e.tsStop = r.tsStop;
  if (p & kHasLabels) std::memcpy(e.labels, r.labels, sizeof(e.labels));
  if (p & kHasHelper) std::memcpy(e.helper, r.helper, sizeof(e.helper));
  if (p & kHasVtags) {
    e.vtagOriginal = r.vtagOriginal;
    e.vtagReply = r.vtagReply;
  }
}

void LiveStore::Remove(uint32_t i) {
  Count(i, -1);
  TableSlot key = slots_[i];
  if (key.flags & kSlotUnwatched) unwatched_--;
  SourceCount src{};
  std::memcpy(src.addr, key.src, 16);
  src.family = key.family;
  Bump(sources_, sourceIndex_, src, -1);
  DestinationCount dst{};
  std::memcpy(dst.addr, key.dst, 16);
  dst.family = key.family;
  dst.protocol = key.protocol;
  if ((key.bits & kKeyPorts) && key.protocol != 47) {
    dst.dport = key.dport;
    dst.hasPort = 1;
  }
  Bump(destinations_, destinationIndex_, dst, -1);
  uint32_t last = static_cast<uint32_t>(slots_.size() - 1);
  if (entries_) {
    auto replyHash = [this](uint32_t x) { return KeyHash(ReplyKey(x)); };
    TableSlot reply = ReplyKey(i);
    if (LookupReply(reply) == i) byReply_.Erase(KeyHash(reply), i, replyHash);
    if (i != last) {
      TableSlot lastReply = ReplyKey(last);
      if (LookupReply(lastReply) == last) byReply_.Move(KeyHash(lastReply), last, i);
    }
    if (details_[i].extra) {
      if (freeExtras_.Grow()) freeExtras_[freeExtras_.size() - 1] = details_[i].extra - 1;
    }
    if (i != last) details_[i] = details_[last];
    details_.PopBack();
  }
  SwapRemove(slots_, byOriginal_, i, KeyHash(key), [this](uint32_t x) { return KeyHash(slots_[x]); });
}

bool LiveStore::Apply(const Record& r) {
  TableSlot key;
  TupleKey(r, r.orig, true, &key);
  int64_t i = Lookup(key);
  if (r.kind == kKindDestroy) {
    if (i >= 0) Remove(static_cast<uint32_t>(i));
    return true;
  }
  if (i >= 0) {
    Update(static_cast<uint32_t>(i), r);
    return true;
  }
  return Insert(r, key);
}

Napi::Value LiveStore::BeginSync(const Napi::CallbackInfo& info) {
  syncs_++;
  gen_++;
  failed_ = false;
  return info.Env().Undefined();
}

// Entries the sync neither dumped nor heard of are gone: removed. Returns how many.
Napi::Value LiveStore::EndSync(const Napi::CallbackInfo& info) {
  uint32_t removed = 0;
  for (size_t i = slots_.size(); i-- > 0;) {
    if (slots_[i].gen == gen_) continue;
    Remove(static_cast<uint32_t>(i));
    removed++;
  }
  return Napi::Number::New(info.Env(), removed);
}

Napi::Value LiveStore::ApplyDump(const Napi::CallbackInfo& info) {
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  Record r;
  for (size_t off = 0; off + kRecordSize <= buf.Length(); off += kRecordSize) {
    std::memcpy(&r, buf.Data() + off, kRecordSize);
    if (r.kind == kKindEntry && !Apply(r)) failed_ = true;
  }
  return info.Env().Undefined();
}

// applyEvents(batch, replay): applies NEW/UPDATE/DESTROY records in order;
// counts them unless replayed. Returns the events lost at this batch's overrun records.
Napi::Value LiveStore::ApplyEvents(const Napi::CallbackInfo& info) {
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  bool replay = info[1].ToBoolean();
  double lost = 0;
  Record r;
  for (size_t off = 0; off + kRecordSize <= buf.Length(); off += kRecordSize) {
    std::memcpy(&r, buf.Data() + off, kRecordSize);
    if (r.kind == kKindOverrun) {
      lost += r.lost;
      if (!replay) lost_ += r.lost;
      continue;
    }
    if (r.kind < kKindNew || r.kind > kKindDestroy) continue;
    if (!replay) events_[r.kind - kKindNew]++;
    if (!Apply(r)) failed_ = true;
  }
  return Napi::Number::New(info.Env(), lost);
}

Napi::Value LiveStore::Counters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", static_cast<double>(slots_.size()));
  o.Set("assured", static_cast<double>(assured_));
  o.Set("unwatched", static_cast<double>(unwatched_));
  o.Set("new", static_cast<double>(events_[0]));
  o.Set("update", static_cast<double>(events_[1]));
  o.Set("destroy", static_cast<double>(events_[2]));
  o.Set("lost", static_cast<double>(lost_));
  o.Set("failed", failed_);
  return o;
}

Napi::Value LiveStore::Groups(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  for (const auto& [key, g] : groups_) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("protocol", key >> 8);
    o.Set("state", (key & 0xff) == kNoState ? -1 : key & 0xff);
    o.Set("entries", static_cast<double>(g.entries));
    o.Set("assured", static_cast<double>(g.assured));
    out.Set(out.Length(), o);
  }
  return out;
}

Napi::Value LiveStore::TopSources(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  for (uint32_t i : Largest(sources_, info[0].As<Napi::Number>().Uint32Value(), SourceBefore)) {
    const SourceCount& c = sources_[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("family", c.family);
    o.Set("addr", Napi::Buffer<uint8_t>::Copy(env, c.addr, 16));
    o.Set("entries", c.entries);
    out.Set(out.Length(), o);
  }
  return out;
}

Napi::Value LiveStore::TopDestinations(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  for (uint32_t i : Largest(destinations_, info[0].As<Napi::Number>().Uint32Value(), DestinationBefore)) {
    const DestinationCount& c = destinations_[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("family", c.family);
    o.Set("protocol", c.protocol);
    o.Set("addr", Napi::Buffer<uint8_t>::Copy(env, c.addr, 16));
    if (c.hasPort) o.Set("dport", c.dport);
    o.Set("entries", c.entries);
    out.Set(out.Length(), o);
  }
  return out;
}

void LiveStore::ToRecord(uint32_t i, Record* r) const {
  std::memset(r, 0, sizeof(*r));
  const TableSlot& s = slots_[i];
  const TableDetail& d = details_[i];
  r->kind = kKindEntry;
  r->family = s.family;
  r->protocol = s.protocol;
  r->zone = s.zone;
  // Events leave out a mark of 0 (and an UPDATE an unchanged one): the entry has one all the same.
  r->present = d.present | kHasMark;
  std::memcpy(r->orig.src, s.src, 16);
  std::memcpy(r->orig.dst, s.dst, 16);
  if (s.bits & kKeyPorts) {
    r->orig.sport = s.sport;
    r->orig.dport = s.dport;
  } else if (s.bits & kKeyIcmp) {
    r->orig.icmpType = static_cast<uint8_t>(s.sport & 0xff);
    r->orig.icmpCode = static_cast<uint8_t>(s.sport >> 8);
    r->orig.icmpId = s.dport;
  }
  r->origZone = s.origZone;
  r->replyZone = s.replyZone;
  if (s.state != kNoState) r->state = s.state;
  r->reply = d.reply;
  r->id = d.id;
  r->status = d.status;
  r->timeout = d.timeout;
  r->mark = d.mark;
  r->use = d.use;
  if (!d.extra) return;
  const TableExtra& e = extras_[d.extra - 1];
  r->origPackets = e.counters[0];
  r->origBytes = e.counters[1];
  r->replyPackets = e.counters[2];
  r->replyBytes = e.counters[3];
  r->tsStart = e.tsStart;
  r->tsStop = e.tsStop;
  std::memcpy(r->labels, e.labels, sizeof(e.labels));
  std::memcpy(r->helper, e.helper, sizeof(e.helper));
  r->vtagOriginal = e.vtagOriginal;
  r->vtagReply = e.vtagReply;
}

// { family, protocol, src, dst, sport?, dport?, icmpType?, icmpCode?, icmpId?, zone?, origZone?, replyZone? }
bool LiveStore::KeyFromSpec(Napi::Object spec, TableSlot* key) {
  Record r;
  std::memset(&r, 0, sizeof(r));
  r.family = static_cast<uint8_t>(U32(spec, "family", 2));
  r.protocol = static_cast<uint8_t>(U32(spec, "protocol", 0));
  r.zone = static_cast<uint16_t>(U32(spec, "zone", 0));
  Napi::Value src = spec.Get("src"), dst = spec.Get("dst");
  if (!src.IsBuffer() || !dst.IsBuffer()) return false;
  auto s = src.As<Napi::Buffer<uint8_t>>(), d = dst.As<Napi::Buffer<uint8_t>>();
  std::memcpy(r.orig.src, s.Data(), std::min<size_t>(16, s.Length()));
  std::memcpy(r.orig.dst, d.Data(), std::min<size_t>(16, d.Length()));
  if (spec.Get("sport").IsNumber()) {
    r.present |= kHasPorts;
    r.orig.sport = static_cast<uint16_t>(U32(spec, "sport", 0));
    r.orig.dport = static_cast<uint16_t>(U32(spec, "dport", 0));
  } else if (spec.Get("icmpType").IsNumber()) {
    r.present |= kHasIcmp;
    r.orig.icmpType = static_cast<uint8_t>(U32(spec, "icmpType", 0));
    r.orig.icmpCode = static_cast<uint8_t>(U32(spec, "icmpCode", 0));
    r.orig.icmpId = static_cast<uint16_t>(U32(spec, "icmpId", 0));
  }
  if (spec.Get("origZone").IsNumber()) {
    r.present |= kHasOrigZone;
    r.origZone = static_cast<uint16_t>(U32(spec, "origZone", 0));
  }
  if (spec.Get("replyZone").IsNumber()) {
    r.present |= kHasReplyZone;
    r.replyZone = static_cast<uint16_t>(U32(spec, "replyZone", 0));
  }
  TupleKey(r, r.orig, true, key);
  return true;
}

Napi::Value LiveStore::Get(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TableSlot key;
  if (!entries_ || !info[0].IsObject() || !KeyFromSpec(info[0].As<Napi::Object>(), &key)) return env.Null();
  int64_t i = Lookup(key);
  if (i < 0) return env.Null();
  Record r;
  ToRecord(static_cast<uint32_t>(i), &r);
  return RecordsToBuffer(env, &r, sizeof(r));
}

// The entry whose original, or else reply, tuple is this one (the entry's zone; no directional zones).
Napi::Value LiveStore::Find(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TableSlot key;
  if (!entries_ || !info[0].IsObject() || !KeyFromSpec(info[0].As<Napi::Object>(), &key)) return env.Null();
  int64_t i = Lookup(key);
  if (i < 0) i = LookupReply(key);
  if (i < 0) return env.Null();
  Record r;
  ToRecord(static_cast<uint32_t>(i), &r);
  return RecordsToBuffer(env, &r, sizeof(r));
}

// records(start, max): up to `max` entries from position `start`, as records; null past the end.
Napi::Value LiveStore::Records(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t start = info[0].As<Napi::Number>().Uint32Value(), max = info[1].As<Napi::Number>().Uint32Value();
  if (!entries_ || start >= slots_.size()) return env.Null();
  size_t n = std::min(max, slots_.size() - start);
  std::vector<Record> out(n);
  for (size_t k = 0; k < n; ++k) ToRecord(static_cast<uint32_t>(start + k), &out[k]);
  return RecordsToBuffer(env, out.data(), n * sizeof(Record));
}

// Frees every array at once (close()): the object may live on until collected.
Napi::Value LiveStore::Release(const Napi::CallbackInfo& info) {
  slots_.Release();
  details_.Release();
  extras_.Release();
  freeExtras_.Release();
  byOriginal_.Release();
  byReply_.Release();
  sources_.Release();
  sourceIndex_.Release();
  destinations_.Release();
  destinationIndex_.Release();
  groups_.clear();
  assured_ = unwatched_ = 0;
  return info.Env().Undefined();
}

}  // namespace ct
