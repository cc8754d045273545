/**
 * Error codes: JSON-RPC's own, plus the VM Controller domain range -33000..-33099.
 * @packageDocumentation
 */

/** JSON-RPC 2.0 codes. */
export namespace RpcErrorCodes {
  export const ParseError = -32700;
  export const InvalidRequest = -32600;
  export const MethodNotFound = -32601;
  export const InvalidParams = -32602;
  export const InternalError = -32603;
  /** The request was cancelled with `$/cancelRequest`. */
  export const RequestCancelled = -32800;
}

/** Domain codes: one per typed error the controller raises. */
export namespace VmcErrorCodes {
  export const UnknownVm = -33001;
  /** The VM is in the wrong state for the operation; `data.state` names the current one. */
  export const InvalidState = -33002;
  /** The VM's driver cannot do this; `data.driver` names it. */
  export const NotSupported = -33003;
  export const AgentUnreachable = -33004;
  export const UnknownSnapshot = -33005;
  export const AlreadyExists = -33006;
  export const UnknownCommand = -33007;
  export const TransferFailed = -33008;
  export const BrokerUnavailable = -33009;
  export const HypervisorFailed = -33010;
  export const ImageMissing = -33011;
  /** Nothing at that guest path (`fs.*`). */
  export const UnknownPath = -33012;
  /** The file is larger than the request allows (`fs.readFile`). */
  export const TooLarge = -33013;
  /** The server is shutting down or has shut down: no new work is taken. */
  export const ShuttingDown = -33014;
}
export type VmcErrorCode = (typeof VmcErrorCodes)[keyof typeof VmcErrorCodes];

/** An error that crosses a process boundary with a code and structured data. */
export class VmcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "VmcError";
  }
}
