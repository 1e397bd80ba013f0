import { constants } from 'node:os';
import { capabilityAdvice } from './capabilities.js';

/** Names of errno values, e.g. 1 -> 'EPERM'. */
const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/** What went wrong, as the operator should read it, by errno code. */
const hints: Record<string, string> = {
  ENOENT: 'no such conntrack entry',
  EEXIST: 'an entry with this tuple already exists',
  EINVAL: 'the kernel rejected the request as invalid',
  EOPNOTSUPP: 'the running kernel does not support this request',
  ENOBUFS: 'events were lost: the kernel could not queue them (raise bufferBytes or consume faster)',
  EBADF: 'the handle was closed',
  EBUSY: 'busy: the kernel refused to change this entry now, or another operation is still running on this cursor',
  ECANCELED: 'the operation was cancelled',
  EMFILE: 'this process has no file descriptor left: raise its limit (ulimit -n, systemd LimitNOFILE=) or close handles and streams it no longer uses',
  EPROTONOSUPPORT: 'nf_conntrack_netlink is not available: load it with `modprobe nf_conntrack_netlink`',
};

/**
 * What a ConntrackError's `code` can be: `ERR_INVALID_ARG` for an argument
 * this package refused before anything reached the kernel (errno 22, like
 * EINVAL, so errno checks keep working), the errno names it raises itself or
 * maps to advice, and any other errno name the kernel or the system returns.
 */
export type ConntrackErrorCode =
  | 'ERR_INVALID_ARG'
  | 'EPERM'
  | 'EACCES'
  | 'ENOENT'
  | 'EEXIST'
  | 'EINVAL'
  | 'EOPNOTSUPP'
  | 'ENOBUFS'
  | 'EBADF'
  | 'EBUSY'
  | 'ECANCELED'
  | 'EPROTONOSUPPORT'
  | 'ENOMEM'
  | 'EIO'
  | 'EAGAIN'
  | 'ENOSPC'
  | 'ESTALE'
  | 'EROFS'
  | 'ETIMEDOUT'
  | 'ENODATA'
  | 'EADDRINUSE'
  | (string & {});

/**
 * Every failure of this package. `code` is `ERR_INVALID_ARG` for a refused
 * argument, else the errno name ('EPERM', 'ENOENT', 'EEXIST', 'EINVAL' from
 * the kernel, 'ENOBUFS', ...); `errno` its number and `op` the operation that
 * failed ('open', 'dump', 'create', 'events', ...).
 */
export class ConntrackError extends Error {
  readonly code: ConntrackErrorCode;
  readonly errno: number;
  readonly op: string;
  /**
   * With ERR_INVALID_ARG, where one argument is to blame: its path in the
   * call's arguments ('src[0]', 'nat.dst', 'timeout'), or the option that
   * would allow the call ('all'). A tool maps it to its own spelling (ctmon
   * names the flag that was typed).
   */
  readonly argument?: string;

  constructor(code: ConntrackErrorCode, op: string, message: string, options?: { cause?: unknown; argument?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ConntrackError';
    this.code = code;
    this.op = op;
    this.errno = code === 'ERR_INVALID_ARG' ? constants.errno.EINVAL : ((constants.errno as Record<string, number>)[code] ?? 0);
    if (options?.argument !== undefined) this.argument = options.argument;
  }

  /**
   * An argument refused before anything reached the kernel (told apart from
   * the kernel's EINVAL by its code). With `argument`, the message starts
   * with it: `${op}: ${argument}...`.
   */
  static invalid(op: string, message: string, argument?: string): ConntrackError {
    return new ConntrackError('ERR_INVALID_ARG', op, `${op}: ${message}`, argument === undefined ? undefined : { argument });
  }

  /** From an errno number reported by the native layer or the kernel. */
  static fromErrno(errno: number, op: string, detail?: string): ConntrackError {
    const code = errnoNames.get(errno) ?? `E${errno}`;
    const hint = detail ?? hints[code] ?? (code === 'EPERM' || code === 'EACCES' ? capabilityAdvice(['CAP_NET_ADMIN'], op) : `system error ${code}`);
    return new ConntrackError(code, op, `${op}: ${hint} (${code})`);
  }
}

/** Shape of errors thrown by the addon: an Error with errno and op. */
interface NativeError {
  errno: number;
  op?: string;
}

function isNativeError(e: unknown): e is Error & NativeError {
  return e instanceof Error && typeof (e as Partial<NativeError>).errno === 'number';
}

/** Turns whatever the addon threw into a ConntrackError with an actionable message. */
export function wrapNative(e: unknown, op: string, details?: Partial<Record<string, string>>): ConntrackError {
  if (e instanceof ConntrackError) return e;
  if (isNativeError(e)) {
    const code = errnoNames.get(e.errno) ?? '';
    return ConntrackError.fromErrno(e.errno, op, details?.[code]);
  }
  return new ConntrackError('EIO', op, `${op}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}
