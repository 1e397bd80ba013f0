/**
 * Real expectations in a test namespace: the kernel's ftp helper assigned by
 * an nftables `ct helper` rule, and a small FTP-like exchange on loopback
 * whose PORT command makes the helper expect a data connection. The master
 * connection stays open until the returned process is killed.
 */
import type { ChildProcess } from 'node:child_process';
import { waitFor, type Netns } from './netns.js';

// The client sends one complete line first: the helper parses a command only after a full line in that direction.
const FTP = `
import net from 'node:net';
const port = Number(process.argv[1]);
const host = process.argv[2];
const srv = net.createServer((s) => { s.write('220 hi\\r\\n'); s.on('data', (d) => s.write(d.toString().startsWith('USER') ? '331 ok\\r\\n' : '200 ok\\r\\n')); });
await new Promise((r) => srv.listen(21, host, r));
const c = net.connect({ port: 21, host, localAddress: '127.0.0.1' });
const reply = () => new Promise((r) => c.once('data', r));
await reply();
c.write('USER x\\r\\n');
await reply();
c.write('PORT 127,0,0,1,' + (port >> 8) + ',' + (port & 255) + '\\r\\n');
await reply();
process.stdout.write('ready\\n');
setInterval(() => {}, 1000); // the master connection stays open until the test kills this
`;

export function ftpHelper(ns: Netns): void {
  ns.exec('nft', ['-f', '-'], [
    'table inet cthelper {',
    '  ct helper ftp-standard { type "ftp" protocol tcp; }',
    '  chain out { type filter hook output priority 0; tcp dport 21 ct helper set "ftp-standard"; }',
    '}',
  ].join('\n'));
}

let servers = 0;

/** Runs the exchange; resolves once the helper has seen PORT. The connection stays open, so each exchange has its own server address. */
export async function ftpExchange(ns: Netns, dataPort: number): Promise<ChildProcess> {
  const host = `127.0.0.${2 + (servers++ % 200)}`;
  const p = ns.spawn(process.execPath, ['--input-type=module', '-e', FTP, String(dataPort), host]);
  let out = '';
  p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => (out.includes('ready') ? true : undefined), 10_000, 'the FTP exchange');
  return p;
}
