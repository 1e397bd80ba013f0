/**
 * Generated changes to a table, applied with the conntrack CLI (another
 * process, as real changes are): inserts of several protocols, TCP state
 * changes, deletes of one flow or of a source. Shared by the live-table and
 * exporter properties.
 */
import fc from 'fast-check';
import type { Netns } from './netns.js';

export const SOURCES = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '2001:db8::7'];
const TCP_STATES = ['SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'TIME_WAIT', 'CLOSE'] as const;
export const opArb = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('create' as const), proto: fc.constantFrom('tcp', 'udp', 'sctp', 'icmp'), src: fc.integer({ min: 0, max: 3 }), port: fc.integer({ min: 1000, max: 1015 }), state: fc.constantFrom(...TCP_STATES), assured: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('update' as const), src: fc.integer({ min: 0, max: 3 }), port: fc.integer({ min: 1000, max: 1015 }), state: fc.constantFrom(...TCP_STATES) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), src: fc.integer({ min: 0, max: 3 }), port: fc.integer({ min: 1000, max: 1015 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('deleteSource' as const), src: fc.integer({ min: 0, max: 3 }) }) },
);
export type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;

export function apply(ns: Netns, op: Op): void {
  const src = SOURCES[op.src]!;
  const dst = src.includes(':') ? '2001:db8::1' : '10.9.0.1';
  if (op.op === 'deleteSource') return void ns.conntrackStatus('-D', '-s', src);
  const tcp = ['-p', 'tcp', '-s', src, '-d', dst, '--sport', String(op.port), '--dport', '80'];
  if (op.op === 'delete') return void ns.conntrackStatus('-D', ...tcp);
  if (op.op === 'update') return void ns.conntrackStatus('-U', ...tcp, '--state', op.state);
  const status = op.assured ? ['-u', 'SEEN_REPLY,ASSURED'] : [];
  const args = op.proto === 'icmp'
    ? ['-p', src.includes(':') ? 'icmpv6' : 'icmp', '-s', src, '-d', dst, '-t', '300', '--icmp-type', src.includes(':') ? '128' : '8', '--icmp-code', '0', '--icmp-id', String(op.port)]
    : op.proto === 'udp' ? ['-p', 'udp', '-s', src, '-d', dst, '--sport', String(op.port), '--dport', '53', '-t', '300']
      : op.proto === 'sctp' ? ['-p', 'sctp', '-s', src, '-d', dst, '--sport', String(op.port), '--dport', '9', '--state', 'ESTABLISHED', '-t', '300']
        : [...tcp, '--state', op.state, '-t', '300'];
  ns.conntrackStatus('-I', ...args, ...status);
}
