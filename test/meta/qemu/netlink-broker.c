/*
 * Host-side half of netlink-shim.c: accepts one request per connection
 * ({type, protocol} plus the caller's network namespace as an fd), creates
 * the netlink socket inside that namespace and sends it back, or an errno.
 * Usage: netlink-broker SOCKET_PATH (prints "ready" once listening).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void serve(int conn, int home) {
  int request[2];
  int ns = -1;
  char control[CMSG_SPACE(sizeof(int))] = {0};
  struct iovec iov = {request, sizeof request};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
  if (recvmsg(conn, &msg, MSG_CMSG_CLOEXEC) != sizeof request) return;
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (c && c->cmsg_type == SCM_RIGHTS) memcpy(&ns, CMSG_DATA(c), sizeof(int));

  int fd = -1, err = 0;
  if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
    err = ns < 0 ? EBADF : errno;
  } else {
    fd = socket(AF_NETLINK, request[0], request[1]);
    if (fd < 0) err = errno;
    if (setns(home, CLONE_NEWNET) != 0) err = errno;
  }
  if (ns >= 0) close(ns);

  char rcontrol[CMSG_SPACE(sizeof(int))] = {0};
  struct iovec riov = {&err, sizeof err};
  struct msghdr reply = {.msg_iov = &riov, .msg_iovlen = 1};
  if (fd >= 0 && err == 0) {
    reply.msg_control = rcontrol;
    reply.msg_controllen = sizeof rcontrol;
    struct cmsghdr* rc = CMSG_FIRSTHDR(&reply);
    rc->cmsg_level = SOL_SOCKET;
    rc->cmsg_type = SCM_RIGHTS;
    rc->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(rc), &fd, sizeof(int));
  }
  sendmsg(conn, &reply, MSG_NOSIGNAL);
  if (fd >= 0) close(fd);
}

int main(int argc, char** argv) {
  if (argc != 2) return 64;
  int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  int srv = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
  unlink(argv[1]);
  if (home < 0 || srv < 0 || bind(srv, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(srv, 16) != 0) {
    perror("netlink-broker");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    int conn = accept4(srv, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) continue;
    serve(conn, home);
    close(conn);
  }
}
