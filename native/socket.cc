#include "socket.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netns.h"

namespace ct {

int NlSocket::Open(int nsFd, unsigned groups, std::unique_ptr<NlSocket>* out) {
  std::unique_ptr<NlSocket> s(new NlSocket());
  {
    NetnsGuard guard(nsFd);
    if (!guard.ok()) return guard.error();
    s->nl_ = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
    if (!s->nl_) return -errno;
  }
  if (mnl_socket_bind(s->nl_, groups, MNL_SOCKET_AUTOPID) < 0) return -errno;
  s->portid_ = mnl_socket_get_portid(s->nl_);
  // Errors carry only the header of the failed request, not the request:
  // keeps a batch of failed deletes from overflowing the receive buffer.
  int one = 1;
  setsockopt(s->fd(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  *out = std::move(s);
  return 0;
}

NlSocket::~NlSocket() {
  if (nl_) mnl_socket_close(nl_);
}

int NlSocket::Send(const void* buf, size_t len) {
  for (;;) {
    ssize_t n = mnl_socket_sendto(nl_, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    return 0;
  }
}

ssize_t NlSocket::Recv(void* buf, size_t len, int flags) {
  for (;;) {
    ssize_t n = ::recv(fd(), buf, len, flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    return n;
  }
}

int NlSocket::Transact(struct nlmsghdr* req, const std::function<int(const struct nlmsghdr*)>& onMessage) {
  req->nlmsg_seq = NextSeq();
  req->nlmsg_flags |= NLM_F_ACK;
  uint32_t seq = req->nlmsg_seq;
  int rc = Send(req, req->nlmsg_len);
  if (rc < 0) return rc;
  std::vector<char> buf(kRecvBufferSize);
  for (;;) {
    ssize_t n = Recv(buf.data(), buf.size());
    if (n < 0) return static_cast<int>(n);
    int result = 1;  // 1 = keep reading
    const char* p = buf.data();
    size_t left = static_cast<size_t>(n);
    const struct nlmsghdr* nlh = reinterpret_cast<const struct nlmsghdr*>(p);
    while (result == 1 && mnl_nlmsg_ok(nlh, static_cast<int>(left))) {
      if (nlh->nlmsg_seq != seq || nlh->nlmsg_pid != portid_) {
        // A stale reply to an earlier request on this socket: skip it.
      } else if (nlh->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr* err = static_cast<const struct nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
        if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct nlmsgerr))) return -EBADMSG;
        result = err->error;  // 0 = ACK, <0 = -errno
      } else if (nlh->nlmsg_type == NLMSG_DONE) {
        result = 0;
      } else if (nlh->nlmsg_type >= NLMSG_MIN_TYPE && onMessage) {
        int cb = onMessage(nlh);
        if (cb < 0) result = cb;
      }
      int l = static_cast<int>(left);
      nlh = mnl_nlmsg_next(nlh, &l);
      left = static_cast<size_t>(l);
    }
    if (result <= 0) {
      // Dumps end with DONE and then an ACK for NLM_F_ACK; drain the ACK so
      // the socket is clean for the next request.
      if (result == 0 && (req->nlmsg_flags & NLM_F_DUMP)) {
        char tail[256];
        Recv(tail, sizeof(tail), MSG_DONTWAIT);
      }
      return result;
    }
  }
}

int NlSocket::SetReceiveBuffer(int bytes) {
  if (setsockopt(fd(), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) < 0) {
    setsockopt(fd(), SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  }
  int actual = 0;
  socklen_t len = sizeof(actual);
  getsockopt(fd(), SOL_SOCKET, SO_RCVBUF, &actual, &len);
  return actual;
}

int64_t NlSocket::Drops() const {
  uint32_t mem[SK_MEMINFO_VARS] = {0};
  socklen_t len = sizeof(mem);
  if (getsockopt(mnl_socket_get_fd(nl_), SOL_SOCKET, SO_MEMINFO, mem, &len) < 0) return -1;
  if (len <= SK_MEMINFO_DROPS * sizeof(uint32_t)) return -1;
  return mem[SK_MEMINFO_DROPS];
}

}  // namespace ct
