/**
 * ctmon exporter: conntrack/prometheus behind an HTTP server
 * (metrics-server.ts), for one or several namespaces. A scrape costs a
 * stats() read per namespace, whatever the table's size. A namespace deleted
 * and created again under its name is followed (reopened by name); while the
 * name names nothing its series are dropped. SIGTERM/SIGINT close the server,
 * the event streams and the handles at once; SIGHUP (a closed terminal) is
 * logged and ignored, as daemons do.
 */
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { Conntrack } from '../conntrack.js';
import { METRIC_NAMES, registerMetrics, type NamespaceChange } from '../prometheus.js';
import { COMMON_OPTIONS, listArg, numberArg, stringArg, UsageError, type OptionSpec, type ParsedArgs } from './args.js';
import { EXIT, untilInterrupted } from './common.js';
import { createMetricsServer } from './metrics-server.js';

export const options: OptionSpec[] = [
  { name: 'listen', type: 'string', placeholder: 'HOST:PORT', help: 'address to serve /metrics on (default 127.0.0.1:9466; [::]:9466 or :9466 for every interface)' },
  { name: 'netns', type: 'list', placeholder: 'NAME', help: 'export this namespace (a name under /run/netns or a path); repeatable, one netns label each. Default: this process\'s namespace' },
  { name: 'top', type: 'number', placeholder: 'N', help: 'sources in conntrack_top_source_entries (default 10)' },
  { name: 'resync', type: 'number', placeholder: 'SECONDS', help: 'full dump to re-check the live counts this often (default 300; 0: only after lost events)' },
  { name: 'doctor', type: 'number', placeholder: 'SECONDS', help: 'run the doctor this often for conntrack_doctor_* (default 60; 0: never)' },
  { name: 'per-cpu', type: 'boolean', help: 'label conntrack_stat_*_total per CPU (cpu label) instead of summing' },
  ...COMMON_OPTIONS.filter((o) => o.name !== 'netns'),
];
export const summary = 'Serves Prometheus metrics for the conntrack table of one or more namespaces: fill, limit, kernel counters, entries by state, top sources, events and the doctor\'s verdict. A scrape is O(1) in the table size.';
export const notes = [
  'Metrics, each with a netns label:',
  ...wrap(METRIC_NAMES.filter((m) => !m.startsWith('conntrack_stat_')).concat('conntrack_stat_*_total'), 100),
  'Example: ctmon exporter --listen :9466 --netns blue --netns red',
];

function wrap(words: readonly string[], width: number): string[] {
  const lines: string[] = [];
  for (const w of words) {
    const last = lines.at(-1);
    if (last !== undefined && last.length + w.length + 2 <= width) lines[lines.length - 1] = `${last}, ${w}`;
    else lines.push(`  ${w}`);
  }
  return lines;
}

const DEFAULT_PORT = 9466;

/** HOST:PORT, [V6]:PORT, :PORT or PORT. */
export function parseListen(value: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value) ?? /^()()(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`--listen must be HOST:PORT, [IPV6]:PORT or :PORT, got '${value}'`);
  const host = m[1] ?? m[2];
  return { host: host === '' || host === undefined ? undefined : host, port };
}

function seconds(args: ParsedArgs, name: string): number | undefined {
  const v = numberArg(args, name);
  if (v !== undefined && !(Number.isFinite(v) && v >= 0)) throw new UsageError(`--${name} must be a number of seconds, 0 or more`);
  return v;
}

export async function run(args: ParsedArgs): Promise<number> {
  if (args._.length) throw new UsageError(`unexpected argument '${args._[0]}'`);
  const { host, port } = parseListen(stringArg(args, 'listen') ?? `127.0.0.1:${DEFAULT_PORT}`);
  const names = listArg(args, 'netns') ?? [];
  if (new Set(names).size !== names.length) throw new UsageError('each --netns may be given once');
  const top = numberArg(args, 'top');
  if (top !== undefined && !(Number.isInteger(top) && top >= 0 && top <= 1000)) throw new UsageError('--top must be a whole number from 0 to 1000');
  const resyncSeconds = seconds(args, 'resync');
  const doctorSeconds = seconds(args, 'doctor');

  // A closed terminal must not end the daemon: SIGHUP is logged, and a log line to a terminal that is gone is dropped.
  const dropLogError = (): void => undefined;
  process.stderr.on('error', dropLogError);
  const interrupted = untilInterrupted(() => log('SIGHUP received: ignored, still serving (SIGTERM or SIGINT stops the exporter)'));
  const handles = new Set<Conntrack>();
  try {
    for (const netns of names.length ? names : [undefined]) handles.add(await Conntrack.open(netns === undefined ? {} : { netns }));
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    // prom-client also names three gauges *_total, which promtool (rightly) rejects; their unsuffixed twins stay.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
    const metrics = registerMetrics(registry, {
      conntrack: [...handles],
      ...(top !== undefined ? { top } : {}),
      ...(resyncSeconds !== undefined ? { resyncSeconds } : {}),
      ...(doctorSeconds !== undefined ? { doctorSeconds } : {}),
      perCpu: args['per-cpu'] === true,
      onNamespaceChange: (change) => follow(change, handles),
    });
    const server = createMetricsServer(registry);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      // Once listening, an accept that fails (EMFILE: out of descriptors) is logged, not fatal.
      server.on('error', logAcceptError);
      const a = server.address() as AddressInfo;
      const where = a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
      log(`serving http://${where}/metrics for ${names.length ? `namespace${names.length > 1 ? 's' : ''} ${names.join(', ')}` : 'this namespace'}`);
      await interrupted.promise;
    } finally {
      server.close();
      server.closeAllConnections();
      metrics.close();
    }
    return EXIT.ok;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE' || (e as NodeJS.ErrnoException).code === 'EACCES' || (e as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL') {
      process.stderr.write(`ctmon: cannot listen on ${host ?? '*'}:${port}: ${(e as Error).message}\n`);
      return EXIT.unavailable;
    }
    throw e;
  } finally {
    interrupted.cancel();
    process.stderr.off('error', dropLogError);
    for (const h of handles) h.close();
  }
}

function log(line: string): void {
  process.stderr.write(`ctmon exporter: ${line}\n`);
}

let lastAcceptError = 0;
function logAcceptError(e: NodeJS.ErrnoException): void {
  // At most one line every 10 s: a flood of connections must not become a flood of log lines.
  if (Date.now() - lastAcceptError < 10_000) return;
  lastAcceptError = Date.now();
  log(`cannot accept a connection: ${e.message}`);
}

/**
 * A namespace's name stopped naming the namespace exported: say so, release
 * the old namespace (the handle kept it alive), and open the one the name
 * names now, if any; its series continue under the same label.
 */
async function follow(change: NamespaceChange, handles: Set<Conntrack>): Promise<Conntrack | undefined> {
  if (handles.delete(change.conntrack)) {
    change.conntrack.close();
    const was = `inode ${change.previous.inode}`;
    const now = change.current && (change.current.inode === change.previous.inode ? 'the same number, reused' : `inode ${change.current.inode}`);
    log(now
      ? `namespace ${change.netns} was deleted and created again (${was} -> ${now}): following the new one`
      : `namespace ${change.netns} was deleted (${was}): its series are dropped until the name names a namespace again`);
  } else if (change.current) {
    log(`namespace ${change.netns} exists again (inode ${change.current.inode}): following it`);
  }
  if (!change.current) return undefined;
  try {
    const ct = await Conntrack.open({ netns: change.netns });
    handles.add(ct);
    return ct;
  } catch (e) {
    log(`namespace ${change.netns}: cannot open it (${e instanceof Error ? e.message : String(e)}); trying again when its name changes`);
    return undefined;
  }
}
