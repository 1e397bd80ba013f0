#include "process.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace ct {
namespace {

// Bounds on what is remembered: enough for every requester of a busy host.
constexpr size_t kMaxRemembered = 4096;

bool ReadLink(const char* path, std::string* out) {
  char buf[4096];
  ssize_t n = ::readlink(path, buf, sizeof(buf) - 1);
  if (n < 0) return false;
  out->assign(buf, static_cast<size_t>(n));
  return true;
}

// "socket:[12345]" -> 12345, 0 for anything else.
uint64_t SocketInode(const std::string& link) {
  if (link.compare(0, 8, "socket:[") != 0) return 0;
  return std::strtoull(link.c_str() + 8, nullptr, 10);
}

// The executable's file name, as conntrack -E prints it. A process that is
// exiting has lost its exe link already but keeps its comm until reaped.
std::string ExeName(uint32_t pid) {
  std::string exe;
  std::string path = "/proc/" + std::to_string(pid) + "/exe";
  if (!ReadLink(path.c_str(), &exe)) {
    UniqueFd fd(::open(("/proc/" + std::to_string(pid) + "/comm").c_str(), O_RDONLY | O_CLOEXEC));
    char comm[64];
    ssize_t n = fd ? ::read(fd.get(), comm, sizeof(comm)) : -1;
    if (n <= 0) return "";
    std::string name(comm, static_cast<size_t>(n));
    while (!name.empty() && name.back() == '\n') name.pop_back();
    return name;
  }
  const std::string deleted = " (deleted)";
  if (exe.size() > deleted.size() && exe.compare(exe.size() - deleted.size(), deleted.size(), deleted) == 0)
    exe.resize(exe.size() - deleted.size());
  size_t slash = exe.rfind('/');
  std::string name = slash == std::string::npos ? exe : exe.substr(slash + 1);
  return name.empty() ? "?" : name;
}

}  // namespace

int ProcessResolver::Open(int nsFd) {
  NetnsGuard guard(nsFd);
  if (!guard.ok()) return guard.error();
  // The file is bound to the namespace it was opened in: later reads need no setns.
  int fd = ::open("/proc/thread-self/net/netlink", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  table_ = UniqueFd(fd);
  return 0;
}

bool ProcessResolver::ReadPortTable(std::unordered_map<uint32_t, uint64_t>* inodeOfPort) {
  if (!table_ || ::lseek(table_.get(), 0, SEEK_SET) < 0) return false;
  std::string text;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(table_.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  // Columns: sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode; "Pid" is the port id.
  size_t pos = text.find('\n');
  while (pos != std::string::npos && pos + 1 < text.size()) {
    size_t end = text.find('\n', pos + 1);
    std::string line = text.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
    pos = end;
    std::vector<std::string> f;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && line[i] == ' ') ++i;
      size_t j = i;
      while (j < line.size() && line[j] != ' ') ++j;
      if (j > i) f.emplace_back(line, i, j - i);
      i = j;
    }
    if (f.size() < 10) continue;
    uint32_t port = static_cast<uint32_t>(std::strtoul(f[2].c_str(), nullptr, 10));
    uint64_t inode = std::strtoull(f.back().c_str(), nullptr, 10);
    if (port && inode) (*inodeOfPort)[port] = inode;
  }
  return true;
}

void ProcessResolver::ScanProcesses(std::unordered_map<uint64_t, uint32_t>* wanted) {
  DIR* proc = ::opendir("/proc");
  if (!proc) return;
  std::vector<uint32_t> pids;
  while (struct dirent* d = ::readdir(proc)) {
    char* end;
    unsigned long pid = std::strtoul(d->d_name, &end, 10);
    if (*end == '\0' && pid > 0) pids.push_back(static_cast<uint32_t>(pid));
  }
  ::closedir(proc);
  // Newest first: the requester behind an event is usually a process that just started.
  std::sort(pids.rbegin(), pids.rend());
  size_t missing = wanted->size();
  for (uint32_t pid : pids) {
    if (missing == 0) break;
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* fds = ::opendir(dir.c_str());
    if (!fds) continue;
    while (struct dirent* d = ::readdir(fds)) {
      if (d->d_name[0] == '.') continue;
      std::string link;
      if (!ReadLink((dir + "/" + d->d_name).c_str(), &link)) continue;
      uint64_t inode = SocketInode(link);
      auto it = inode ? wanted->find(inode) : wanted->end();
      if (it == wanted->end() || it->second != 0) continue;
      it->second = pid;
      if (--missing == 0) break;
    }
    ::closedir(fds);
  }
}

void ProcessResolver::Resolve(Record* recs, size_t n, bool reapedFallback) {
  bool any = false;
  for (size_t i = 0; i < n && !any; ++i) any = recs[i].portid != 0;
  if (!any) return;
  std::unordered_map<uint32_t, uint64_t> inodeOfPort;
  if (!ReadPortTable(&inodeOfPort)) return;
  std::unordered_map<uint64_t, uint32_t> unknown;  // inode -> pid still to find
  std::vector<uint32_t> closedPorts;                // requesters whose socket is gone already
  for (size_t i = 0; i < n; ++i) {
    if (!recs[i].portid) continue;
    auto p = inodeOfPort.find(recs[i].portid);
    if (p == inodeOfPort.end()) {
      if (reapedFallback) closedPorts.push_back(recs[i].portid);
    }
    else if (!pidOfInode_.count(p->second)) unknown.emplace(p->second, 0);
  }
  // The socket closed before we looked (a `conntrack -I` exits right after
  // its ACK). Netlink autobind gives a process's first socket its pid as the
  // port id, and a process that is still being reaped keeps its /proc entry:
  // name it from there, as long as it exists.
  for (uint32_t port : closedPorts) {
    std::lock_guard<std::mutex> lock(mu_);
    if (names_.count(port)) continue;
    std::string name = ExeName(port);
    if (!name.empty()) names_[port] = name;
  }
  if (!unknown.empty()) {
    ScanProcesses(&unknown);
    if (pidOfInode_.size() > kMaxRemembered) pidOfInode_.clear();
    std::lock_guard<std::mutex> lock(mu_);
    if (names_.size() > kMaxRemembered) names_.clear();
    for (const auto& [inode, pid] : unknown) {
      if (!pid) continue;  // the socket closed before we looked: its owner is gone
      pidOfInode_[inode] = pid;
      std::string name = ExeName(pid);
      if (!name.empty()) names_[pid] = name;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (!recs[i].portid) continue;
    auto p = inodeOfPort.find(recs[i].portid);
    if (p == inodeOfPort.end()) {
      if (!reapedFallback) continue;
      std::lock_guard<std::mutex> lock(mu_);
      if (names_.count(recs[i].portid)) recs[i].pid = recs[i].portid;
      continue;
    }
    auto o = pidOfInode_.find(p->second);
    if (o != pidOfInode_.end()) recs[i].pid = o->second;
  }
}

std::string ProcessResolver::NameOf(uint32_t pid) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = names_.find(pid);
  return it == names_.end() ? std::string() : it->second;
}

}  // namespace ct
