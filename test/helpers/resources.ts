/** What this process holds, from /proc/self: a test's check that a stream, handle or Worker left nothing behind. */
import { readdirSync, readlinkSync } from 'node:fs';

/** Open sockets (netlink and any other). */
export function sockets(): number {
  return readdirSync('/proc/self/fd').filter((f) => {
    try {
      return readlinkSync(`/proc/self/fd/${f}`).startsWith('socket:');
    } catch {
      return false; // closed while we looked
    }
  }).length;
}

/** Threads of this process (the event readers' among them). */
export function threads(): number {
  return readdirSync('/proc/self/task').length;
}
