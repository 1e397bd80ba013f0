// For conntrack/testing: a Worker thread that makes a network namespace for
// itself. Only the calling thread moves (setns/unshare act on
// the thread), so a Worker's sockets and the children it spawns live in the
// namespace while the process's main thread and the libuv pool stay where
// they are. The main thread refuses: it must never move (see netns.h).
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include <napi.h>

#include "convert.h"
#include "js_entry.h"
#include "netns.h"

namespace ct {

namespace {

bool OnMainThread() { return ::syscall(SYS_gettid) == ::getpid(); }

// Sets lo up in the calling thread's namespace (what `ip link set lo up`
// does), with the ioctl every kernel has, so no `ip` binary is needed.
int LoopbackUp() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  UniqueFd sock(fd);
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) return -errno;
  ifr.ifr_flags |= IFF_UP;
  if (::ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) return -errno;
  return 0;
}

// The calling thread's namespace as a path other processes can open while
// the thread lives (ctmon --netns, Conntrack.open).
std::string ThreadNetnsPath() {
  return "/proc/" + std::to_string(::getpid()) + "/task/" + std::to_string(::syscall(SYS_gettid)) + "/ns/net";
}

// unshareThreadNetns(): a new network namespace for the calling (Worker)
// thread, lo up; returns its /proc path.
Napi::Value UnshareThreadNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (OnMainThread()) {
    ErrnoError(env, EBUSY, "unshareThreadNetns (main thread)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (::unshare(CLONE_NEWNET) < 0) {
    ErrnoError(env, errno, "unshare").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int err = LoopbackUp();
  if (err < 0) {
    ErrnoError(env, -err, "lo up").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::String::New(env, ThreadNetnsPath());
}

}  // namespace

void InitThreadNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("unshareThreadNetns", Napi::Function::New(env, JsEntry<UnshareThreadNetns>, "unshareThreadNetns"));
}

}  // namespace ct
