/**
 * What users write with entries, compiled by test/unit/types.test.ts
 * against the built declarations (dist/*.d.ts, as `npm install conntrack`
 * gives them) under plain `strict` and under `exactOptionalPropertyTypes`.
 * Every line must compile with no cast; the @ts-expect-error lines must not.
 */
import { waitForEvent, type TestNamespace } from 'conntrack/testing';
import { Conntrack, diagnose, type ConntrackEvent, type CreateSpec, type DestinationCount, type DestinationShare, type Entry, type EntryEvent, type Filter, type FlowKey, type LiveTable, type LiveTableStats, type StateCount, type UpdateChanges, type UpdateResult, type UpdateSpec } from 'conntrack';

export async function shapes(ct: Conntrack, e: Entry, ev: EntryEvent): Promise<void> {
  // An Entry passes back whole, or spread with a change.
  await ct.update({ ...e, mark: 7 });
  await ct.update(e);
  await ct.delete(e);
  await ct.create(e);
  const again: Entry | null = await ct.get(e);
  if (again) await ct.update({ ...again, mark: { value: 0x10, mask: 0xf0 }, labelsAdd: ['web', 3] });
  await ct.update({ ...e, timeout: 60, status: ['ASSURED'] });
  await ct.create({ ...e, timeout: 300, mark: 1 });
  await ct.delete({ ...e });
  await ct.get({ ...e, zone: 2 });
  // From each producer: list(), dump(), an event.
  const [first] = await ct.list({ src: '10.0.0.0/8' });
  if (first) await ct.update({ ...first, labels: [] });
  for await (const x of ct.dump({ protocol: 'tcp' })) await ct.delete(x);
  await ct.update({ ...ev.entry, mark: 1 });
  await Promise.all((await ct.list()).map((x) => ct.update({ ...x, mark: 9 })));
  // The types agree: an Entry is a key, a create spec and an update spec.
  const key: FlowKey = e;
  const created: CreateSpec = e;
  const updated: UpdateSpec = { ...e, mark: 7 };
  const spread: UpdateSpec = { ...e };
  void [key, created, updated, spread];
  // A hand-written key and the bulk update.
  await ct.update({ protocol: 'udp', original: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 53 }, timeout: 30 });
  const changes: UpdateChanges = { mark: 9, labelsDelete: ['web'] };
  const r: UpdateResult = await ct.updateWhere({ src: '10.0.0.0/8' }, changes, { dryRun: true, all: false });
  const n: number = r.matched + r.updated + r.alreadyGone + r.failed.length + (r.entries?.length ?? 0);
  void n;
  // The live table: an Entry is a key, its reply tuple (with protocol and zone) a find().
  const table: LiveTable = ct.liveTable({ entries: true, resyncSeconds: 0 });
  await table.ready;
  const live: Entry | undefined = table.get(e) ?? table.find({ ...e.reply, protocol: e.protocol, zone: e.zone });
  const counts: StateCount[] = table.counts();
  const top: DestinationCount[] = table.topDestinations(3);
  const stats: LiveTableStats = table.stats;
  for (const x of table.entries()) await ct.update({ ...x, mark: 1 });
  void [live, counts, top, stats, table.size + table.assured + table.topSources()[0]!.entries];
  await table[Symbol.asyncDispose]();
  // A field in no Entry and no spec is refused, in types as at run time.
  // @ts-expect-error: no such field
  await ct.update({ ...e, marks: 7 });
  // @ts-expect-error: updateWhere's changes hold no key
  await ct.updateWhere({ src: '10.0.0.1' }, { protocol: 'tcp', mark: 1 });
}

export async function doctorShapes(ct: Conntrack): Promise<void> {
  const d = await diagnose(ct, { intervalSeconds: 0.5, ignore: ['max-low'] });
  // A destination is structured: its address and (for protocols with ports) its port, beside the printed `dst`.
  const top: DestinationShare | undefined = d.facts.table.topDestinations[0];
  if (top) {
    const address: string = top.address;
    const port: number | undefined = top.port;
    const shown: string = top.dst;
    void [address, port, shown];
  }
}

export async function waitShapes(ns: TestNamespace): Promise<void> {
  const events = ns.conntrack.events({ types: ['new'] });
  const [flow] = await ns.udpFlows({ count: 1 });
  const sport = flow?.original.sport;
  // README's waitForEvent example, its predicate a type guard: what resolves is an EntryEvent, its entry read with no cast.
  const event = await waitForEvent(events, (e): e is EntryEvent => e.type === 'new' && e.entry.original.sport === sport, { timeoutMs: 5000 });
  const protocol: Entry['protocol'] = event.entry.protocol;
  // A guard declared apart, on a wider parameter, narrows as well.
  const isEntryEvent = (e: { type: string }): e is EntryEvent => e.type !== 'overrun';
  const again: EntryEvent = await waitForEvent(events, isEntryEvent, { timeoutMs: 5000 });
  // A plain boolean predicate resolves the stream's own event type: an overrun has no entry.
  const any: ConntrackEvent = await waitForEvent(events, (e) => e.type === 'new', { timeoutMs: 5000 });
  // @ts-expect-error: not narrowed by a boolean predicate
  void any.entry;
  void [protocol, again];
}

/**
 * Options built from values that may be undefined, as a CLI or a config
 * file gives them: under exactOptionalPropertyTypes an option's type says
 * `| undefined`, so passing one needs no spread or cast (the library treats
 * it as absent).
 */
export async function optionsFromMaybes(ct: Conntrack, config: { filter?: Filter; buffer?: number; host?: string; top?: number }, ns: TestNamespace): Promise<void> {
  const events = ct.events({ filter: config.filter, bufferBytes: config.buffer, signal: undefined });
  const flows = ct.flows({ filter: config.filter, bufferBytes: config.buffer, onLost: undefined });
  const lines = flows.ndjson({ fields: config.host === undefined ? undefined : { host: config.host } });
  const messages = ct.flows().ipfix({ mtu: config.buffer, templateRefreshMs: undefined });
  const table = ct.liveTable({ top: config.top, resyncSeconds: undefined });
  const entries: Entry[] = await ct.list(config.filter);
  await ns.exec('true', [], { timeoutMs: config.top, cwd: undefined });
  void [events, lines, messages, table, entries];
}
