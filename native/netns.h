// Network namespaces: the handle keeps an fd of its target namespace; a
// worker thread enters it only for as long as it takes to create a socket or
// open a /proc file, then returns (RAII). The JS main thread never moves.
#pragma once

#include <cstdint>
#include <string>

namespace ct {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  ~UniqueFd();
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Opens a namespace file (/run/netns/NAME or /proc/PID/ns/net) and checks it
// really is a network namespace. Returns 0 or -errno.
int OpenNetns(const std::string& path, UniqueFd* out);

// Enters `nsFd` on the calling thread for the guard's lifetime. nsFd < 0 means
// "stay where you are". Check ok() / error() after construction.
class NetnsGuard {
 public:
  explicit NetnsGuard(int nsFd);
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;
  ~NetnsGuard();
  bool ok() const { return error_ == 0; }
  int error() const { return error_; }

 private:
  UniqueFd original_;
  int error_ = 0;
  bool entered_ = false;
};

// Reads or writes a whole (small) file as seen from inside the namespace:
// /proc/sys/net/* and /proc/thread-self/net/* resolve per namespace.
int ReadFileInNetns(int nsFd, const std::string& path, std::string* out);
int WriteFileInNetns(int nsFd, const std::string& path, const std::string& data);
// stat(2) inside the namespace: /proc/sys shows each namespace's own modes
// (host-wide sysctls are read-only outside the initial namespace).
int StatModeInNetns(int nsFd, const std::string& path, uint32_t* mode);

// A namespace's identity: its nsfs device and inode (what stat(2) of
// /run/netns/NAME shows, and the number "table full in netns N" prints), and
// the inode's change time. Read from the fd itself, so it names the namespace
// the handle holds, whatever its path resolves to now.
// Inode numbers of namespaces that are gone are reused: the change time tells
// a namespace from a later one with its number.
struct NetnsIdentity {
  uint64_t dev = 0;  // as makedev() packs it, the form stat(2) and Node's fs.stat give
  uint64_t ino = 0;
  int64_t ctimeSec = 0;
  uint32_t ctimeNsec = 0;
};
// nsFd < 0: the process's own namespace (/proc/self/ns/net). Returns 0 or -errno.
int IdentifyNetns(int nsFd, NetnsIdentity* out);

}  // namespace ct
