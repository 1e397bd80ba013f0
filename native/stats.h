// The kernel's per-CPU conntrack counters (IPCTNL_MSG_CT_GET_STATS_CPU), as
// (JS key, CTA_STATS_* attribute), in `conntrack -S` order. The one native
// list: handle.cc converts a reply with it and addon.cc exports the keys, so
// src/stats-counters.ts can check its table against them at load.
#pragma once

#include <linux/netfilter/nfnetlink_conntrack.h>

#define CT_STATS_COUNTERS(X)                 \
  X(found, CTA_STATS_FOUND)                  \
  X(invalid, CTA_STATS_INVALID)              \
  X(insert, CTA_STATS_INSERT)                \
  X(insertFailed, CTA_STATS_INSERT_FAILED)   \
  X(drop, CTA_STATS_DROP)                    \
  X(earlyDrop, CTA_STATS_EARLY_DROP)         \
  X(error, CTA_STATS_ERROR)                  \
  X(searchRestart, CTA_STATS_SEARCH_RESTART) \
  X(clashResolve, CTA_STATS_CLASH_RESOLVE)   \
  X(chainTooLong, CTA_STATS_CHAIN_TOOLONG)
