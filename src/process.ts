/**
 * Which process owns a netlink port id: events caused by a request
 * (conntrack -I/-D/-F, another library) carry the requester's port id.
 * The port is looked up in the namespace's /proc/net/netlink (by inode),
 * then among the processes' open sockets, as conntrack -E does for its
 * `progname=`.
 */
import { readdir, readlink } from 'node:fs/promises';
import { basename } from 'node:path';

export interface PortOwner {
  pid: number;
  /** The executable's file name, as conntrack -E prints it. */
  name: string;
}

/** Parses /proc/net/netlink into port id -> socket inode. */
export function parseNetlinkTable(text: string): Map<number, number> {
  const ports = new Map<number, number>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const port = Number(f[2]);
    const inode = Number(f[f.length - 1]);
    if (port && inode) ports.set(port, inode);
  }
  return ports;
}

/** Finds the process holding socket inode `inode`, or undefined. */
export async function findSocketOwner(inode: number): Promise<PortOwner | undefined> {
  const target = `socket:[${inode}]`;
  const pids = (await readdir('/proc')).filter((d) => /^\d+$/.test(d));
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = await readdir(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or not ours to read
    }
    for (const fd of fds) {
      const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (link === target) {
        const exe = await readlink(`/proc/${pid}/exe`).catch(() => '');
        return { pid: Number(pid), name: basename(exe.replace(/ \(deleted\)$/, '')) || '?' };
      }
    }
  }
  return undefined;
}
