// Which process sent the request behind an event: conntrack -E's
// "[USERSPACE] portid=N progname=NAME". The lookup runs on the event reader
// thread as soon as a buffer is read, because the requester (a `conntrack -I`,
// say) often exits right after its request: looked up later, it is gone.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "netns.h"
#include "record.h"

namespace ct {

class ProcessResolver {
 public:
  // Opens the namespace's netlink socket table (/proc/net/netlink as seen
  // from inside `nsFd`, < 0: this namespace). Returns 0 or -errno.
  int Open(int nsFd);
  // Sets `pid` on every record whose portid names a live user-space socket.
  // With `reapedFallback`, a port whose socket is already closed is taken
  // for its owner's pid while that process is still being reaped: right for
  // an event just read (the port existed a moment ago), not for any port id.
  void Resolve(Record* recs, size_t n, bool reapedFallback);
  // The executable's file name of a pid that Resolve() set, "" if unknown.
  // Safe to call from any thread.
  std::string NameOf(uint32_t pid);

 private:
  bool ReadPortTable(std::unordered_map<uint32_t, uint64_t>* inodeOfPort);
  void ScanProcesses(std::unordered_map<uint64_t, uint32_t>* wanted);

  UniqueFd table_;  // /proc/net/netlink of the handle's namespace, re-read from offset 0
  std::unordered_map<uint64_t, uint32_t> pidOfInode_;  // socket inode -> pid (reader thread only)
  std::mutex mu_;
  std::unordered_map<uint32_t, std::string> names_;  // pid -> name, read by JS
};

}  // namespace ct
