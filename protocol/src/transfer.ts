/**
 * The direct data channel (controller ↔ agent file transfer), declared once.
 *
 * A frame is `u32be length | u8 type | payload` where `length` counts the type byte and the
 * payload. Control frames carry a small JSON payload (validated by the schemas below, at most
 * {@link MAX_CONTROL_BYTES}); DATA, ZERO and ACK frames carry a fixed binary header. Over the bus
 * fallback one STOMP message body is one frame without the length prefix.
 *
 * The conversation (controller dials; "sender" is the side that has the files):
 * ```
 * controller → OPEN{token}                 agent → ACCEPT | ERROR
 * sender → MANIFEST{entries, bytes}
 * sender → ENTRY{i, path, kind, ...}       (resume mode, files: receiver → RESUME_AT{i, offset})
 * sender → DATA{i, offset, sha256, bytes} | ZERO{i, offset, length} ...   receiver → ACK{i, offset}
 * sender → FILE_END{i, digest}
 * sender → DONE                            receiver → COMPLETE | ERROR
 * ```
 * Either side may send CANCEL or ERROR at any time and then closes. The sender keeps at most a
 * window of unacknowledged bytes in flight; a receiver ACKs only data it verified and wrote.
 *
 * File digest: SHA-256 over the concatenated SHA-256 digests of the file's chunks (chunk size
 * from the grant; a hash list), so each byte is hashed once per side, a hole costs nothing and a
 * resumed file is verified end to end.
 * @packageDocumentation
 */
import { z } from "zod";

export const DATA_PROTOCOL_VERSION = 1;

export const FrameType = {
  OPEN: 0x01,
  ACCEPT: 0x02,
  MANIFEST: 0x10,
  ENTRY: 0x11,
  DATA: 0x12,
  ZERO: 0x13,
  FILE_END: 0x14,
  RESUME_AT: 0x15,
  ACK: 0x16,
  DONE: 0x17,
  COMPLETE: 0x18,
  CANCEL: 0x1e,
  ERROR: 0x1f,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** Largest JSON payload of a control frame. */
export const MAX_CONTROL_BYTES = 64 * 1024;
/** Binary header of DATA: u32 entry index, u64 offset, 32-byte SHA-256 of the bytes that follow. */
export const DATA_HEADER_BYTES = 4 + 8 + 32;
/** ZERO: u32 entry index, u64 offset, u32 length — a chunk of zero bytes (holes, sparse files). */
export const ZERO_PAYLOAD_BYTES = 4 + 8 + 4;
/** ACK: u32 entry index, u64 offset verified and written. */
export const ACK_PAYLOAD_BYTES = 4 + 8;

const Millis = z.number().int().nonnegative();

export const OpenFrame = z.object({
  version: z.number().int(),
  transferId: z.string().max(64),
  token: z.string().max(64),
});
export type OpenFrame = z.infer<typeof OpenFrame>;

export const AcceptFrame = z.object({ version: z.number().int() });

/** Declared up front; the receiver enforces it (count, bytes) and refuses more. */
export const ManifestFrame = z.object({
  entries: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  /** The root entry is a directory (else a single file or symlink). */
  rootKind: z.enum(["file", "dir", "symlink"]),
});
export type ManifestFrame = z.infer<typeof ManifestFrame>;

/**
 * One tree entry. `path` is relative to the transfer root, `/`-separated, never absolute,
 * never `.`/`..`/empty components; the root itself has path `""`.
 */
export const EntryFrame = z.object({
  i: z.number().int().nonnegative(),
  path: z.string().max(4096),
  kind: z.enum(["file", "dir", "symlink"]),
  mode: z.number().int().min(0).max(0o7777),
  mtimeMs: Millis,
  /** Files: exact byte count. */
  size: z.number().int().nonnegative().optional(),
  /** Symlinks: the link text, kept as is (never followed). */
  target: z.string().max(4096).optional(),
});
export type EntryFrame = z.infer<typeof EntryFrame>;

export const FileEndFrame = z.object({ i: z.number().int().nonnegative(), digest: z.string().regex(/^[0-9a-f]{64}$/) });
export type FileEndFrame = z.infer<typeof FileEndFrame>;

export const ResumeAtFrame = z.object({ i: z.number().int().nonnegative(), offset: z.number().int().nonnegative() });
export type ResumeAtFrame = z.infer<typeof ResumeAtFrame>;

export const DoneFrame = z.object({});
export const CompleteFrame = z.object({ entries: z.number().int().nonnegative(), bytes: z.number().int().nonnegative() });
export type CompleteFrame = z.infer<typeof CompleteFrame>;

export const CancelFrame = z.object({ reason: z.string().max(1024) });

/** Error codes on the data channel; `message` says what and which path. */
export const TransferErrorCode = z.enum([
  "denied", // token unknown, used, expired, or for another agent
  "unsafe-path", // `..`, absolute, through a symlink, name too long
  "limit", // more entries or bytes than declared or allowed, disk space
  "checksum", // a chunk or a file did not match its digest
  "protocol", // malformed or unexpected frame
  "io", // the file system failed
  "cancelled",
  "timeout",
]);
export type TransferErrorCode = z.infer<typeof TransferErrorCode>;
export const ErrorFrame = z.object({ code: TransferErrorCode, message: z.string().max(4096), at: Millis.optional() });
export type ErrorFrame = z.infer<typeof ErrorFrame>;
