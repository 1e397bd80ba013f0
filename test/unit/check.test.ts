/** Argument checking shared by every call (src/check.ts), through the pure validators that use it. */
import { describe, expect, it } from 'vitest';
import { ConntrackError } from '../../src/errors.js';
import { compileFilter } from '../../src/filter.js';
import { encodeCreate, encodeUpdate } from '../../src/flow.js';
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
