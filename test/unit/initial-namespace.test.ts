/**
 * isInitialNamespace() on synthetic /proc readings: the kernel's fixed inode,
 * PID 1 as the host's init or a container's, a hidden PID 1, and the mode of
 * nf_conntrack_max. No root, no kernel.
 */
import { describe, expect, it } from 'vitest';
import { isInitialNamespace, PROC_NET_INIT_INO, PROC_PID_INIT_INO, type NamespaceProbes } from '../../src/initial-namespace.js';

const HOST = { dev: 4, inode: 4026531992 };
const CONTAINER = { dev: 4, inode: 4026532300 };
const CONTAINER_PID = { dev: 4, inode: 4026532301 };

/** /proc as seen from a process in namespace `self`, with PID 1 in `pid1` (undefined: hidden) and nf_conntrack_max of mode `mode`. */
function proc(self: typeof HOST, pid1: { pid: typeof HOST; net: typeof HOST } | undefined, mode: number | undefined): NamespaceProbes {
  const links: Record<string, typeof HOST | undefined> = { '/proc/self/ns/net': self, '/proc/1/ns/pid': pid1?.pid, '/proc/1/ns/net': pid1?.net };
  const denied = (): Error => Object.assign(new Error('EACCES'), { code: 'EACCES' });
  return {
    nsfs: async (path) => links[path] ?? Promise.reject(denied()),
    maxMode: async () => (mode === undefined ? Promise.reject(denied()) : 0o100000 | mode),
  };
}
const hostInit = { pid: { dev: 4, inode: PROC_PID_INIT_INO }, net: HOST };
const containerInit = (net: typeof HOST) => ({ pid: CONTAINER_PID, net });

describe('isInitialNamespace', () => {
  it('the kernel\'s fixed inode for the initial network namespace (Linux 6.18) is enough, whatever /proc shows', async () => {
    expect(await isInitialNamespace({ dev: 4, inode: PROC_NET_INIT_INO }, proc(CONTAINER, undefined, undefined))).toBe(true);
  });
  it('PID 1 is the host\'s init: the namespace of PID 1, and no other', async () => {
    expect(await isInitialNamespace(HOST, proc(HOST, hostInit, 0o444))).toBe(true); // a read-only /proc/sys changes nothing
    expect(await isInitialNamespace(CONTAINER, proc(HOST, hostInit, 0o644))).toBe(false);
    expect(await isInitialNamespace({ dev: 5, inode: HOST.inode }, proc(HOST, hostInit, 0o644))).toBe(false);
  });
  it('PID 1 is a container\'s init: its namespace proves nothing; the mode of nf_conntrack_max in this process\'s namespace decides', async () => {
    // A container on the host's network (its PID 1 is there too), /proc/sys read-only: the mode is still 0644.
    expect(await isInitialNamespace(HOST, proc(HOST, containerInit(HOST), 0o644))).toBe(true);
    // A container with its own network: PID 1 shares it, and the kernel makes nf_conntrack_max 0444 there.
    expect(await isInitialNamespace(CONTAINER, proc(CONTAINER, containerInit(CONTAINER), 0o444))).toBe(false);
  });
  it('PID 1 hidden: the same mode decides for this process\'s namespace; another namespace, or nothing readable, is not initial', async () => {
    expect(await isInitialNamespace(HOST, proc(HOST, undefined, 0o644))).toBe(true);
    expect(await isInitialNamespace(CONTAINER, proc(HOST, undefined, 0o644))).toBe(false);
    expect(await isInitialNamespace(HOST, proc(HOST, undefined, undefined))).toBe(false);
  });
});
