/**
 * Connection labels: up to 128 bits per entry (CTA_LABELS), named in
 * /etc/xtables/connlabel.conf ("BIT NAME" per line, # comments), the file
 * conntrack, iptables' connlabel match and nftables read. Bit numbers are
 * always accepted; names are resolved through the file, as conntrack does.
 */
import { readFileSync } from 'node:fs';
import { ConntrackError } from './errors.js';
import { describe } from './check.js';

/** The label file conntrack and xtables read. */
export const CONNLABEL_CONF = '/etc/xtables/connlabel.conf';
/** Bits in the kernel's label bitmap (XT_CONNLABEL_MAXBIT + 1). */
export const LABEL_BITS = 128;

/** Name -> bit and bit -> name from a connlabel.conf text. */
export interface LabelMap {
  bits: ReadonlyMap<string, number>;
  names: ReadonlyMap<number, string>;
}

export function parseLabelMap(text: string): LabelMap {
  const bits = new Map<string, number>();
  const names = new Map<number, string>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    const m = /^(\d+)\s+(\S+)/.exec(line);
    if (!m) continue;
    const bit = Number(m[1]);
    if (bit >= LABEL_BITS) continue;
    // As libnetfilter_conntrack: the first line naming a bit wins, and a name maps to its first bit.
    if (!names.has(bit)) names.set(bit, m[2]!);
    if (!bits.has(m[2]!)) bits.set(m[2]!, bit);
  }
  return { bits, names };
}

let cached: { path: string; map: LabelMap } | undefined;

/** The label map of `path` (default /etc/xtables/connlabel.conf); empty when the file is missing. */
export function labelMap(path: string = CONNLABEL_CONF): LabelMap {
  if (cached?.path === path) return cached.map;
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    // No file: bit numbers still work, names do not.
  }
  const map = parseLabelMap(text);
  cached = { path, map };
  return map;
}

/** Forgets the cached file (tests and long-lived processes after editing it). */
export function reloadLabelMap(): void {
  cached = undefined;
}

/** A list of label bits or names as the kernel's 16-byte bitmap. */
export function labelBitmap(labels: unknown, op: string, what: string, map: LabelMap = labelMap()): Buffer {
  const list = Array.isArray(labels) ? labels : [labels];
  const out = Buffer.alloc(LABEL_BITS / 8);
  for (const l of list) {
    let bit: number | undefined;
    if (typeof l === 'number' && Number.isInteger(l) && l >= 0 && l < LABEL_BITS) bit = l;
    else if (typeof l === 'string' && /^\d+$/.test(l) && Number(l) < LABEL_BITS) bit = Number(l);
    else if (typeof l === 'string') bit = map.bits.get(l);
    if (bit === undefined) {
      throw ConntrackError.invalid(op, `${what}: unknown label ${describe(l)} (a bit number 0-127, or a name from ${CONNLABEL_CONF})`, what);
    }
    out[bit >> 3]! |= 1 << (bit & 7);
  }
  return out;
}
