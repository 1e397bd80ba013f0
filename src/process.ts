/**
 * Which process owns a netlink port id: events caused by a request
 * (conntrack -I/-D/-F, another library) carry the requester's port id.
 * native/process.cc finds it the way conntrack -E finds its `progname=`:
 * the namespace's /proc/net/netlink gives the socket inode, the processes'
 * open sockets give the pid.
 */
export interface PortOwner {
  pid: number;
  /** The executable's file name, as conntrack -E prints it. */
  name: string;
}
