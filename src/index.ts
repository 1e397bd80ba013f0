export { Conntrack } from './conntrack.js';
export { counterTotals } from './conntrack.js';
export { STATS_COUNTERS, type CounterKey } from './stats-counters.js';
export type { CounterTotals, CpuStats, FlushOptions, NamespaceId, NamespaceState, OpenOptions, ReadOptions, Stats } from './conntrack.js';
export type { CreateSpec, EntryReadings, FlowKey, NatTarget, SctpVtags, UpdateChanges, UpdateSpec } from './flow.js';
export type { UpdateOptions, UpdateResult } from './bulk-update.js';
export type { DeleteFailure, DeleteOptions, DeleteResult } from './bulk-delete.js';
export { LiveTable } from './live-table.js';
export type { DestinationCount, LiveTableOptions, LiveTableStats, SourceCount, StateCount, TupleKey } from './live-table.js';
export { ConntrackEventStream, DEFAULT_BUFFER_BYTES, DEFAULT_QUEUE_LIMIT } from './events.js';
export type { ConntrackEvent, EntryEvent, EventOptions, EventStats, EventType, ExpectationEvent, ExpectationEventOptions, ExpectationEventType, ExpectationStreamEvent, OverrunEvent } from './events.js';
export { FlowStream } from './flows.js';
export type { FlowEndpoint, FlowLogRecord, FlowLogStatus, FlowLost, FlowNdjsonOptions, FlowOptions, FlowRecord } from './flows.js';
export type { IpfixOptions } from './ipfix.js';
export { EXPECT_FLAGS, Expectations } from './expectation.js';
export type { Expectation, ExpectationKey, ExpectationSpec, ExpectFlag } from './expectation.js';
export { ConntrackError } from './errors.js';
export type { ConntrackErrorCode } from './errors.js';
export type { Direction, Filter, IcmpMatch, MarkMatch, NatKind, NatMatch, ReplyMatch } from './filter.js';
export { CONNLABEL_CONF, labelMap, reloadLabelMap } from './labels.js';
export type { LabelMap } from './labels.js';
export {
  DCCP_STATES, entryToJSON, PROTOCOL_NUMBERS, SCTP_STATES, STATUS_FLAGS, TCP_STATES,
} from './entry.js';
export type {
  Counters, DccpState, Entry, EntryJSON, Family, IcmpInfo, ProtocolName, SctpState, StateName, StatusFlag, TcpState, Tuple,
} from './entry.js';
export { bucketsFor, defaultTimeouts, diagnose, ENTRIES_PER_GIB } from './doctor.js';
export type {
  DestinationShare, Diagnosis, DiagnoseOptions, Finding, Rates, Scope, Severity, SourceShare, SysctlChange, TableFacts,
} from './doctor.js';
export type { KernelLogFacts } from './kernel-log.js';
export type { PortOwner } from './process.js';
