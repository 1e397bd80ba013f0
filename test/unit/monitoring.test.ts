/**
 * The monitoring examples as users take them: alert rules checked and
 * unit-tested by promtool (Debian's prometheus package), the Grafana
 * dashboard and README's tables naming only metrics the exporter serves, the
 * DaemonSet giving the exporter what it needs. No root needed.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { METRIC_NAMES } from '../../src/prometheus.js';

const root = new URL('../../', import.meta.url).pathname;
const read = (p: string): string => readFileSync(root + p, 'utf8');
/** Metric names in a PromQL expression (identifiers followed by `{`, `[` or a space/paren, starting conntrack_). */
const metricsIn = (expr: string): string[] => [...expr.matchAll(/\b(conntrack_[a-z_]+)\b/g)].map((m) => m[1]!);

describe('monitoring examples (pure)', () => {
  it('promtool checks the alert rules and their unit tests pass (the table-full alert fires)', () => {
    const check = spawnSync('promtool', ['check', 'rules', 'examples/prometheus/conntrack.rules.yml'], { cwd: root, encoding: 'utf8' });
    expect(check.stdout + check.stderr).toContain('SUCCESS: 5 rules found');
    expect(check.status).toBe(0);
    const test = spawnSync('promtool', ['test', 'rules', 'test/monitoring/conntrack.rules.test.yml'], { cwd: root, encoding: 'utf8' });
    expect(test.stdout + test.stderr).toContain('SUCCESS');
    expect(test.status).toBe(0);
  });

  it('the rules and the dashboard use only metrics the exporter serves', () => {
    const rules = parse(read('examples/prometheus/conntrack.rules.yml')) as { groups: { rules: { alert: string; expr: string }[] }[] };
    const ruleMetrics = rules.groups.flatMap((g) => g.rules.flatMap((r) => metricsIn(r.expr)));
    const dashboard = JSON.parse(read('examples/grafana/conntrack.json')) as { panels: { title: string; targets: { expr: string }[] }[] };
    const dashMetrics = dashboard.panels.flatMap((p) => p.targets.flatMap((t) => metricsIn(t.expr)));
    for (const m of [...ruleMetrics, ...dashMetrics]) expect(METRIC_NAMES).toContain(m);
    // What the issue asks the dashboard to show.
    for (const m of ['conntrack_entries_limit', 'conntrack_stat_drop_total', 'conntrack_stat_early_drop_total', 'conntrack_stat_insert_failed_total',
      'conntrack_entries_by_state', 'conntrack_top_source_entries', 'conntrack_events_total', 'conntrack_events_lost_total']) {
      expect(dashMetrics).toContain(m);
    }
    expect(rules.groups[0]!.rules.map((r) => r.alert)).toEqual(expect.arrayContaining(['ConntrackTableNearlyFull', 'ConntrackDropping', 'ConntrackInsertFailing', 'ConntrackEventsLost']));
  });

  it('README maps node_exporter names to metrics the exporter serves, and lists every metric', () => {
    const readme = read('README.md');
    const section = readme.slice(readme.indexOf('## Monitoring'));
    expect(section.length).toBeGreaterThan(100);
    const rows = [...section.matchAll(/^\| `(node_nf_conntrack_[a-z_]+)` \| (.*) \|$/gm)];
    expect(rows.map((r) => r[1])).toEqual(expect.arrayContaining(['node_nf_conntrack_entries', 'node_nf_conntrack_entries_limit', 'node_nf_conntrack_stat_drop']));
    for (const r of rows) for (const m of metricsIn(r[2]!)) expect(METRIC_NAMES).toContain(m);
    for (const m of METRIC_NAMES) expect(section, `README's Monitoring section names ${m}`).toContain(m.startsWith('conntrack_stat_') ? 'conntrack_stat_' : m);
  });

  it('the DaemonSet runs the exporter on the host network with NET_ADMIN and the host\'s /run/netns', () => {
    const ds = parse(read('examples/kubernetes/daemonset.yaml')) as {
      kind: string;
      spec: { template: { spec: { hostNetwork: boolean; containers: { args: string[]; securityContext: { capabilities: { add: string[] } }; volumeMounts: { mountPath: string; mountPropagation: string }[] }[]; volumes: { hostPath: { path: string } }[] } } };
    };
    expect(ds.kind).toBe('DaemonSet');
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    const c = pod.containers[0]!;
    expect(c.args[0]).toBe('exporter');
    expect(c.securityContext.capabilities.add).toContain('NET_ADMIN');
    expect(c.volumeMounts).toContainEqual(expect.objectContaining({ mountPath: '/run/netns', mountPropagation: 'HostToContainer' }));
    expect(pod.volumes.map((v) => v.hostPath.path)).toContain('/run/netns');
  });

  it('the Dockerfile installs the two runtime libraries the addon links, as Debian names them', () => {
    const docker = read('Dockerfile');
    // The base is a build argument (scripts/image.sh's BASE_IMAGE), the official slim Node image by default.
    expect(docker).toMatch(/^ARG BASE_IMAGE=node:20-[a-z]+-slim$/m);
    expect(docker).toMatch(/^FROM \$\{BASE_IMAGE\}$/m);
    const addon = `${root}build/Release/conntrack.node`;
    const needed = execFileSync('objdump', ['-p', addon], { encoding: 'utf8' }).match(/NEEDED\s+(\S+)/g)!.map((l) => l.split(/\s+/)[1]!);
    // libnetfilter_conntrack.so.3 -> libnetfilter-conntrack3, libmnl.so.0 -> libmnl0 (the others are in every image).
    expect(needed).toEqual(expect.arrayContaining(['libnetfilter_conntrack.so.3', 'libmnl.so.0']));
    expect(docker).toContain('libnetfilter-conntrack3');
    expect(docker).toContain('libmnl0');
    expect(docker).toMatch(/ENTRYPOINT \["ctmon"\]/);
  });
});
