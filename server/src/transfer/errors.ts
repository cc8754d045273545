import type { TransferErrorCode } from "@vmc/protocol/transfer";

/** A transfer failed; `code` is the data channel's error code, `message` says what and where. */
export class TransferError extends Error {
  constructor(
    readonly code: TransferErrorCode,
    message: string,
    /** True when the peer reported it (an ERROR frame), false when this side found it. */
    readonly remote = false,
  ) {
    super(message);
    this.name = "TransferError";
  }
}

export function asTransferError(err: unknown, fallback: TransferErrorCode = "io"): TransferError {
  if (err instanceof TransferError) return err;
  const e = err as NodeJS.ErrnoException;
  return new TransferError(fallback, e?.message ? (e.code ? `${e.code}: ${e.message}` : e.message) : String(err));
}
