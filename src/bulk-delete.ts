/**
 * Bulk deletes (deleteBySource, deleteWhere): their options and result, and
 * the one path both take. A dry run counts through the same cursor and
 * matcher a real delete streams through. The selection guard and the
 * cursor's lifecycle are shared with the bulk update (bulk-update.ts).
 */
import { checkBoolean, checkSignal, own } from './check.js';
import type { Entry, Family, ProtocolName } from './entry.js';
import { ConntrackError, wrapNative } from './errors.js';
import { compileFilter, type CompiledFilter, type Direction, type Filter } from './filter.js';
import type { NativeBulkOutcome, NativeDumpCursor, NativeHandle } from './native.js';
import { decodeOne } from './record.js';

export interface DeleteOptions {
  /** Which tuple's source to match (deleteBySource only); default 'original' like `conntrack -D -s`. */
  direction?: Direction | undefined;
  family?: Family | undefined;
  zone?: number | undefined;
  protocol?: ProtocolName | number | undefined;
  /** Count what would be deleted, delete nothing. */
  dryRun?: boolean | undefined;
  /**
   * Required when the filter selects every entry of the table or of a family,
   * whatever its syntax ('0.0.0.0/0' is every IPv4 entry; nothing but a
   * family; a mark mask of 0...): a bulk delete that empties the table must
   * be meant. flush() is the direct way.
   */
  all?: boolean | undefined;
  signal?: AbortSignal | undefined;
}

export interface DeleteFailure {
  entry: Entry;
  error: ConntrackError;
}

export interface DeleteResult {
  /** Entries that matched when the table was read. */
  matched: number;
  /** Entries this call deleted. */
  deleted: number;
  /** Matched entries that were gone (expired or deleted elsewhere) by the time of their delete. */
  alreadyGone: number;
  /** Deletes the kernel refused for another reason than ENOENT. */
  failed: DeleteFailure[];
}

export const DELETE_OPTION_KEYS = new Set(['direction', 'family', 'zone', 'protocol', 'dryRun', 'all', 'signal']);
export const DELETE_WHERE_OPTION_KEYS = new Set(['family', 'zone', 'protocol', 'dryRun', 'all', 'signal']);

/** What a bulk call has read from its options and filter before any work starts. */
export interface BulkSelection {
  compiled: CompiledFilter;
  dryRun: boolean;
  signal: AbortSignal | undefined;
}

/**
 * Reads the options every bulk call shares (getters run now: what they throw
 * is the caller's own error) and compiles the filter. A filter that selects
 * every entry of the table or of a family is a flush: the caller must say so.
 */
export function bulkSelection(filter: Filter, o: object, op: string, direction: Direction, verb: 'delete' | 'update'): BulkSelection {
  const dryRun = checkBoolean(own(o, 'dryRun'), op, 'dryRun') === true;
  const all = checkBoolean(own(o, 'all'), op, 'all') === true;
  const signal = checkSignal(own(o, 'signal'), op);
  const compiled = compileFilter(filter, op, direction);
  const whole = compiled.wholeFamilies;
  if (whole.length > 0 && !all) {
    const which = whole.length === 2 ? 'every entry' : `every ${whole[0] === 'ipv4' ? 'IPv4' : 'IPv6'} entry`;
    const flush = whole.length === 2 ? 'flush()' : `flush({ family: '${whole[0]}' })`;
    const instead = verb === 'delete' ? `, or use ${flush}` : '';
    throw ConntrackError.invalid(op, `the filter selects ${which}: pass { all: true } to ${verb} them all${instead}`, 'all');
  }
  if (signal?.aborted) throw new ConntrackError('ECANCELED', op, `${op}: aborted before it started`, { cause: signal.reason });
  return { compiled, dryRun, signal };
}

/** Runs `work` on a cursor over the selection; an abort of `signal` cancels it; the cursor is closed after. */
export async function onCursor<T>(native: NativeHandle, sel: BulkSelection, op: string, work: (cursor: NativeDumpCursor) => Promise<T>): Promise<T> {
  const cursor = native.dump(sel.compiled.kernel, sel.compiled.match);
  const onAbort = (): void => cursor.cancel();
  sel.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await work(cursor);
  } catch (e) {
    if (sel.signal?.aborted) throw new ConntrackError('ECANCELED', op, `${op}: aborted`, { cause: sel.signal.reason });
    throw wrapNative(e, op);
  } finally {
    sel.signal?.removeEventListener('abort', onAbort);
    cursor.close();
  }
}

/** The entries the kernel refused, each with its error. */
export function failuresOf(r: NativeBulkOutcome, op: string, details?: Partial<Record<string, string>>): DeleteFailure[] {
  return r.failed.map((f) => {
    const error = ConntrackError.fromErrno(f.errno, op);
    const detail = details?.[error.code];
    return { entry: decodeOne(f.record), error: detail ? ConntrackError.fromErrno(f.errno, op, detail) : error };
  });
}

export async function deleteMatching(native: NativeHandle, base: Filter, o: object, op: string, direction: Direction): Promise<DeleteResult> {
  const filter: Filter = {};
  for (const k of Reflect.ownKeys(base)) (filter as Record<PropertyKey, unknown>)[k] = (base as Record<PropertyKey, unknown>)[k];
  for (const k of ['family', 'zone', 'protocol'] as const) {
    const v = own(o, k);
    if (v !== undefined) (filter as Record<string, unknown>)[k] = v;
  }
  const sel = bulkSelection(filter, o, op, direction, 'delete');
  return onCursor(native, sel, op, async (cursor) => {
    const r = await cursor.deleteStreaming(sel.dryRun);
    return { matched: r.matched, deleted: r.applied, alreadyGone: r.alreadyGone, failed: failuresOf(r, op) };
  });
}
