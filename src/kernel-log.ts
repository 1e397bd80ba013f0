/**
 * The kernel's "table full" messages, the line every table-full report starts
 * from ("nf_conntrack: table full, dropping packet"), read from /dev/kmsg or,
 * where that cannot be read, from `dmesg`. Only kernel-facility records
 * count: a line a process writes into /dev/kmsg is tagged as user facility
 * and is never mistaken for the kernel's. The log is host-wide; newer kernels
 * name the namespace in the line ("table full in netns 4026532246"), older
 * ones do not, and then the line cannot be attributed to one.
 */
import { execFile } from 'node:child_process';
import { closeSync, constants, openSync, readFileSync, readSync } from 'node:fs';
import { promisify } from 'node:util';

export interface KernelLogFacts {
  /** Where the records came from; 'unavailable' when neither could be read. */
  source: 'kmsg' | 'dmesg' | 'unavailable';
  /** "table full, dropping packet" messages still in the kernel's ring buffer, from any namespace. */
  tableFull: number;
  /**
   * Those naming this namespace (by its nsfs inode); null when the kernel's
   * lines name no namespace (older kernels), so none can be attributed.
   */
  thisNamespace: number | null;
  /**
   * Messages the kernel's network rate limit suppressed ("net_ratelimit: N
   * callbacks suppressed"). The limit is shared by every net_*_ratelimited
   * message, so this is an upper bound on suppressed table-full lines.
   */
  suppressed: number;
  /** Wall-clock time of the last table-full message (ISO 8601). */
  last?: string;
  /** Wall-clock time of the last one naming this namespace. */
  lastThisNamespace?: string;
  /** Why the log could not be read, when it could not. */
  error?: string;
}

// "nf_conntrack: table full, dropping packet" (older kernels, and ip_conntrack before 2.6.15);
// "nf_conntrack: nf_conntrack: table full in netns 4026532246, dropping packet" (newer).
const TABLE_FULL = /^(?:nf|ip)_conntrack: (?:(?:nf|ip)_conntrack: )?table full(?: in netns (\d+))?, dropping packet/;
const SUPPRESSED = /^net_ratelimit: (\d+) callbacks suppressed/;

interface LogRecord {
  facility: number;
  /** Microseconds since boot. */
  usec: number;
  message: string;
}

/** One /dev/kmsg record: "prio,seq,usec,flags[,...];message" (Documentation/ABI/testing/dev-kmsg). */
export function parseKmsgRecord(record: string): LogRecord | undefined {
  const semi = record.indexOf(';');
  if (semi < 0) return undefined;
  const [prio, , usec] = record.slice(0, semi).split(',');
  const p = Number(prio);
  const u = Number(usec);
  if (!Number.isInteger(p) || !Number.isFinite(u)) return undefined;
  return { facility: p >> 3, usec: u, message: record.slice(semi + 1).split('\n')[0]! };
}

/** One `dmesg --raw` line: "<prio>[ seconds.micros] message". */
export function parseDmesgLine(line: string): LogRecord | undefined {
  const m = /^<(\d+)>\[\s*(\d+)\.(\d+)\]\s?(.*)$/.exec(line);
  if (!m) return undefined;
  return { facility: Number(m[1]) >> 3, usec: Number(m[2]) * 1e6 + Number(m[3]!.padEnd(6, '0').slice(0, 6)), message: m[4]! };
}

/**
 * Which lines are this namespace's: those naming its nsfs inode, logged
 * since it exists. Inode numbers are reused once a namespace is gone, so a
 * line from before `sinceMs` named a namespace that had the number before.
 */
export interface NamespaceIdentity {
  inode: number;
  sinceMs: number;
}

/** Counts table-full and suppressed lines among kernel-facility records, and this namespace's own. */
export function summarize(records: readonly LogRecord[], bootTimeMs: number, source: KernelLogFacts['source'], ns: NamespaceIdentity | null): KernelLogFacts {
  let tableFull = 0;
  let here = 0;
  let named = false;
  let suppressed = 0;
  let lastUsec: number | undefined;
  let lastHereUsec: number | undefined;
  for (const r of records) {
    if (r.facility !== 0) continue;
    const full = TABLE_FULL.exec(r.message);
    if (full) {
      tableFull++;
      lastUsec = r.usec;
      if (full[1] !== undefined) {
        named = true;
        if (ns && Number(full[1]) === ns.inode && bootTimeMs + r.usec / 1000 >= ns.sinceMs) {
          here++;
          lastHereUsec = r.usec;
        }
      }
    } else {
      const s = SUPPRESSED.exec(r.message);
      if (s) suppressed += Number(s[1]);
    }
  }
  const at = (usec: number): string => new Date(bootTimeMs + usec / 1000).toISOString();
  return {
    source,
    tableFull,
    thisNamespace: named ? here : null,
    suppressed,
    ...(lastUsec !== undefined ? { last: at(lastUsec) } : {}),
    ...(lastHereUsec !== undefined ? { lastThisNamespace: at(lastHereUsec) } : {}),
  };
}

function bootTimeMs(): number {
  const uptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  return Date.now() - uptime * 1000;
}

/** Reads every record /dev/kmsg still holds, without blocking (EAGAIN ends it). */
function readKmsg(): LogRecord[] {
  const fd = openSync('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
  const records: LogRecord[] = [];
  const buf = Buffer.alloc(16384);
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') break;
        if (code === 'EPIPE') continue; // the ring buffer overwrote records while we read: skip ahead
        throw e;
      }
      if (n === 0) break;
      const r = parseKmsgRecord(buf.toString('utf8', 0, n));
      if (r) records.push(r);
    }
  } finally {
    closeSync(fd);
  }
  return records;
}

/** Why /dev/kmsg could not be read, in words: absent (a container without the device) or refused. */
export function whyNoKmsg(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ENOENT') return '/dev/kmsg does not exist here';
  if (err.code === 'EACCES' || err.code === 'EPERM') return `/dev/kmsg cannot be opened (${err.code}: reading it needs CAP_SYSLOG where kernel.dmesg_restrict is 1, and a mount that allows devices)`;
  return `/dev/kmsg cannot be read (${String(err.message).split('\n')[0]})`;
}

/** Why `dmesg` gave nothing: not installed, or its own complaint (its stderr, not "Command failed"). */
export function whyNoDmesg(e: unknown): string {
  const err = e as NodeJS.ErrnoException & { stderr?: string };
  if (err.code === 'ENOENT') return 'no dmesg program is installed';
  const said = err.stderr?.trim().split('\n')[0];
  return `dmesg failed (${said || String(err.message).split('\n')[0]})`;
}

/** Reads the kernel log; `ns` is the namespace whose own table-full lines to count. */
export async function readKernelLog(ns: NamespaceIdentity | null): Promise<KernelLogFacts> {
  const boot = bootTimeMs();
  try {
    return summarize(readKmsg(), boot, 'kmsg', ns);
  } catch (kmsgError) {
    try {
      const { stdout } = await promisify(execFile)('dmesg', ['--raw', '--nopager'], { maxBuffer: 1 << 26 });
      return summarize(stdout.split('\n').map(parseDmesgLine).filter((r): r is LogRecord => r !== undefined), boot, 'dmesg', ns);
    } catch (dmesgError) {
      return { source: 'unavailable', tableFull: 0, thisNamespace: null, suppressed: 0, error: `${whyNoKmsg(kmsgError)}; ${whyNoDmesg(dmesgError)}` };
    }
  }
}
