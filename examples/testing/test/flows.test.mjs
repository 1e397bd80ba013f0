// node:test on conntrack/testing: a throwaway namespace per test, real
// traffic, the conntrack CLI inside it as the judge, no sleeps.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { createTestNamespace, privileges, waitForEvent } from 'conntrack/testing';
import { evict, flowsByProtocol, open } from '../flows.mjs';

const p = privileges();
// Without the capabilities: skipped with the reason, or failed where CI demands them.
const skip = !p.ok && process.env.CONNTRACK_REQUIRE_PRIVILEGED !== '1' && `needs ${p.missing.join(' and ')}`;

/** `conntrack -C` inside the namespace: the kernel's count, by another program. */
async function cliCount(ns) {
  const r = await ns.exec('conntrack', ['-C']);
  assert.equal(r.code, 0, r.stderr);
  return Number(r.stdout.trim());
}

describe('flows', { skip }, () => {
  let ns;
  beforeEach(async () => {
    ns = await createTestNamespace();
  });
  afterEach(() => ns.close());

  it('counts real TCP and UDP flows by protocol', async () => {
    await ns.tcpFlows({ count: 5 });
    await ns.udpFlows({ count: 3 });
    assert.equal(await cliCount(ns), 8); // the helpers add no entries of their own
    const ct = await open(ns.netns);
    try {
      assert.deepEqual(await flowsByProtocol(ct), { tcp: 5, udp: 3 });
    } finally {
      ct.close();
    }
  });

  it('evicts a filled range and leaves the rest', async () => {
    await ns.fill(1000, { src: '10.1.0.0/16' });
    await ns.fill(10, { src: '10.2.0.0/24' });
    assert.equal(await evict(ns.conntrack, '10.1.0.0/16'), 1000);
    assert.equal(await cliCount(ns), 10);
  });

  it('sees the NEW event of a connection it makes', async () => {
    const stream = ns.conntrack.events({ types: ['new'], filter: { protocol: 'tcp' } });
    try {
      await stream.ready;
      const [flow] = await ns.tcpFlows({ count: 1 });
      const ev = await waitForEvent(stream, (e) => e.type === 'new' && e.entry.original.sport === flow.original.sport, { timeoutMs: 5000 });
      assert.equal(ev.entry.original.dport, flow.original.dport);
    } finally {
      stream.close();
    }
  });
});
