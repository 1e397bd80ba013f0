#include "netns.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <linux/magic.h>
#include <linux/stat.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace ct {

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

int OpenNetns(const std::string& path, UniqueFd* out) {
  // O_PATH opens nothing: a FIFO cannot block us, a device is not touched.
  // Only once the file is known to be a namespace (nsfs) is it opened for real.
  int pathFd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
  if (pathFd < 0) return -errno;
  UniqueFd pathOnly(pathFd);
  struct statfs fs;
  if (::fstatfs(pathFd, &fs) < 0) return -errno;
  if (fs.f_type != NSFS_MAGIC) return -EINVAL;
  std::string viaFd = "/proc/self/fd/" + std::to_string(pathFd);
  int fd = ::open(viaFd.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  UniqueFd owned(fd);
  // NS_GET_NSTYPE (Linux 4.11) tells a network namespace from the other kinds.
  // Where it cannot be asked (ENOTTY: an older kernel; ENOSYS: qemu-user,
  // which passes on no ioctl it does not know), setns(fd, CLONE_NEWNET) makes
  // the same check when the handle first enters the namespace.
  int type = ::ioctl(fd, NS_GET_NSTYPE);
  if (type < 0 && errno != ENOTTY && errno != ENOSYS) return -errno;
  if (type >= 0 && type != CLONE_NEWNET) return -EINVAL;
  *out = std::move(owned);
  return 0;
}

NetnsGuard::NetnsGuard(int nsFd) {
  if (nsFd < 0) return;
  int self = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) {
    error_ = -errno;
    return;
  }
  original_ = UniqueFd(self);
  if (::setns(nsFd, CLONE_NEWNET) < 0) {
    error_ = -errno;
    return;
  }
  entered_ = true;
}

NetnsGuard::~NetnsGuard() {
  if (!entered_) return;
  // Failing to return would leave a thread-pool thread in a foreign namespace
  // and silently misdirect every later request: refuse to continue.
  if (::setns(original_.get(), CLONE_NEWNET) < 0) std::abort();
}

int ReadFileInNetns(int nsFd, const std::string& path, std::string* out) {
  UniqueFd fd;
  {
    NetnsGuard guard(nsFd);
    if (!guard.ok()) return guard.error();
    int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (raw < 0) return -errno;
    fd = UniqueFd(raw);
  }
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
    if (out->size() > (64u << 20)) return -EFBIG;
  }
  return 0;
}

int StatModeInNetns(int nsFd, const std::string& path, uint32_t* mode) {
  NetnsGuard guard(nsFd);
  if (!guard.ok()) return guard.error();
  // statx(2) by syscall: glibc's stat() symbol dates from 2.33 and would
  // raise the prebuilt addon's glibc floor (scripts/abi-floor.mjs).
  struct statx stx;
  if (::syscall(SYS_statx, AT_FDCWD, path.c_str(), 0, STATX_MODE, &stx) < 0) return -errno;
  *mode = stx.stx_mode;
  return 0;
}

int IdentifyNetns(int nsFd, NetnsIdentity* out) {
  // statx(2) by syscall, as above; AT_EMPTY_PATH stats the fd itself.
  struct statx stx;
  long rc = nsFd >= 0 ? ::syscall(SYS_statx, nsFd, "", AT_EMPTY_PATH, STATX_INO | STATX_CTIME, &stx)
                      : ::syscall(SYS_statx, AT_FDCWD, "/proc/self/ns/net", 0, STATX_INO | STATX_CTIME, &stx);
  if (rc < 0) return -errno;
  // glibc's makedev(), written out: its symbol would be one more glibc reference.
  uint64_t major = stx.stx_dev_major, minor = stx.stx_dev_minor;
  out->dev = ((major & 0xfffff000ull) << 32) | ((major & 0xfffull) << 8) | ((minor & 0xffffff00ull) << 12) | (minor & 0xffull);
  out->ino = stx.stx_ino;
  out->ctimeSec = stx.stx_ctime.tv_sec;
  out->ctimeNsec = stx.stx_ctime.tv_nsec;
  return 0;
}

int WriteFileInNetns(int nsFd, const std::string& path, const std::string& data) {
  UniqueFd fd;
  {
    NetnsGuard guard(nsFd);
    if (!guard.ok()) return guard.error();
    int raw = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (raw < 0) return -errno;
    fd = UniqueFd(raw);
  }
  ssize_t n = ::write(fd.get(), data.data(), data.size());
  if (n < 0) return -errno;
  if (static_cast<size_t>(n) != data.size()) return -EIO;
  return 0;
}

}  // namespace ct
