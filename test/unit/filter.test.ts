/** Filter validation and compilation (pure): what goes to the kernel, what stays native, what counts as "everything". */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { ConntrackError } from '../../src/errors.js';
import { compileFilter, type Filter } from '../../src/filter.js';

function rejects(f: unknown): ConntrackError {
  try {
    compileFilter(f as Filter, 'test');
  } catch (e) {
    expect(e).toBeInstanceOf(ConntrackError);
    expect((e as ConntrackError).code).toBe('ERR_INVALID_ARG');
    return e as ConntrackError;
  }
  throw new Error(`accepted ${String(f)}`);
}

describe('compileFilter (pure)', () => {
  afterEach(() => {
    for (const k of ['family', 'src', 'mark', 'zone']) delete (Object.prototype as Record<string, unknown>)[k];
  });

  it('sends an exact IPv4 address to the kernel, never an IPv6 one (its CTA_FILTER compares IPv6 inverted)', () => {
    const v4 = compileFilter({ src: '10.0.0.1', dst: '10.0.0.2', protocol: 'tcp', dport: 443 }, 'test');
    expect(v4.kernel.origFlags).toBe(1 | 2 | 8 | 32);
    expect(v4.kernel.tuple?.src).toEqual(Buffer.from([10, 0, 0, 1]));
    for (const src of ['2001:db8:2::185', '2001:db8:2::185/128', '::ffff:10.9.97.1']) {
      const c = compileFilter({ src, protocol: 'tcp' }, 'test');
      expect(c.kernel.tuple?.src).toBeUndefined();
      expect((c.kernel.origFlags ?? 0) & 3).toBe(0);
      expect(c.match.src?.length).toBe(18);
      expect(c.kernel.family).toBe(10);
    }
  });

  it('decides which families a filter sweeps whole from meaning, not syntax', () => {
    const whole = (f: Filter): readonly string[] => compileFilter(f, 'test').wholeFamilies;
    const everything: Filter[] = [
      {}, { src: ['0.0.0.0/0', '::/0'] }, { mark: { value: 0, mask: 0 } }, { status: 'CONFIRMED' },
      { dst: ['::/0', '0.0.0.0/0'], mark: { value: 0, mask: 0 } }, { reply: { src: ['::/0', '0.0.0.0/0'] } },
    ];
    for (const f of everything) expect(whole(f), JSON.stringify(f)).toEqual(['ipv4', 'ipv6']);
    // A /0 of one family is every entry of it, whatever else is listed beside it for the other family.
    const ipv4: Filter[] = [
      { src: '0.0.0.0/0' }, { family: 'ipv4' }, { src: ['0.0.0.0/0', '2001:db8::/32'] }, { dst: '0.0.0.0/0', status: 'CONFIRMED' },
      { reply: { dst: ['0.0.0.0/0'] } }, { family: 'ipv4', src: '0.0.0.0/0', dst: '0.0.0.0/0' },
    ];
    for (const f of ipv4) expect(whole(f), JSON.stringify(f)).toEqual(['ipv4']);
    expect(whole({ src: '::/0', family: 'ipv6' })).toEqual(['ipv6']);
    const some: Filter[] = [
      { src: '10.0.0.0/8' }, { src: '0.0.0.0/0', dst: '10.0.0.1' }, { zone: 0 }, { mark: 0 },
      { status: ['CONFIRMED', 'ASSURED'] }, { protocol: 'tcp' }, { origZone: 0 }, { sport: [1] }, { src: '0.0.0.0/0', dport: 22 },
      { family: 'ipv4', protocol: 'udp' }, { reply: { sport: 53 } }, { labels: [1] }, { nat: 'src' }, { icmp: { type: 8 } },
    ];
    for (const f of some) expect(whole(f), JSON.stringify(f)).toEqual([]);
  });

  it('reads own properties only: a polluted Object.prototype changes nothing', () => {
    const clean = compileFilter({ protocol: 'udp' }, 'test');
    Object.assign(Object.prototype, { family: 'ipv6', src: '10.0.0.0/8', mark: 7, zone: 3 });
    expect(compileFilter({ protocol: 'udp' }, 'test')).toEqual(clean);
  });

  it('refuses what would reach the kernel as nonsense, with a ConntrackError, never a TypeError', () => {
    rejects({ status: [] });
    rejects({ src: [] });
    rejects({ sport: 1n });
    expect(rejects({ sport: 1n }).message).toContain('1n');
    // eslint-disable-next-line no-sparse-arrays
    rejects({ src: [, '10.1.0.1'] });
    rejects({ status: Object.create(null) });
    const weird = ['10.0.0.1'];
    Object.defineProperty(weird, 'constructor', { value: 42 });
    expect(compileFilter({ src: weird }, 'test').match.src?.length).toBe(18);
    rejects({ srcc: '10.0.0.1' });
    rejects({ [Symbol('x')]: 1 });
    rejects({ family: 'ipv4', src: '2001:db8::1' });
    rejects({ mark: { value: 3, mask: 1 } });
    rejects({ zone: 65536 });
  });

  it('any value in any field: a compiled filter or a ConntrackError ERR_INVALID_ARG', () => {
    const fields = ['family', 'protocol', 'src', 'dst', 'sport', 'dport', 'state', 'status', 'mark', 'zone', 'origZone', 'replyZone'];
    const value = fc.oneof(fc.anything(), fc.bigInt(), fc.constantFrom(NaN, Infinity, -1, 2 ** 32, 2 ** 53, '10.0.0.0/8', '::/0', 'tcp', 'ESTABLISHED'));
    fc.assert(fc.property(fc.dictionary(fc.constantFrom(...fields), value), (f) => {
      try {
        compileFilter(f as Filter, 'test');
      } catch (e) {
        expect(e).toBeInstanceOf(ConntrackError);
        expect((e as ConntrackError).code).toBe('ERR_INVALID_ARG');
      }
    }), { numRuns: 5000 });
  });
});
