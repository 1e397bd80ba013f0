import { ConntrackError } from './errors.js';

/** An address or prefix in network byte order. */
export interface Prefix {
  family: 4 | 6;
  bytes: Uint8Array; // 4 or 16 bytes
  length: number; // prefix length in bits
}

function parseIPv4(s: string): Uint8Array | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p[0] === '0')) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseIPv6(s: string): Uint8Array | undefined {
  if (s.length < 2 || s.length > 45) return undefined;
  const out = new Uint8Array(16);
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const parseWords = (part: string, allowV4Tail: boolean): number[] | undefined => {
    if (part === '') return [];
    const groups = part.split(':');
    const words: number[] = [];
    for (let i = 0; i < groups.length; i++) {
      const g = groups[i]!;
      if (allowV4Tail && i === groups.length - 1 && g.includes('.')) {
        const v4 = parseIPv4(g);
        if (!v4) return undefined;
        words.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      words.push(parseInt(g, 16));
    }
    return words;
  };
  let words: number[];
  if (halves.length === 2) {
    const head = parseWords(halves[0]!, false);
    const tail = parseWords(halves[1]!, true);
    if (!head || !tail || head.length + tail.length > 7) return undefined;
    words = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseWords(s, true);
    if (!all || all.length !== 8) return undefined;
    words = all;
  }
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** Parses an IPv4 or IPv6 address (no prefix). Undefined when invalid. */
export function parseAddress(s: string): { family: 4 | 6; bytes: Uint8Array } | undefined {
  if (typeof s !== 'string') return undefined;
  const v4 = parseIPv4(s);
  if (v4) return { family: 4, bytes: v4 };
  if (!s.includes(':')) return undefined;
  const v6 = parseIPv6(s);
  return v6 ? { family: 6, bytes: v6 } : undefined;
}

/** Parses 'ADDR' or 'ADDR/LEN'; throws ConntrackError ERR_INVALID_ARG naming `op` and `what`. */
export function parsePrefix(s: unknown, op: string, what: string): Prefix {
  if (typeof s !== 'string') throw ConntrackError.invalid(op, `${what} must be an address or CIDR string, got ${typeof s}`, what);
  const slash = s.indexOf('/');
  const addrPart = slash < 0 ? s : s.slice(0, slash);
  const addr = parseAddress(addrPart);
  if (!addr) throw ConntrackError.invalid(op, `${what}: '${s}' is not an IPv4 or IPv6 address`, what);
  const max = addr.family === 4 ? 32 : 128;
  let length = max;
  if (slash >= 0) {
    const lenPart = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lenPart) || Number(lenPart) > max) {
      throw ConntrackError.invalid(op, `${what}: '${s}' has an invalid prefix length (0-${max} for IPv${addr.family})`, what);
    }
    length = Number(lenPart);
  }
  return { family: addr.family, bytes: addr.bytes, length };
}

/** Parses a single host address (no prefix) or throws. */
export function parseHost(s: unknown, op: string, what: string): { family: 4 | 6; bytes: Uint8Array } {
  const p = parsePrefix(s, op, what);
  if (p.length !== (p.family === 4 ? 32 : 128)) throw ConntrackError.invalid(op, `${what}: '${String(s)}' must be a single address, not a prefix`, what);
  return p;
}

const v4Cache = new Map<number, string>();

/** Formats 4 bytes at `off` the way Node (and inet_ntop) print IPv4. */
export function formatIPv4(b: Uint8Array, off: number): string {
  const key = ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
  let s = v4Cache.get(key);
  if (s === undefined) {
    s = `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
    if (v4Cache.size > 100_000) v4Cache.clear();
    v4Cache.set(key, s);
  }
  return s;
}

/** Formats 16 bytes at `off` like inet_ntop()/Node: RFC 5952 compression, embedded IPv4 for ::ffff:a.b.c.d. */
export function formatIPv6(b: Uint8Array, off: number): string {
  const w = new Array<number>(8);
  for (let i = 0; i < 8; i++) w[i] = (b[off + 2 * i]! << 8) | b[off + 2 * i + 1]!;
  let bestBase = -1;
  let bestLen = 0;
  let curBase = -1;
  let curLen = 0;
  for (let i = 0; i < 8; i++) {
    if (w[i] === 0) {
      if (curBase < 0) (curBase = i), (curLen = 1);
      else curLen++;
    } else if (curBase >= 0) {
      if (curLen > bestLen) (bestBase = curBase), (bestLen = curLen);
      curBase = -1;
    }
  }
  if (curBase >= 0 && curLen > bestLen) (bestBase = curBase), (bestLen = curLen);
  if (bestLen < 2) bestBase = -1;
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase >= 0 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) out += ':';
      continue;
    }
    if (i !== 0) out += ':';
    // Same rule as inet_ntop: ::a.b.c.d and ::ffff:a.b.c.d keep the dotted quad.
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
      out += `${b[off + 12]}.${b[off + 13]}.${b[off + 14]}.${b[off + 15]}`;
      break;
    }
    out += w[i]!.toString(16);
  }
  if (bestBase >= 0 && bestBase + bestLen === 8) out += ':';
  return out;
}
