// The kernel's own cost of following conntrack events: a libmnl reader that
// joins the NEW/UPDATE/DESTROY groups (64 MiB receive buffer, as ours) and
// counts messages, decoding nothing. Exits after `want` messages, or 5 s
// after the last one; prints "messages enobufs cpu_seconds" (its own rusage).
// Built by scripts/bench/live-table.mjs; run inside the namespace.
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>

int main(int argc, char** argv) {
  long want = argc > 1 ? atol(argv[1]) : 0;
  struct mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
  if (!nl || mnl_socket_bind(nl, NF_NETLINK_CONNTRACK_NEW | NF_NETLINK_CONNTRACK_UPDATE | NF_NETLINK_CONNTRACK_DESTROY, MNL_SOCKET_AUTOPID) < 0) {
    perror("netlink");
    return 1;
  }
  int fd = mnl_socket_get_fd(nl), size = 64 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
  printf("ready\n");
  fflush(stdout);
  static char buf[1 << 16];
  long messages = 0, enobufs = 0;
  struct pollfd p = {fd, POLLIN, 0};
  while (messages < want && poll(&p, 1, messages ? 5000 : -1) > 0) {
    int len = (int)recv(fd, buf, sizeof(buf), 0);
    if (len < 0) {
      if (errno == ENOBUFS) enobufs++;
      if (errno == ENOBUFS || errno == EINTR) continue;
      break;
    }
    for (struct nlmsghdr* nlh = (struct nlmsghdr*)buf; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) messages++;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%ld %ld %.6f\n", messages, enobufs, ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
  mnl_socket_close(nl);
  return 0;
}
