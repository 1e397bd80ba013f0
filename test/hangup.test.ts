/**
 * SIGHUP, what a closed terminal sends: the daemon (ctmon exporter) logs it
 * and keeps serving, also once its terminal is gone and its log lines go
 * nowhere; a terminal command (ctmon watch) ends as on Ctrl-C, its JSON
 * array closed and its totals printed.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { CTMON, Tmux } from './helpers/cli.js';
import { describePrivileged, useCleanup, useNamespace, waitFor } from './helpers/netns.js';

async function scrapeOk(port: number): Promise<boolean> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  await r.text();
  return r.status === 200;
}

describePrivileged('SIGHUP: the exporter keeps serving, ctmon watch ends cleanly', () => {
  const fx = useNamespace('each', 'cthup');
  const cleanup = useCleanup();

  it('ctmon exporter logs a SIGHUP and keeps serving; SIGTERM still stops it with exit 0', async () => {
    const proc = spawn(process.execPath, [CTMON, 'exporter', '--netns', fx.ns.name, '--listen', '127.0.0.1:0', '--doctor', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    cleanup.push(() => proc.kill('SIGKILL'));
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const port = await waitFor(() => Number(/serving http:\/\/127\.0\.0\.1:(\d+)/.exec(err)?.[1]) || undefined, 10_000, 'the exporter to listen');
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    proc.kill('SIGHUP');
    await waitFor(() => (err.includes('SIGHUP received: ignored, still serving') ? true : undefined), 5000, 'the SIGHUP log line');
    proc.kill('SIGHUP');
    expect(await scrapeOk(port)).toBe(true);
    expect(proc.exitCode).toBeNull();
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('ctmon exporter outlives its terminal: the terminal closes, and a log line to it afterwards is dropped', async () => {
    const tmux = new Tmux(`${process.execPath} ${CTMON} exporter --netns ${fx.ns.name} --listen 127.0.0.1:0 --doctor 0`);
    cleanup.push(() => tmux.kill());
    const port = await waitFor(() => Number(/serving http:\/\/127\.0\.0\.1:(\d+)/.exec(tmux.capture().replace(/\n/g, ''))?.[1]) || undefined, 10_000, 'the exporter to listen');
    const shell = execFileSync('tmux', ['display-message', '-p', '-t', tmux.session, '#{pane_pid}'], { encoding: 'utf8' }).trim();
    const pid = Number(readFileSync(`/proc/${shell}/task/${shell}/children`, 'utf8').trim().split(' ')[0]);
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('exporter');
    cleanup.push(() => {
      if (existsSync(`/proc/${pid}`)) process.kill(pid, 'SIGKILL');
    });
    tmux.kill(); // the terminal hangs up: SIGHUP to the exporter
    await waitFor(() => (!existsSync(`/proc/${shell}`) ? true : undefined), 5000, 'the terminal\'s shell to end');
    expect(await scrapeOk(port)).toBe(true);
    process.kill(pid, 'SIGHUP'); // its log line goes to a terminal that is gone
    expect(await scrapeOk(port)).toBe(true);
    process.kill(pid, 'SIGTERM');
    await waitFor(() => (!existsSync(`/proc/${pid}`) ? true : undefined), 5000, 'the exporter to stop on SIGTERM');
  });

  it('ctmon watch -o json ends on SIGHUP as on Ctrl-C: exit 0, the array closed, the totals on stderr', async () => {
    const proc = spawn(process.execPath, [CTMON, 'watch', '--netns', fx.ns.name, '-o', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    cleanup.push(() => proc.kill('SIGKILL'));
    let out = '';
    let err = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    await waitFor(() => (err.includes('watching') ? true : undefined), 10_000, 'watch to subscribe');
    fx.ns.conntrack('-I', '-p', 'udp', '-s', '10.1.1.1', '-d', '10.2.2.2', '--sport', '1', '--dport', '2', '-t', '30');
    await waitFor(() => (out.includes('10.1.1.1') ? true : undefined), 5000, 'the event printed');
    const exited = new Promise<[number | null, string | null]>((resolve) => proc.on('exit', (code, signal) => resolve([code, signal])));
    proc.kill('SIGHUP');
    expect(await exited).toEqual([0, null]);
    expect((JSON.parse(out) as { type: string }[]).map((e) => e.type)).toEqual(['new']);
    expect(err).toMatch(/ctmon: 1 events shown, 0 lost/);
  });
});
