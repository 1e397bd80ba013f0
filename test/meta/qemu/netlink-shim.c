/*
 * LD_PRELOAD shim for the arm64 Node under qemu-user (test/meta/arm64.test.ts).
 *
 * qemu-user refuses socket(AF_NETLINK, ..., NETLINK_NETFILTER) with
 * EPROTONOSUPPORT: its do_socket() lets through only NETLINK_ROUTE,
 * NETLINK_KOBJECT_UEVENT and NETLINK_AUDIT, the families whose messages it can
 * byte-swap. Both machines here are little-endian, so nothing needs swapping:
 * this shim asks a host-side broker (netlink-broker.c) to create the socket in
 * the calling thread's network namespace and receives it over SCM_RIGHTS.
 * Everything after socket() (bind, setsockopt, sendmsg, recvmsg, poll) is the
 * arm64 addon's own code, emulated by qemu.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef int (*socket_fn)(int, int, int);

int socket(int domain, int type, int protocol) {
  static socket_fn real;
  if (!real) real = (socket_fn)dlsym(RTLD_NEXT, "socket");
  const char* broker = getenv("CONNTRACK_NETLINK_BROKER");
  if (domain != AF_NETLINK || protocol != NETLINK_NETFILTER || !broker) return real(domain, type, protocol);

  int ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (ns < 0) return -1;
  int conn = real(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  strncpy(addr.sun_path, broker, sizeof addr.sun_path - 1);
  int result = -1, err = EIO;
  if (conn >= 0 && connect(conn, (struct sockaddr*)&addr, sizeof addr) == 0) {
    int request[2] = {type, protocol};
    char control[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {request, sizeof request};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &ns, sizeof(int));
    if (sendmsg(conn, &msg, 0) == sizeof request) {
      int reply = 0;
      char rcontrol[CMSG_SPACE(sizeof(int))] = {0};
      struct iovec riov = {&reply, sizeof reply};
      struct msghdr rmsg = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = rcontrol, .msg_controllen = sizeof rcontrol};
      if (recvmsg(conn, &rmsg, MSG_CMSG_CLOEXEC) == sizeof reply) {
        struct cmsghdr* rc = CMSG_FIRSTHDR(&rmsg);
        if (reply == 0 && rc && rc->cmsg_type == SCM_RIGHTS) memcpy(&result, CMSG_DATA(rc), sizeof(int));
        else err = reply ? reply : EIO;
      }
    }
  }
  if (conn >= 0) close(conn);
  close(ns);
  if (result < 0) errno = err;
  return result;
}
