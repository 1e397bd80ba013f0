// Writes real nfnetlink_conntrack messages from a namespace's table into a
// fuzz corpus: one file per message plus whole recv() buffers.
// Usage: capture_corpus NETNS_PATH OUT_DIR
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <sys/socket.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "../decode.h"
#include "../netns.h"
#include "../request.h"
#include "../socket.h"

static void WriteFile(const std::string& path, const void* data, size_t len) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return;
  std::fwrite(data, 1, len, f);
  std::fclose(f);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s NETNS_PATH OUT_DIR\n", argv[0]);
    return 64;
  }
  ct::UniqueFd ns;
  if (ct::OpenNetns(argv[1], &ns) < 0) return 66;
  std::unique_ptr<ct::NlSocket> sock;
  if (ct::NlSocket::Open(ns.get(), 0, &sock) < 0) return 1;
  ct::MessageBuffer msg;
  struct nlmsghdr* nlh = msg.Begin(IPCTNL_MSG_CT_GET, NLM_F_DUMP, 0, sock->NextSeq());
  msg.End(nlh);
  if (sock->Send(msg.data(), msg.size()) < 0) return 1;
  std::vector<char> buf(ct::kRecvBufferSize);
  int messages = 0, buffers = 0;
  for (bool done = false; !done;) {
    ssize_t n = sock->Recv(buf.data(), buf.size());
    if (n <= 0) break;
    if (buffers < 4) WriteFile(std::string(argv[2]) + "/buffer-" + std::to_string(buffers++), buf.data(), static_cast<size_t>(n));
    ct::ForEachMessage(buf.data(), static_cast<size_t>(n), [&](const struct nlmsghdr* m) {
      if (m->nlmsg_type == NLMSG_DONE || m->nlmsg_type == NLMSG_ERROR) {
        done = true;
        return false;
      }
      if (messages < 64) WriteFile(std::string(argv[2]) + "/message-" + std::to_string(messages++), m, m->nlmsg_len);
      return true;
    });
  }
  std::printf("%d messages, %d buffers\n", messages, buffers);
  return 0;
}
