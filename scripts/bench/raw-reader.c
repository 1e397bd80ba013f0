/*
 * The floor for any conntrack event consumer: a libmnl reader that joins the
 * DESTROY group (or NEW with "new"), receives and counts messages, and
 * decodes nothing. Prints "<messages> <ENOBUFS errors>" on SIGTERM.
 * Built by scripts/bench/flows.mjs: cc -O2 raw-reader.c -lmnl.
 * Usage: raw-reader [destroy|new] [receive buffer bytes]
 */
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
  unsigned group = argc > 1 && strcmp(argv[1], "new") == 0 ? NFNLGRP_CONNTRACK_NEW : NFNLGRP_CONNTRACK_DESTROY;
  int bytes = argc > 2 ? atoi(argv[2]) : 256 << 20;
  struct mnl_socket *nl = mnl_socket_open(NETLINK_NETFILTER);
  if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) { perror("mnl_socket"); return 1; }
  int fd = mnl_socket_get_fd(nl);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) < 0) perror("SO_RCVBUFFORCE");
  if (mnl_socket_setsockopt(nl, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) { perror("membership"); return 1; }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term; /* no SA_RESTART: recv returns EINTR */
  sigaction(SIGTERM, &sa, NULL);
  fprintf(stderr, "ready\n");
  static char buf[1 << 16];
  long messages = 0, enobufs = 0;
  while (!stop) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == ENOBUFS) enobufs++;
      else if (errno != EINTR) { perror("recv"); break; }
      continue;
    }
    int len = (int)n;
    for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) messages++;
  }
  printf("%ld %ld\n", messages, enobufs);
  mnl_socket_close(nl);
  return 0;
}
