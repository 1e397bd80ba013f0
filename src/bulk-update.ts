/**
 * The bulk update (updateWhere): conntrack -U with a filter. Its options and
 * result, and its path: the bulk deletes' streaming cursor, each match
 * changed as conntrack -U changes it (native/change.h) and skipped when the
 * change would leave it as it is. Entries never become JS objects, unless
 * the caller asks for the updated ones.
 */
import { bulkSelection, failuresOf, onCursor, type DeleteFailure } from './bulk-delete.js';
import { checkBoolean, checkKnownKeys, checkOptions, own } from './check.js';
import type { Entry } from './entry.js';
import type { Filter } from './filter.js';
import { encodeChanges } from './flow.js';
import type { NativeHandle } from './native.js';
import { decodeEntries } from './record.js';

export interface UpdateOptions {
  /** Count what the filter selects, update nothing (as the bulk deletes' dryRun). */
  dryRun?: boolean | undefined;
  /**
   * Required when the filter selects every entry of the table or of a family,
   * whatever its syntax ('0.0.0.0/0', nothing but a family, {}), as for the
   * bulk deletes.
   */
  all?: boolean | undefined;
  signal?: AbortSignal | undefined;
  /** Also return the updated entries, as the update left them (`conntrack -U` prints them). */
  entries?: boolean | undefined;
}

export interface UpdateResult {
  /** Entries the filter selected when the table was read. */
  matched: number;
  /**
   * Entries this call changed. Matched entries that already were what the
   * change asks are left alone, as conntrack -U leaves them: they are
   * matched - updated - alreadyGone - failed.length.
   */
  updated: number;
  /** Matched entries that were gone by the time of their update. */
  alreadyGone: number;
  /** Updates the kernel refused (EPERM: a FIXED_TIMEOUT entry's timeout; ENOSPC: labels not enabled; ...). */
  failed: DeleteFailure[];
  /** With `entries: true`: the updated entries as the update left them. */
  entries?: Entry[];
}

const UPDATE_OPTION_KEYS = new Set(['dryRun', 'all', 'signal', 'entries']);

export async function updateMatching(native: NativeHandle, filter: Filter, changes: unknown, options: unknown, op: string, details: Partial<Record<string, string>>): Promise<UpdateResult> {
  const o = checkOptions(options, op);
  checkKnownKeys(o, UPDATE_OPTION_KEYS, op, 'option');
  const change = encodeChanges(changes, op);
  const keepUpdated = checkBoolean(own(o, 'entries'), op, 'entries') === true;
  const sel = bulkSelection(filter, o, op, 'original', 'update');
  return onCursor(native, sel, op, async (cursor) => {
    const r = await cursor.updateStreaming(change, sel.dryRun, keepUpdated);
    const result: UpdateResult = { matched: r.matched, updated: r.applied, alreadyGone: r.alreadyGone, failed: failuresOf(r, op, details) };
    if (keepUpdated) result.entries = r.records ? decodeEntries(r.records, []) : [];
    return result;
  });
}
