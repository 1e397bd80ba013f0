// A NETLINK_NETFILTER socket created inside a namespace, owned RAII-style.
#pragma once

#include <libmnl/libmnl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace ct {

class NlSocket {
 public:
  // Creates and binds a socket inside nsFd (-1: the calling thread's
  // namespace). `groups` is a multicast group bitmask (0 for requests).
  static int Open(int nsFd, unsigned groups, std::unique_ptr<NlSocket>* out);
  ~NlSocket();
  NlSocket(const NlSocket&) = delete;
  NlSocket& operator=(const NlSocket&) = delete;

  int fd() const { return mnl_socket_get_fd(nl_); }
  uint32_t portid() const { return portid_; }
  uint32_t NextSeq() { return ++seq_; }

  // sendto() the whole buffer. Returns 0 or -errno.
  int Send(const void* buf, size_t len);
  // recv() into buf; returns bytes or -errno (EINTR retried).
  ssize_t Recv(void* buf, size_t len, int flags = 0);

  // Sends one request and reads replies until its ACK/DONE, passing each
  // data message to `onMessage` (may be empty). Returns 0 or -errno from the
  // kernel's NLMSG_ERROR.
  int Transact(struct nlmsghdr* req, const std::function<int(const struct nlmsghdr*)>& onMessage);

  // Raises SO_RCVBUF; tries SO_RCVBUFFORCE first (needs CAP_NET_ADMIN) so
  // the limit is not capped by net.core.rmem_max. Returns the size in effect.
  int SetReceiveBuffer(int bytes);
  // Kernel drop counter of this socket (SO_MEMINFO SK_MEMINFO_DROPS, Linux
  // 4.6+), or -1 when the kernel does not report it.
  int64_t Drops() const;

 private:
  NlSocket() = default;
  struct mnl_socket* nl_ = nullptr;
  uint32_t portid_ = 0;
  uint32_t seq_ = 0;
};

// Size that fits any single netlink read from the kernel (dumps are capped
// at 32 KiB per skb; events are far smaller).
constexpr size_t kRecvBufferSize = 65536;

}  // namespace ct
