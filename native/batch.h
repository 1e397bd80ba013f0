// Records as JS receives them: each record followed by its string tail
// (record.h), the whole batch one Buffer. Dumps, gets, events, bulk
// outcomes and decodeMessages() all hand JS a RecordBatch's bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "record.h"

namespace ct {

class RecordBatch {
 public:
  void Reserve(size_t records) {
    bytes_.reserve(records * sizeof(Record));
    starts_.reserve(records);
  }
  // `r` and the r.tailBytes bytes of its tail (null when it has none).
  void Add(const Record& r, const void* tail) {
    starts_.push_back(static_cast<uint32_t>(bytes_.size()));
    // insert, not resize: no zero-fill of bytes about to be overwritten.
    const uint8_t* image = reinterpret_cast<const uint8_t*>(&r);
    bytes_.insert(bytes_.end(), image, image + sizeof(Record));
    if (r.tailBytes && tail) {
      const uint8_t* t = static_cast<const uint8_t*>(tail);
      bytes_.insert(bytes_.end(), t, t + r.tailBytes);
    }
  }
  void Add(const Record& r, const std::string& tail) { Add(r, tail.data()); }
  // Record `i` of `from`, with its tail.
  void Add(const RecordBatch& from, size_t i) { Add(from.At(i), from.TailOf(i)); }
  // A copy: the bytes hold a Record's image, not a Record object.
  Record At(size_t i) const {
    Record r;
    std::memcpy(&r, &bytes_[starts_[i]], sizeof(Record));
    return r;
  }
  const uint8_t* TailOf(size_t i) const { return &bytes_[starts_[i] + sizeof(Record)]; }
  // Record `i` and its tail as bytes, as JS receives a single record.
  const uint8_t* BytesOf(size_t i, size_t* len) const {
    *len = (i + 1 < starts_.size() ? starts_[i + 1] : bytes_.size()) - starts_[i];
    return &bytes_[starts_[i]];
  }
  size_t size() const { return starts_.size(); }
  bool empty() const { return starts_.empty(); }
  const uint8_t* data() const { return bytes_.data(); }
  size_t bytes() const { return bytes_.size(); }
  void Clear() {
    bytes_.clear();
    starts_.clear();
  }

 private:
  std::vector<uint8_t> bytes_;
  std::vector<uint32_t> starts_;  // where each record begins in bytes_
};

// A FIFO of records with their tails, held in RecordBatch's layout so the
// front can go to JS as one Buffer's bytes without a copy in between. One
// contiguous vector rather than a std::deque: a deque of 200-byte records
// allocates a node every two records, on the event reader's hot path.
class RecordQueue {
 public:
  void Push(const Record& r, const void* tail) {
    const uint8_t* image = reinterpret_cast<const uint8_t*>(&r);
    bytes_.insert(bytes_.end(), image, image + sizeof(Record));
    if (r.tailBytes && tail) {
      const uint8_t* t = static_cast<const uint8_t*>(tail);
      bytes_.insert(bytes_.end(), t, t + r.tailBytes);
    }
    ++count_;
  }
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  // The first min(n, size()) records: where they begin, and their length in bytes.
  const uint8_t* Front(size_t n, size_t* records, size_t* bytes) const {
    size_t at = head_;
    *records = n < count_ ? n : count_;
    for (size_t i = 0; i < *records; ++i) {
      uint16_t tail;
      std::memcpy(&tail, &bytes_[at + offsetof(Record, tailBytes)], sizeof(tail));
      at += sizeof(Record) + tail;
    }
    *bytes = at - head_;
    return bytes_.data() + head_;
  }
  // Drops what Front() returned. The space is reused: moved down once half
  // is taken (amortised), and given back once a burst has drained.
  void Pop(size_t records, size_t bytes) {
    head_ += bytes;
    count_ -= records;
    if (count_ == 0) {
      Clear();
    } else if (head_ > bytes_.size() / 2) {
      bytes_.erase(bytes_.begin(), bytes_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  void Clear() {
    if (bytes_.capacity() > kKeptBytes) std::vector<uint8_t>().swap(bytes_);
    bytes_.clear();
    head_ = 0;
    count_ = 0;
  }

 private:
  static constexpr size_t kKeptBytes = 1 << 20;  // kept between bursts: a few thousand records
  std::vector<uint8_t> bytes_;
  size_t head_ = 0;  // where the oldest record begins
  size_t count_ = 0;
};

}  // namespace ct
