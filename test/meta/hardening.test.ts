/**
 * The heavier guarantees, at CI length: the whole suite against the
 * AddressSanitizer/UndefinedBehaviorSanitizer build, the decoder under
 * libFuzzer, and the soak (no growth of RSS, heap, fds or threads).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { describePrivileged } from '../helpers/netns.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

function npm(script: string, env: Record<string, string>, timeoutMs: number): { status: number | null; out: string } {
  const r = spawnSync('npm', ['run', script], { cwd: root, env: { ...process.env, ...env }, encoding: 'utf8', timeout: timeoutMs, maxBuffer: 1 << 28 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

describePrivileged('hardening at CI length', () => {
  it('the whole suite passes against the ASan/UBSan build (npm run test:asan)', () => {
    // The suite under ASan: ~2x the plain run's time, 15+ min since the testing, flow and live-table suites.
    const r = npm('test:asan', {}, 1_800_000);
    const summary = /(\d+) passed, (\d+) failed, (\d+) skipped/.exec(r.out);
    expect(r.out).not.toMatch(/ERROR: AddressSanitizer|runtime error:/);
    expect(summary, r.out.slice(-3000)).not.toBeNull();
    expect(Number(summary![1])).toBeGreaterThan(50);
    // eslint-disable-next-line no-control-regex
    const failures = r.out.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter((l) => /^\s*(×|FAIL)|Error:/.test(l));
    expect(summary!.slice(2), failures.join('\n')).toEqual(['0', '0']);
    expect(r.status).toBe(0);
  }, 1_800_000);

  it('the netlink decoder survives libFuzzer (npm run fuzz)', () => {
    const seconds = process.env.FUZZ_SECONDS ?? '60';
    const r = npm('fuzz', { FUZZ_SECONDS: seconds }, (Number(seconds) + 180) * 1000);
    expect(r.out, r.out.slice(-3000)).toMatch(/Done \d+ runs in \d+ second/);
    expect(r.out).not.toMatch(/ERROR: (AddressSanitizer|libFuzzer)|runtime error:/);
    expect(r.status).toBe(0);
  }, 600_000);

  it('the soak finds no growth (npm run soak)', () => {
    const seconds = process.env.SOAK_SECONDS ?? '90';
    const r = npm('soak', { SOAK_SECONDS: seconds }, (Number(seconds) + 120) * 1000);
    expect(r.out, r.out.slice(-3000)).toContain('PASS: no growth beyond bounds after warm-up');
    expect(r.status).toBe(0);
  }, 1_800_000);
});
