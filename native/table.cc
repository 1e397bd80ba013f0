#include "table.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "batch.h"
#include "handle.h"

namespace ct {

namespace {

constexpr uint8_t kKeyPorts = 1, kKeyIcmp = 2, kKeyOrigZone = 4, kKeyReplyZone = 8;
constexpr uint8_t kAfInet = 2;
constexpr uint8_t kNoState = 0xff;
constexpr uint8_t kSlotAssured = 1, kSlotUnwatched = 2;
constexpr uint32_t kStatusAssured = 1u << 2;  // IPS_ASSURED
constexpr uint32_t kExtraBits = kHasCounters | kHasTimestampStart | kHasTimestampStop | kHasLabels | kHasVtags;

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
  Napi::Value v = Prop(o, name);
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
bool SlotIndex::Reserve(size_t n, HashOf hashOf) {
  size_t capacity = 1024;
  while (capacity < 2 * n) capacity *= 2;
  return (slots_ && capacity <= mask_ + 1) || Rehash(capacity, hashOf);
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

namespace {

// An entry's slot: the kernel's identity of it (original tuple, zones) as
// the key, then its state, flags and the sync that last saw it. A = 4 for
// IPv4 (24 bytes), 16 for IPv6 (48): one shelf each. A tuple to look up is a
// slot too.
template <size_t A>
struct Slot {
  uint8_t src[A];
  uint8_t dst[A];
  uint16_t sport, dport;  // ports or GRE keys; ICMP: type | code << 8, id
  uint16_t zone, origZone, replyZone;
  uint8_t family, protocol;
  uint8_t bits;   // kKeyPorts, kKeyIcmp, kKeyOrigZone, kKeyReplyZone
  uint8_t state;  // kNoState when the kernel sent none
  uint8_t flags;  // kSlotAssured, kSlotUnwatched
  uint8_t gen;    // the sync that last saw it
};
static_assert(sizeof(Slot<4>) == 24 && sizeof(Slot<16>) == 48, "slot layout");
static_assert(offsetof(Slot<4>, state) == 21 && offsetof(Slot<16>, state) == 45, "key layout");

// The key is 2A + 13 bytes: whole 8-byte words, then 5 bytes of the last
// word (whose rest is state, flags and gen); compared and hashed inline (a
// libc memcmp per probe cost more than the rest of a lookup).
template <size_t A>
constexpr size_t kWords = (2 * A + 8) / 8;
template <size_t A>
inline uint64_t Word(const Slot<A>& k, size_t i) {
  uint64_t w;
  std::memcpy(&w, reinterpret_cast<const uint8_t*>(&k) + 8 * i, 8);
  return w;
}
template <size_t A>
inline uint64_t Tail(const Slot<A>& k) {
  return Word(k, kWords<A>) & 0xffffffffffull;
}
template <size_t A>
inline uint64_t KeyHash(const Slot<A>& k) {
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < kWords<A>; ++i) {
    h = (h ^ Word(k, i)) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  h = (h ^ Tail(k)) * 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 29);
}
template <size_t A>
inline bool SameKey(const Slot<A>& a, const Slot<A>& b) {
  uint64_t d = Tail(a) ^ Tail(b);
  for (size_t i = 0; i < kWords<A>; ++i) d |= Word(a, i) ^ Word(b, i);
  return d == 0;
}

// The key of one direction's tuple: addresses, ports or ICMP fields, the
// entry's zone; the directional zones only for the original (the entry's identity).
template <size_t A>
void TupleKey(const Record& r, const RecordTuple& t, bool original, Slot<A>* k) {
  std::memset(k, 0, sizeof(*k));
  std::memcpy(k->src, t.src, A);
  std::memcpy(k->dst, t.dst, A);
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

}  // namespace

// What both shelves share: the mode, the sync generation, the counts and the extras.
struct Shared {
  bool entries = false;
  bool failed = false;  // out of memory once: the figures are wrong until the next sync
  uint8_t gen = 0;
  uint32_t syncs = 0;
  MappedArray<TableExtra> extras;
  MappedArray<uint32_t> freeExtras;
  // The string tails (record.h: helper, secctx...) by extra: rare, and of any length.
  std::unordered_map<uint32_t, std::string> tails;
  MappedArray<SourceCount> sources;
  SlotIndex sourceIndex;
  MappedArray<DestinationCount> destinations;
  SlotIndex destinationIndex;
  struct Group {
    uint64_t entries = 0, assured = 0;
  };
  std::unordered_map<uint16_t, Group> groups;  // protocol << 8 | state
  uint64_t assured = 0, unwatched = 0;
  uint64_t events[3] = {0, 0, 0};  // new, update, destroy
  uint64_t lost = 0;

  void CountGroup(uint8_t protocol, uint8_t state, bool isAssured, int sign) {
    uint16_t key = static_cast<uint16_t>(protocol << 8 | state);
    Group& g = groups[key];
    g.entries += sign;
    g.assured += isAssured ? sign : 0;
    assured += isAssured ? sign : 0;
    if (g.entries == 0) groups.erase(key);
  }

  // One more or one less entry from `src` to `dst` (A address bytes).
  template <size_t A>
  bool CountEndpoints(const Slot<A>& k, int sign) {
    SourceCount src;
    std::memset(&src, 0, sizeof(src));
    std::memcpy(src.addr, k.src, A);
    src.family = k.family;
    DestinationCount dst;
    std::memset(&dst, 0, sizeof(dst));
    std::memcpy(dst.addr, k.dst, A);
    dst.family = k.family;
    dst.protocol = k.protocol;
    // GRE keys travel as ports but are no destination port.
    if ((k.bits & kKeyPorts) && k.protocol != 47) {
      dst.dport = k.dport;
      dst.hasPort = 1;
    }
    bool ok = Bump(sources, sourceIndex, src, sign);
    return Bump(destinations, destinationIndex, dst, sign) && ok;
  }

  // 1 + the index of a zeroed extra, or 0 when memory ran out.
  uint32_t AllocExtra() {
    uint32_t x;
    if (freeExtras.size() > 0) {
      x = freeExtras[freeExtras.size() - 1];
      freeExtras.PopBack();
      std::memset(&extras[x], 0, sizeof(TableExtra));
    } else {
      if (!extras.Grow()) return 0;
      x = static_cast<uint32_t>(extras.size() - 1);
    }
    return x + 1;
  }

  void FreeExtra(uint32_t extra) {
    if (!extra) return;
    tails.erase(extra - 1);
    if (freeExtras.Grow()) freeExtras[freeExtras.size() - 1] = extra - 1;
  }

  void Release() {
    tails.clear();
    extras.Release();
    freeExtras.Release();
    sources.Release();
    sourceIndex.Release();
    destinations.Release();
    destinationIndex.Release();
    groups.clear();
    assured = unwatched = 0;
  }
};

// The entries of one address size: slots, details (with `entries`), and
// their indexes by original and reply tuple.
template <size_t A>
class Shelf {
 public:
  explicit Shelf(Shared& shared) : s_(shared) {}
  size_t size() const { return slots_.size(); }

  // A dumped entry or an event, applied as an upsert (DESTROY: a removal) by original tuple and zone.
  bool Apply(const Record& r, std::string_view tail) {
    Slot<A> key;
    TupleKey(r, r.orig, true, &key);
    int64_t i = Lookup(key);
    if (r.kind == kKindDestroy) {
      if (i >= 0) Remove(static_cast<uint32_t>(i));
      return true;
    }
    if (i >= 0) {
      Update(static_cast<uint32_t>(i), r, tail);
      return true;
    }
    return Insert(r, tail, key);
  }

  // The slot filed under this original tuple, or under this reply tuple; -1 when none.
  int64_t Find(const Record& probe, bool orReply) const {
    Slot<A> key;
    TupleKey(probe, probe.orig, true, &key);
    int64_t i = Lookup(key);
    if (i >= 0 || !orReply || !s_.entries) return i;
    // A reply key has no directional zones.
    TupleKey(probe, probe.orig, false, &key);
    return LookupReply(key);
  }

  // Entries the sync neither dumped nor heard of are gone: removed. Returns how many.
  uint32_t Sweep() {
    uint32_t removed = 0;
    for (size_t i = slots_.size(); i-- > 0;) {
      if (slots_[i].gen == s_.gen) continue;
      Remove(static_cast<uint32_t>(i));
      removed++;
    }
    return removed;
  }

  // Entry i as a record; its string tail, if it has one, as the return value.
  const std::string* ToRecord(uint32_t i, Record* r) const {
    std::memset(r, 0, sizeof(*r));
    const Slot<A>& s = slots_[i];
    const TableDetail& d = details_[i];
    r->kind = kKindEntry;
    r->family = s.family;
    r->protocol = s.protocol;
    r->zone = s.zone;
    // Events leave out a mark of 0 (and an UPDATE an unchanged one): the entry has one all the same.
    r->present = d.present | kHasMark;
    std::memcpy(r->orig.src, s.src, A);
    std::memcpy(r->orig.dst, s.dst, A);
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
    if (!d.extra) return nullptr;
    const TableExtra& e = s_.extras[d.extra - 1];
    r->origPackets = e.counters[0];
    r->origBytes = e.counters[1];
    r->replyPackets = e.counters[2];
    r->replyBytes = e.counters[3];
    r->tsStart = e.tsStart;
    r->tsStop = e.tsStop;
    std::memcpy(r->labels, e.labels, sizeof(e.labels));
    r->vtagOriginal = e.vtagOriginal;
    r->vtagReply = e.vtagReply;
    auto tail = s_.tails.find(d.extra - 1);
    if (tail == s_.tails.end()) return nullptr;
    r->tailBytes = static_cast<uint16_t>(tail->second.size());
    return &tail->second;
  }

  // Room for n entries: a dump of a known size fills the arrays and indexes without regrowing them on the way.
  void Reserve(size_t n) {
    slots_.Reserve(n);
    byOriginal_.Reserve(n, [this](uint32_t x) { return KeyHash(slots_[x]); });
    if (!s_.entries) return;
    details_.Reserve(n);
    byReply_.Reserve(n, [this](uint32_t x) { return KeyHash(ReplyKey(x)); });
  }

  void Release() {
    slots_.Release();
    details_.Release();
    byOriginal_.Release();
    byReply_.Release();
  }

 private:
  int64_t Lookup(const Slot<A>& key) const {
    return byOriginal_.Find(KeyHash(key), [&](uint32_t x) { return SameKey(slots_[x], key); });
  }

  int64_t LookupReply(const Slot<A>& key) const {
    return byReply_.Find(KeyHash(key), [&](uint32_t x) { return SameKey(ReplyKey(x), key); });
  }

  Slot<A> ReplyKey(uint32_t i) const {
    Record r;
    r.family = slots_[i].family;
    r.protocol = slots_[i].protocol;
    r.zone = slots_[i].zone;
    uint8_t bits = slots_[i].bits;
    r.present = (bits & kKeyPorts ? uint32_t{kHasPorts} : 0u) | (bits & kKeyIcmp ? uint32_t{kHasIcmp} : 0u);
    Slot<A> k;
    TupleKey(r, details_[i].reply, false, &k);
    return k;
  }

  void CountGroup(uint32_t i, int sign) {
    const Slot<A>& s = slots_[i];
    s_.CountGroup(s.protocol, s.state, s.flags & kSlotAssured, sign);
  }

  bool Insert(const Record& r, std::string_view tail, const Slot<A>& key) {
    if (!slots_.Grow()) return false;
    uint32_t i = static_cast<uint32_t>(slots_.size() - 1);
    if (s_.entries && !details_.Grow()) {
      slots_.PopBack();
      return false;
    }
    Slot<A>& s = slots_[i];
    s = key;
    s.state = r.present & kHasState ? r.state : kNoState;
    s.flags = r.status & kStatusAssured ? kSlotAssured : 0;
    // Every entry of the first dump may predate the subscription (see src/live-table.ts).
    if (r.kind == kKindEntry && s_.syncs == 1) {
      s.flags |= kSlotUnwatched;
      s_.unwatched++;
    }
    s.gen = s_.gen;
    if (!byOriginal_.Insert(KeyHash(key), i, [this](uint32_t x) { return KeyHash(slots_[x]); })) {
      if (s.flags & kSlotUnwatched) s_.unwatched--;
      slots_.PopBack();
      if (s_.entries) details_.PopBack();
      return false;
    }
    bool ok = true;
    if (s_.entries) {
      StoreDetail(i, r, tail, false);
      // Filed only if no entry holds that reply key already (the kernel keeps
      // reply tuples unique; a stale entry not yet swept may not): a run of
      // equal keys would make every probe of the index linear.
      Slot<A> reply = ReplyKey(i);
      if (LookupReply(reply) < 0) ok = byReply_.Insert(KeyHash(reply), i, [this](uint32_t x) { return KeyHash(ReplyKey(x)); });
    }
    CountGroup(i, 1);
    return s_.CountEndpoints(key, 1) && ok;
  }

  void Update(uint32_t i, const Record& r, std::string_view tail) {
    CountGroup(i, -1);
    Slot<A>& s = slots_[i];
    // UPDATE events carry the state only when it changed: keep the one we had.
    if (r.present & kHasState) s.state = r.state;
    if (r.present & kHasStatus) s.flags = (s.flags & ~kSlotAssured) | (r.status & kStatusAssured ? kSlotAssured : 0);
    if (r.kind != kKindEntry && (s.flags & kSlotUnwatched)) {
      s.flags &= ~kSlotUnwatched;
      s_.unwatched--;
    }
    s.gen = s_.gen;
    CountGroup(i, 1);
    if (!s_.entries) return;
    Slot<A> before = ReplyKey(i);
    StoreDetail(i, r, tail, true);
    Slot<A> after = ReplyKey(i);
    if (SameKey(before, after)) return;
    auto hashOf = [this](uint32_t x) { return KeyHash(ReplyKey(x)); };
    // The index still files i under its old reply key: find it there by number.
    byReply_.Erase(KeyHash(before), i, hashOf);
    if (LookupReply(after) < 0) byReply_.Insert(KeyHash(after), i, hashOf);
  }

  void StoreDetail(uint32_t i, const Record& r, std::string_view tail, bool merge) {
    TableDetail& d = details_[i];
    uint32_t p = r.present;
    if (p & kHasReply) d.reply = r.reply;
    if (p & kHasId) d.id = r.id;
    if (p & kHasStatus) d.status = r.status;
    if (p & kHasTimeout) d.timeout = r.timeout;
    if (p & kHasMark) d.mark = r.mark;
    if (p & kHasUse) d.use = r.use;
    d.present = (merge ? d.present : 0) | p;
    // An event sends the strings it has (an UPDATE often none): a merge keeps the ones known.
    if (!merge && d.extra) s_.tails.erase(d.extra - 1);
    if (!(p & kExtraBits) && tail.empty()) return;
    if (d.extra == 0 && (d.extra = s_.AllocExtra()) == 0) {
      s_.failed = true;
      d.present &= ~kExtraBits;
      return;
    }
    TableExtra& e = s_.extras[d.extra - 1];
    if (p & kHasCounters) {
      e.counters[0] = r.origPackets;
      e.counters[1] = r.origBytes;
      e.counters[2] = r.replyPackets;
      e.counters[3] = r.replyBytes;
    }
    if (p & kHasTimestampStart) e.tsStart = r.tsStart;
    if (p & kHasTimestampStop) e.tsStop = r.tsStop;
    if (p & kHasLabels) std::memcpy(e.labels, r.labels, sizeof(e.labels));
    if (!tail.empty()) s_.tails[d.extra - 1].assign(tail);
    if (p & kHasVtags) {
      e.vtagOriginal = r.vtagOriginal;
      e.vtagReply = r.vtagReply;
    }
  }

  void Remove(uint32_t i) {
    CountGroup(i, -1);
    Slot<A> key = slots_[i];
    if (key.flags & kSlotUnwatched) s_.unwatched--;
    s_.CountEndpoints(key, -1);
    uint32_t last = static_cast<uint32_t>(slots_.size() - 1);
    if (s_.entries) {
      auto replyHash = [this](uint32_t x) { return KeyHash(ReplyKey(x)); };
      // By number: an entry is filed under its reply key at most once, and another may hold that key.
      byReply_.Erase(KeyHash(ReplyKey(i)), i, replyHash);
      if (i != last) byReply_.Move(KeyHash(ReplyKey(last)), last, i);
      s_.FreeExtra(details_[i].extra);
      if (i != last) details_[i] = details_[last];
      details_.PopBack();
    }
    SwapRemove(slots_, byOriginal_, i, KeyHash(key), [this](uint32_t x) { return KeyHash(slots_[x]); });
  }

  Shared& s_;
  MappedArray<Slot<A>> slots_;
  MappedArray<TableDetail> details_;
  SlotIndex byOriginal_, byReply_;
};

class Store {
 public:
  Shared shared;
  Shelf<4> v4{shared};
  Shelf<16> v6{shared};

  bool Apply(const Record& r, std::string_view tail) { return r.family == kAfInet ? v4.Apply(r, tail) : v6.Apply(r, tail); }
  size_t size() const { return v4.size() + v6.size(); }

  // The entry at position `at` of v4 then v6, with its tail, onto `out`.
  void AddTo(size_t at, RecordBatch* out) const {
    Record r;
    const std::string* tail = at < v4.size() ? v4.ToRecord(static_cast<uint32_t>(at), &r)
                                             : v6.ToRecord(static_cast<uint32_t>(at - v4.size()), &r);
    out->Add(r, tail ? tail->data() : nullptr);
  }

  // probe: family, protocol, zone, orig tuple and presence bits as a record gives them.
  // The position (as AddTo takes it) of the entry found, or -1.
  int64_t Find(const Record& probe, bool orReply) const {
    if (probe.family == kAfInet) return v4.Find(probe, orReply);
    int64_t i = v6.Find(probe, orReply);
    return i < 0 ? i : i + static_cast<int64_t>(v4.size());
  }

  void Release() {
    v4.Release();
    v6.Release();
    shared.Release();
  }
};

void LiveStore::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function fn = DefineClass(
      env, "LiveStore",
      {InstanceMethod("beginSync", &LiveStore::Entry<&LiveStore::BeginSync>), InstanceMethod("endSync", &LiveStore::Entry<&LiveStore::EndSync>),
       InstanceMethod("applyDump", &LiveStore::Entry<&LiveStore::ApplyDump>), InstanceMethod("applyEvents", &LiveStore::Entry<&LiveStore::ApplyEvents>),
       InstanceMethod("counters", &LiveStore::Entry<&LiveStore::Counters>), InstanceMethod("groups", &LiveStore::Entry<&LiveStore::Groups>),
       InstanceMethod("topSources", &LiveStore::Entry<&LiveStore::TopSources>),
       InstanceMethod("topDestinations", &LiveStore::Entry<&LiveStore::TopDestinations>), InstanceMethod("get", &LiveStore::Entry<&LiveStore::Get>),
       InstanceMethod("find", &LiveStore::Entry<&LiveStore::Find>), InstanceMethod("records", &LiveStore::Entry<&LiveStore::Records>),
       InstanceMethod("release", &LiveStore::Entry<&LiveStore::Release>), InstanceMethod("trimHeap", &LiveStore::Entry<&LiveStore::TrimHeap>)});
  exports.Set("LiveStore", fn);
}

// new LiveStore(entries: boolean)
LiveStore::LiveStore(const Napi::CallbackInfo& info) : JsObjectWrap<LiveStore>(info), store_(new Store()) {
  store_->shared.entries = info.Length() > 0 && Truthy(info[0]);
}

LiveStore::~LiveStore() = default;

// beginSync(expected?): a sync starts; `expected` entries (the kernel's count) are about to be dumped.
Napi::Value LiveStore::BeginSync(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsNumber()) {
    // Split by each family's share of the table as it stands (all IPv4 before
    // the first dump, the common case): room an array never fills costs
    // address space only, but an index is written all over, and one sized
    // far beyond its entries would shrink again erase by erase.
    const size_t expected = info[0].As<Napi::Number>().Uint32Value();
    const size_t held = store_->size();
    const size_t v6 = held == 0 ? 0 : expected * store_->v6.size() / held;
    store_->v4.Reserve(expected - v6);
    store_->v6.Reserve(v6);
  }
  Shared& s = store_->shared;
  s.syncs++;
  s.gen++;
  s.failed = false;
  return info.Env().Undefined();
}

// Entries the sync neither dumped nor heard of are gone: removed. Returns how many.
Napi::Value LiveStore::EndSync(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), store_->v4.Sweep() + store_->v6.Sweep());
}

// The string tail after the record at `off` (batch.h), cut to what the buffer holds.
static std::string_view TailAt(const Napi::Buffer<uint8_t>& buf, size_t off, const Record& r) {
  size_t from = off + kRecordSize, len = std::min<size_t>(r.tailBytes, buf.Length() - from);
  return {reinterpret_cast<const char*>(buf.Data() + from), len};
}

Napi::Value LiveStore::ApplyDump(const Napi::CallbackInfo& info) {
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  Record r;
  for (size_t off = 0; off + kRecordSize <= buf.Length(); off += kRecordSize + r.tailBytes) {
    std::memcpy(&r, buf.Data() + off, kRecordSize);
    if (r.kind == kKindEntry && !store_->Apply(r, TailAt(buf, off, r))) store_->shared.failed = true;
  }
  return info.Env().Undefined();
}

// applyEvents(batch, replay): applies NEW/UPDATE/DESTROY records in order;
// counts them unless replayed. Returns the events lost at this batch's overrun records.
Napi::Value LiveStore::ApplyEvents(const Napi::CallbackInfo& info) {
  auto buf = info[0].As<Napi::Buffer<uint8_t>>();
  bool replay = Truthy(info[1]);
  Shared& s = store_->shared;
  double lost = 0;
  Record copy;
  // Read in place when the buffer is aligned (it is malloc'd): one copy less per event.
  bool aligned = reinterpret_cast<uintptr_t>(buf.Data()) % alignof(Record) == 0;
  for (size_t off = 0, next; off + kRecordSize <= buf.Length(); off = next) {
    if (!aligned) std::memcpy(&copy, buf.Data() + off, kRecordSize);
    const Record& r = aligned ? *reinterpret_cast<const Record*>(buf.Data() + off) : copy;
    next = off + kRecordSize + r.tailBytes;
    if (r.kind == kKindOverrun) {
      lost += r.lost;
      if (!replay) s.lost += r.lost;
      continue;
    }
    if (r.kind < kKindNew || r.kind > kKindDestroy) continue;
    if (!replay) s.events[r.kind - kKindNew]++;
    if (!store_->Apply(r, TailAt(buf, off, r))) s.failed = true;
  }
  return Napi::Number::New(info.Env(), lost);
}

Napi::Value LiveStore::Counters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Shared& s = store_->shared;
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", static_cast<double>(store_->size()));
  o.Set("assured", static_cast<double>(s.assured));
  o.Set("unwatched", static_cast<double>(s.unwatched));
  o.Set("new", static_cast<double>(s.events[0]));
  o.Set("update", static_cast<double>(s.events[1]));
  o.Set("destroy", static_cast<double>(s.events[2]));
  o.Set("lost", static_cast<double>(s.lost));
  o.Set("failed", s.failed);
  return o;
}

Napi::Value LiveStore::Groups(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  for (const auto& [key, g] : store_->shared.groups) {
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
  const auto& sources = store_->shared.sources;
  Napi::Array out = Napi::Array::New(env);
  for (uint32_t i : Largest(sources, info[0].As<Napi::Number>().Uint32Value(), SourceBefore)) {
    const SourceCount& c = sources[i];
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
  const auto& destinations = store_->shared.destinations;
  Napi::Array out = Napi::Array::New(env);
  for (uint32_t i : Largest(destinations, info[0].As<Napi::Number>().Uint32Value(), DestinationBefore)) {
    const DestinationCount& c = destinations[i];
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

// get(key) / find(key): key { family, protocol, src, dst, sport?, dport?, icmpType?, icmpCode?, icmpId?,
// zone?, origZone?, replyZone? }; find() also tries it as a reply tuple (the entry's zone, no directional zones).
Napi::Value LiveStore::Lookup(const Napi::CallbackInfo& info, bool orReply) {
  Napi::Env env = info.Env();
  if (!store_->shared.entries || !info[0].IsObject()) return env.Null();
  Napi::Object spec = info[0].As<Napi::Object>();
  Record probe;
  std::memset(&probe, 0, sizeof(probe));
  probe.family = static_cast<uint8_t>(U32(spec, "family", kAfInet));
  probe.protocol = static_cast<uint8_t>(U32(spec, "protocol", 0));
  probe.zone = static_cast<uint16_t>(U32(spec, "zone", 0));
  Napi::Value src = Prop(spec, "src"), dst = Prop(spec, "dst");
  if (!src.IsBuffer() || !dst.IsBuffer()) return env.Null();
  auto s = src.As<Napi::Buffer<uint8_t>>(), d = dst.As<Napi::Buffer<uint8_t>>();
  std::memcpy(probe.orig.src, s.Data(), std::min<size_t>(16, s.Length()));
  std::memcpy(probe.orig.dst, d.Data(), std::min<size_t>(16, d.Length()));
  if (Prop(spec, "sport").IsNumber()) {
    probe.present |= kHasPorts;
    probe.orig.sport = static_cast<uint16_t>(U32(spec, "sport", 0));
    probe.orig.dport = static_cast<uint16_t>(U32(spec, "dport", 0));
  } else if (Prop(spec, "icmpType").IsNumber()) {
    probe.present |= kHasIcmp;
    probe.orig.icmpType = static_cast<uint8_t>(U32(spec, "icmpType", 0));
    probe.orig.icmpCode = static_cast<uint8_t>(U32(spec, "icmpCode", 0));
    probe.orig.icmpId = static_cast<uint16_t>(U32(spec, "icmpId", 0));
  }
  if (Prop(spec, "origZone").IsNumber()) {
    probe.present |= kHasOrigZone;
    probe.origZone = static_cast<uint16_t>(U32(spec, "origZone", 0));
  }
  if (Prop(spec, "replyZone").IsNumber()) {
    probe.present |= kHasReplyZone;
    probe.replyZone = static_cast<uint16_t>(U32(spec, "replyZone", 0));
  }
  int64_t at = store_->Find(probe, orReply);
  if (at < 0) return env.Null();
  RecordBatch out;
  store_->AddTo(static_cast<size_t>(at), &out);
  return RecordsToBuffer(env, out.data(), out.bytes());
}

Napi::Value LiveStore::Get(const Napi::CallbackInfo& info) { return Lookup(info, false); }

// The entry whose original, or else reply, tuple is this one.
Napi::Value LiveStore::Find(const Napi::CallbackInfo& info) { return Lookup(info, true); }

// records(start, max): up to `max` entries from position `start`, as records; null past the end.
Napi::Value LiveStore::Records(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t start = info[0].As<Napi::Number>().Uint32Value(), max = info[1].As<Napi::Number>().Uint32Value();
  if (!store_->shared.entries || start >= store_->size()) return env.Null();
  size_t n = std::min(max, store_->size() - start);
  RecordBatch out;
  out.Reserve(n);
  for (size_t k = 0; k < n; ++k) store_->AddTo(start + k, &out);
  return RecordsToBuffer(env, out.data(), out.bytes());
}

// Gives the process's free heap pages back to the system: after a burst, the
// event reader's queue (up to queueLimit records) leaves them free but
// resident, in whichever arena its thread allocated from.
Napi::Value LiveStore::TrimHeap(const Napi::CallbackInfo& info) {
  malloc_trim(0);
  return info.Env().Undefined();
}

// Frees every array at once (close()): the object may live on until collected.
Napi::Value LiveStore::Release(const Napi::CallbackInfo& info) {
  store_->Release();
  return info.Env().Undefined();
}

}  // namespace ct
