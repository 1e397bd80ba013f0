// The code under test: what an application does with the conntrack table.
import { Conntrack } from 'conntrack';

/** Entries per protocol, e.g. { tcp: 5, udp: 3 }. */
export async function flowsByProtocol(ct) {
  const counts = {};
  for await (const e of ct.dump()) counts[e.protocol] = (counts[e.protocol] ?? 0) + 1;
  return counts;
}

/** Drops every flow from `cidr` (a banned client, a drained backend): how many went. */
export async function evict(ct, cidr) {
  const r = await ct.deleteBySource(cidr);
  return r.deleted;
}

/** Where the app runs: the namespace it is told, or its own. */
export function open(netns) {
  return Conntrack.open(netns === undefined ? {} : { netns });
}
