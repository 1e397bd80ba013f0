/** Reading the kernel log's table-full lines (pure: records as /dev/kmsg and dmesg give them). */
import { describe, expect, it } from 'vitest';
import { parseDmesgLine, parseKmsgRecord, summarize, whyNoDmesg, whyNoKmsg } from '../../src/kernel-log.js';
import { bucketsFor, defaultTimeouts } from '../../src/doctor.js';

describe('kernel log', () => {
  const boot = Date.parse('2026-11-23T10:00:00Z');

  it('counts the kernel\'s table-full lines and suppressed callbacks, with the time of the last', () => {
    const records = [
      '4,100,5000000,-;nf_conntrack: table full, dropping packet',
      '4,101,5000100,-;nf_conntrack: table full, dropping packet\n SUBSYSTEM=net',
      '4,102,6000000,-;net_ratelimit: 17 callbacks suppressed',
      '4,103,7500000,-;ip_conntrack: table full, dropping packet',
      '6,104,8000000,-;eth0: link up',
    ].map(parseKmsgRecord);
    const facts = summarize(records.filter((r) => r !== undefined), boot, 'kmsg', { inode: 4026532246, sinceMs: 0 });
    // Lines that name no namespace (older kernels) cannot be attributed: thisNamespace is null.
    expect(facts).toEqual({ source: 'kmsg', tableFull: 3, thisNamespace: null, suppressed: 17, last: '2026-11-23T10:00:07.500Z' });
  });

  it('newer kernels name the namespace: its own lines are counted apart', () => {
    const records = [
      '4,1,1000000,-;nf_conntrack: nf_conntrack: table full in netns 4026532246, dropping packet',
      '4,2,2000000,-;nf_conntrack: nf_conntrack: table full in netns 4026532999, dropping packet',
      '4,3,3000000,-;nf_conntrack: nf_conntrack: table full in netns 4026532246, dropping packet',
      '4,4,4000000,-;nf_conntrack: nf_conntrack: table full in netns 4026532999, dropping packet',
    ].map((r) => parseKmsgRecord(r)!);
    expect(summarize(records, boot, 'kmsg', { inode: 4026532246, sinceMs: 0 })).toEqual({
      source: 'kmsg', tableFull: 4, thisNamespace: 2, suppressed: 0, last: '2026-11-23T10:00:04.000Z', lastThisNamespace: '2026-11-23T10:00:03.000Z',
    });
    expect(summarize(records, boot, 'kmsg', { inode: 1, sinceMs: 0 }).thisNamespace).toBe(0);
    // Inode numbers are reused: a namespace made at 10:00:02 owns only the lines logged since.
    expect(summarize(records, boot, 'kmsg', { inode: 4026532246, sinceMs: boot + 2000 })).toMatchObject({ thisNamespace: 1, lastThisNamespace: '2026-11-23T10:00:03.000Z' });
  });

  it('never counts a line a process wrote into /dev/kmsg (user facility), only the kernel\'s', () => {
    // `echo 'nf_conntrack: table full, dropping packet' > /dev/kmsg` is logged with facility 1 (user): prio 12.
    const forged = parseKmsgRecord('12,200,9000000,-;nf_conntrack: table full, dropping packet')!;
    const forgedWithLevel = parseKmsgRecord('14,201,9000001,-;nf_conntrack: table full, dropping packet')!;
    expect(forged.facility).toBe(1);
    expect(summarize([forged, forgedWithLevel], boot, 'kmsg', null).tableFull).toBe(0);
  });

  it('reads dmesg --raw lines the same way', () => {
    const lines = ['<4>[  123.456789] nf_conntrack: table full, dropping packet', '<12>[  124.000000] nf_conntrack: table full, dropping packet', 'garbage'];
    const facts = summarize(lines.map(parseDmesgLine).filter((r) => r !== undefined), boot, 'dmesg', null);
    expect(facts).toEqual({ source: 'dmesg', tableFull: 1, thisNamespace: null, suppressed: 0, last: '2026-11-23T10:02:03.456Z' });
  });

  it('rejects what is not a record', () => {
    for (const bad of ['', 'no semicolon', 'x,1,2,-;msg', '4,1,y,-;msg']) expect(parseKmsgRecord(bad)).toBeUndefined();
  });
});

describe('the kernel\'s sizing and defaults by version', () => {
  it('buckets equal the max since Linux 5.15 (d532bcd0b269), a quarter of it before', () => {
    expect(bucketsFor(262144, 6, 18)).toBe(262144);
    expect(bucketsFor(262144, 5, 15)).toBe(262144);
    expect(bucketsFor(262144, 5, 14)).toBe(65536);
    expect(bucketsFor(2048, 4, 19)).toBe(1024);
  });

  it('udp_timeout_stream is 120 s from Linux 6.0, 180 s before', () => {
    expect(defaultTimeouts(6).nf_conntrack_udp_timeout_stream).toBe(120);
    expect(defaultTimeouts(5).nf_conntrack_udp_timeout_stream).toBe(180);
    expect(defaultTimeouts(6).nf_conntrack_tcp_timeout_established).toBe(432000);
  });
});

describe('where the kernel log went missing', () => {
  it('says why /dev/kmsg and dmesg gave nothing, in words, with dmesg\'s own complaint rather than "Command failed"', () => {
    const err = (code: string, extra: object = {}): Error => Object.assign(new Error(`${code}: x`), { code, ...extra });
    expect(whyNoKmsg(err('ENOENT'))).toBe('/dev/kmsg does not exist here');
    expect(whyNoKmsg(err('EPERM'))).toMatch(/^\/dev\/kmsg cannot be opened \(EPERM: reading it needs CAP_SYSLOG/);
    expect(whyNoDmesg(err('ENOENT'))).toBe('no dmesg program is installed');
    expect(whyNoDmesg(Object.assign(new Error('Command failed: dmesg --raw --nopager\ndmesg: read kernel buffer failed: Operation not permitted'), { code: 1, stderr: 'dmesg: read kernel buffer failed: Operation not permitted\n' })))
      .toBe('dmesg failed (dmesg: read kernel buffer failed: Operation not permitted)');
  });
});
