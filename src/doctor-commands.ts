/**
 * The shell commands the doctor's findings print, for the namespace they are
 * about: per-namespace ones run inside it (`ip netns exec NAME`, or `nsenter`
 * for a path), host-wide ones (max, buckets) on the host, and persistence
 * that never writes the host's /etc/sysctl.d for another namespace.
 */
import type { SysctlChange } from './doctor.js';

export class NamespaceCommands {
  /** `name`: the namespace given to open() (null: this process's); `initial`: whether it is the initial one. */
  constructor(
    readonly name: string | null,
    readonly initial: boolean,
  ) {}

  /** `cmd` run in the namespace. */
  inNs(cmd: string): string {
    if (!this.name || this.initial) return cmd;
    return this.name.includes('/') ? `nsenter --net=${this.name} ${cmd}` : `ip netns exec ${this.name} ${cmd}`;
  }

  sysctl(name: string, value: number): string {
    return this.inNs(`sysctl -w net.netfilter.${name}=${value}`);
  }

  /** How to keep a per-namespace setting across reboots (or namespace re-creation). */
  persist(name: string, value: number): string {
    return this.initial
      ? `echo 'net.netfilter.${name} = ${value}' >> /etc/sysctl.d/90-conntrack.conf`
      : `# persist: add \`${this.sysctl(name, value)}\` to whatever creates namespace ${this.name} (its setup script, CNI plugin or unit); /etc/sysctl.d applies to the initial namespace only`;
  }

  /** Set now, and persist. */
  setting(name: string, value: number): string[] {
    return [this.sysctl(name, value), this.persist(name, value)];
  }

  /** The host-wide max and buckets: set and persist, on the host. */
  hostMax(max: number, buckets: number): string[] {
    return [
      `sysctl -w net.netfilter.nf_conntrack_max=${max}`,
      `sysctl -w net.netfilter.nf_conntrack_buckets=${buckets}`,
      `echo 'net.netfilter.nf_conntrack_max = ${max}' >> /etc/sysctl.d/90-conntrack.conf`,
      `echo 'options nf_conntrack hashsize=${buckets}' > /etc/modprobe.d/nf_conntrack.conf   # buckets persist as a module option`,
    ];
  }

  /** notrack for a UDP port, both directions, before conntrack sees the packet: a raw-priority chain (nftables) or the raw table (iptables). */
  notrackUdp(port: number): string[] {
    return [
      this.inNs(`nft 'add table inet ctmon_notrack; add chain inet ctmon_notrack pre { type filter hook prerouting priority raw; }; add chain inet ctmon_notrack out { type filter hook output priority raw; }; add rule inet ctmon_notrack pre udp dport ${port} notrack; add rule inet ctmon_notrack pre udp sport ${port} notrack; add rule inet ctmon_notrack out udp dport ${port} notrack; add rule inet ctmon_notrack out udp sport ${port} notrack'`),
      `# or with iptables (and ip6tables):`,
      ...['PREROUTING', 'OUTPUT'].flatMap((chain) => ['dport', 'sport'].map((dir) => this.inNs(`iptables -t raw -A ${chain} -p udp --${dir} ${port} -j CT --notrack`))),
      `# untracked packets skip stateful rules: accept them explicitly (e.g. udp dport ${port} accept) before any ct state rule drops them`,
    ];
  }

  /** Deletes a source's entries. */
  deleteSource(src: string): string {
    return this.inNs(`conntrack -D --orig-src ${src}`);
  }

  /** Deletes a source's entries, with ctmon's spelling beside conntrack's. */
  deleteSourceOrCtmon(src: string): string {
    return `${this.deleteSource(src)}   # or: ctmon delete --src ${src}${this.name ? ` --netns ${this.name}` : ''}`;
  }

  /** A look at one destination's entries. */
  listDestination(protocol: string, address: string, port: number | undefined): string {
    return this.inNs(`conntrack -L -p ${protocol} --dst ${address}${port !== undefined ? ` --dport ${port}` : ''} | head`);
  }

  /** The kernel log's table-full lines: those naming `inode`, or (null) all conntrack lines. */
  kernelLog(inode: number | null): string {
    return inode !== null ? `dmesg -T | grep 'table full in netns ${inode}'` : 'dmesg -T | grep -i conntrack';
  }
}

/** The host-wide changes `--fix --yes --host` may apply for an advised max and buckets. */
export function hostMaxChanges(max: number, buckets: number): SysctlChange[] {
  return [
    { name: 'nf_conntrack_max', value: max, scope: 'host' },
    { name: 'nf_conntrack_buckets', value: buckets, scope: 'host' },
  ];
}
