#!/usr/bin/env bash
# Rebuilds native/fuzz/corpus from real kernel messages: a throwaway namespace
# with TCP/UDP/ICMP/SCTP/GRE entries over IPv4 and IPv6, zones, marks,
# counters, timestamps and labels-free entries, captured by capture_corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-fuzz -DCONNTRACK_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build build-fuzz --target capture_corpus >/dev/null
ns="ctfuzz-$$"
ip netns add "$ns"
trap 'ip netns delete "$ns"' EXIT
ip netns exec "$ns" sysctl -qw net.netfilter.nf_conntrack_acct=1 net.netfilter.nf_conntrack_timestamp=1
c() { ip netns exec "$ns" conntrack "$@" >/dev/null 2>&1 || echo "skipped: conntrack $*" >&2; }
c -I -p tcp -s 10.0.0.1 -d 10.0.0.2 --sport 1 --dport 80 --state ESTABLISHED -u ASSURED -t 100 -m 7
c -I -p tcp -s 2001:db8::1 -d 2001:db8::2 --sport 1 --dport 443 --state SYN_SENT -t 100 -w 3
c -I -p udp -s 10.0.0.3 -d 10.0.0.4 --sport 53 --dport 53 -t 30
c -I -p udp -s ::ffff:10.0.0.1 -d ::1 --sport 5 --dport 6 -t 30 -m 4294967295
c -I -p icmp -s 10.0.0.5 -d 10.0.0.6 --icmp-type 8 --icmp-code 0 --icmp-id 7 -t 30
c -I -p icmpv6 -s fe80::1 -d fe80::2 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 9 -t 30
c -I -p sctp -s 10.0.0.7 -d 10.0.0.8 --sport 9 --dport 10 --state ESTABLISHED -t 30
c -I -p gre -s 10.0.0.9 -d 10.0.0.10 -t 30
mkdir -p native/fuzz/corpus
rm -f native/fuzz/corpus/message-* native/fuzz/corpus/buffer-*
./build-fuzz/capture_corpus "/run/netns/$ns" native/fuzz/corpus
