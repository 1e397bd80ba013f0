/**
 * Who made each test namespace, kept where the next run can read it, so a
 * run killed with SIGKILL leaves nothing for long: the next run with the same
 * prefix removes what belonged to a process that is gone. A process is named
 * by its pid and its start time (a pid alone is reused). Shared by
 * conntrack/testing and this repository's own test helpers: one mechanism.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A process as the kernel names it over time: pid plus start time (clock ticks since boot). */
export interface ProcessId {
  pid: number;
  start: string;
}

/** What the record of one namespace says. */
export interface OwnerRecord {
  /** The namespace's name (under /run/netns when `named`), also the record's file name. */
  name: string;
  /** Mounted under /run/netns (outlives its owner until removed), or held only by the owner (gone with it). */
  named: boolean;
  owner: ProcessId;
  /** Processes started inside: they would keep the namespace, and run, after the owner died. */
  processes: ProcessId[];
}

/** A process's start time from /proc/PID/stat (field 22, after the parenthesised name), or undefined if it is gone (or a zombie: it holds no namespace any more). */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' || fields[0] === 'X' ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

/** This process, or `pid`, as a ProcessId (undefined if it is gone). */
export function processId(pid = process.pid): ProcessId | undefined {
  const start = processStart(pid);
  return start === undefined ? undefined : { pid, start };
}

/** True while the very process `id` names runs (not a later one with its pid). */
export function alive(id: ProcessId): boolean {
  return processStart(id.pid) === id.start;
}

let chosenDir: string | undefined;

/**
 * Where records live: /run/conntrack-testing (tmpfs, cleared at boot with the
 * namespaces), or a directory under the temporary directory where /run is not writable.
 */
export function ownersDir(): string {
  if (chosenDir !== undefined) return chosenDir;
  for (const dir of ['/run/conntrack-testing', join(tmpdir(), `conntrack-testing-${process.getuid?.() ?? 0}`)]) {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chosenDir = dir;
      return dir;
    } catch {
      // read-only /run: try the next
    }
  }
  throw new Error('conntrack/testing: neither /run nor the temporary directory is writable for owner records');
}

function recordPath(name: string): string {
  return join(ownersDir(), `${name}.json`);
}

/** Writes (or rewrites) a namespace's record; atomically, so a sweep never reads half of one. */
export function writeOwnerRecord(record: OwnerRecord): void {
  const path = recordPath(record.name);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(record));
  renameSync(tmp, path);
}

export function dropOwnerRecord(name: string): void {
  rmSync(recordPath(name), { force: true });
}

/** Removes a namespace mounted under /run/netns (what `ip netns delete` does); false if `ip` could not. */
export function deleteNamedNetns(name: string): boolean {
  if (!existsSync(`/run/netns/${name}`)) return true;
  return spawnSync('ip', ['netns', 'delete', name], { stdio: 'ignore' }).status === 0;
}

function readRecord(file: string): OwnerRecord | undefined {
  try {
    const r = JSON.parse(readFileSync(file, 'utf8')) as OwnerRecord;
    return typeof r.name === 'string' && typeof r.owner?.pid === 'number' ? r : undefined;
  } catch {
    return undefined; // being written, or removed by a concurrent sweep
  }
}

/**
 * Removes what processes that are gone left under `prefix-*`: their
 * processes still running inside (SIGKILL, only the very ones recorded), the
 * namespace's /run/netns mount, the record. Returns the names swept. Records
 * of live owners, and namespaces without a record, are never touched.
 */
export function sweepStale(prefix: string): string[] {
  let dir: string;
  let files: string[];
  try {
    dir = ownersDir();
    files = readdirSync(dir).filter((f) => f.startsWith(`${prefix}-`) && f.endsWith('.json'));
  } catch {
    return [];
  }
  const swept: string[] = [];
  for (const file of files) {
    const record = readRecord(join(dir, file));
    if (record === undefined || alive(record.owner)) continue;
    for (const p of record.processes ?? []) {
      if (alive(p)) {
        try {
          process.kill(-p.pid, 'SIGKILL'); // exec() makes each program a process group's leader
        } catch {
          // exited meanwhile
        }
      }
    }
    if (!record.named || deleteNamedNetns(record.name)) {
      dropOwnerRecord(record.name);
      swept.push(record.name);
    }
  }
  return swept;
}
