/** Argument checking shared by every call (src/check.ts), through the pure validators that use it. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConntrackError } from '../../src/errors.js';
import { compileFilter } from '../../src/filter.js';
import { encodeCreate, encodeFlowKey, encodeUpdate } from '../../src/flow.js';
import { flowOptions } from '../../src/flows.js';
import { planFill } from '../../src/testing-fill.js';

/** What `fn` throws: it must throw. */
function thrown(fn: () => unknown): ConntrackError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConntrackError);
    return e as ConntrackError;
  }
  throw new Error('not refused');
}

const original = { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2 };
const seed = process.env.CONNTRACK_PBT_SEED === undefined ? Date.now() : Number(process.env.CONNTRACK_PBT_SEED);

/** The outcome of a validator, comparable: its result, or its refusal's code, argument and message. */
function outcome(fn: () => unknown): unknown {
  try {
    return { ok: fn() };
  } catch (e) {
    const err = e as ConntrackError;
    return { code: err.code, argument: err.argument, message: err.message };
  }
}

/** `o` with `key: undefined` for every key it leaves out (the optional ones, a spread's leftovers from other options). */
function withUndefined(o: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  const out = { ...o };
  for (const k of keys) if (!Object.hasOwn(out, k)) out[k] = undefined;
  return out;
}

/** Keys another options object could leave behind in a spread, known here or not. */
const STRAY = ['timeoutMs', 'filter', 'signal', 'cwd', 'colour'];
const port = fc.integer({ min: 1, max: 65535 });
const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.integer({ min: 1, max: 254 })).map((b) => b.join('.'));

describe('unknown keys', () => {
  it('are refused with the argument naming the unknown key, at its path, as other invalid arguments are', () => {
    const cases: [() => unknown, string][] = [
      [() => compileFilter({ bogus: 1 } as never, 'dump'), 'bogus'],
      [() => compileFilter({ reply: { port: 1 } } as never, 'dump'), 'reply.port'],
      [() => compileFilter({ icmp: { kind: 8 } } as never, 'dump'), 'icmp.kind'],
      [() => compileFilter({ nat: { type: 'src', addr: '10.0.0.1' } } as never, 'dump'), 'nat.addr'],
      [() => planFill(1, { colour: 'red' }), 'colour'],
      [() => encodeCreate({ protocol: 'tcp', original, timeout: 5, tiemout: 5 }), 'tiemout'],
      [() => encodeCreate({ protocol: 'tcp', original: { ...original, zoen: 1 }, timeout: 5 }), 'original.zoen'],
      [() => encodeCreate({ protocol: 'icmp', original: { src: '10.0.0.1', dst: '10.0.0.2', icmp: { type: 8, code: 0, id: 1, seq: 2 } }, timeout: 5 }), 'original.icmp.seq'],
      [() => encodeCreate({ protocol: 'tcp', original, timeout: 5, nat: { src: { address: '10.0.0.9', prot: 1 } } }), 'nat.src.prot'],
      [() => encodeUpdate({ protocol: 'tcp', original, mark: { value: 1, mask: 1, bits: 1 } }), 'mark.bits'],
    ];
    for (const [fn, argument] of cases) {
      const e = thrown(fn);
      expect(e, argument).toMatchObject({ code: 'ERR_INVALID_ARG', argument });
      expect(e.message).toContain(`"${argument.split('.').pop()!}"`);
    }
  });
});

describe('an own property whose value is undefined', () => {
  const FILTER_KEYS = ['family', 'protocol', 'src', 'dst', 'sport', 'dport', 'state', 'status', 'mark', 'zone', 'origZone', 'replyZone', 'reply', 'icmp', 'nat', 'labels'];
  const filters = fc.record(
    { protocol: fc.constantFrom('tcp', 'udp'), src: ipv4.map((a) => `${a}/24`), dst: ipv4, dport: port, mark: fc.nat(), zone: fc.nat(65535), family: fc.constant('ipv4'), status: fc.constant('ASSURED') },
    { requiredKeys: [] },
  );
  const CREATE_KEYS = ['id', 'family', 'use', 'counters', 'timestamp', 'helper', 'reply', 'state', 'status', 'mark', 'zone', 'labels', 'vtag', 'role', 'nat'];
  const creates = fc.record(
    {
      protocol: fc.constant('tcp'), original: fc.record({ src: ipv4, dst: ipv4, sport: port, dport: port }), timeout: fc.integer({ min: 1, max: 3600 }),
      state: fc.constantFrom('ESTABLISHED', 'SYN_SENT'), status: fc.constant(['ASSURED']), mark: fc.nat(), zone: fc.nat(65535), labels: fc.constant([1]),
    },
    { requiredKeys: ['protocol', 'original', 'timeout'] },
  );
  const FLOW_KEYS = ['types', 'filter', 'accounting', 'timestamps', 'keepEvents', 'bufferBytes', 'queueLimit', 'signal'];
  const flowOpts = fc.record({ types: fc.constant(['start', 'end']), accounting: fc.boolean(), bufferBytes: fc.integer({ min: 4096, max: 1 << 24 }), queueLimit: fc.integer({ min: 1, max: 1000 }) }, { requiredKeys: [] });
  const FILL_KEYS = ['protocol', 'src', 'dst', 'sport', 'dport', 'state', 'timeout', 'mark'];
  const fillOpts = fc.record({ src: ipv4.map((a) => `${a}/16`), dport: port, mark: fc.nat(), timeout: fc.integer({ min: 1, max: 3600 }) }, { requiredKeys: [] });

  it('is taken as absent by every options check: adding one for each key left out changes nothing (fast-check)', () => {
    console.log(`undefined-as-absent property: seed ${seed}`);
    const same = (fn: (o: Record<string, unknown>) => unknown, o: Record<string, unknown>, keys: readonly string[]): void => {
      expect(outcome(() => fn(withUndefined(o, [...keys, ...STRAY])))).toEqual(outcome(() => fn(o)));
    };
    fc.assert(
      fc.property(filters, creates, flowOpts, fillOpts, (filter, create, flows, fill) => {
        same((o) => compileFilter(o, 'dump'), filter, FILTER_KEYS);
        same((o) => encodeCreate(o), create, CREATE_KEYS);
        same((o) => encodeCreate({ ...create, original: o }), create.original, ['icmp', 'srcKey', 'dstKey', 'zone']);
        same((o) => encodeFlowKey(o, 'get'), { protocol: create.protocol, original: create.original }, ['zone', 'id', 'reply']);
        const { timeout: _, ...change } = create;
        same((o) => encodeUpdate(o), { ...change, mark: create.mark ?? 1 }, [...CREATE_KEYS, 'labelsAdd', 'labelsDelete', 'timeout']);
        same((o) => flowOptions(o), flows, FLOW_KEYS);
        same((o) => planFill(3, o).spec(2), fill, FILL_KEYS);
      }),
      { seed, numRuns: 200 },
    );
  });

  it('a getter is no value: an unknown key with one is refused without running it', () => {
    const o = Object.defineProperty({}, 'bogus', { enumerable: true, get: () => { throw new Error('ran'); } });
    expect(thrown(() => compileFilter(o as never, 'dump'))).toMatchObject({ code: 'ERR_INVALID_ARG', argument: 'bogus' });
  });
});
