/**
 * The controller's command history: runs commands through the {@link Fleet}, keeps every one in
 * `$VMC_HOME/commands/` (see docs/COMMANDS.md), and reports them to the endpoint as events.
 * @packageDocumentation
 */
import type { z } from "zod";
import { VmcError, VmcErrorCodes } from "@vmc/protocol/errors";
import type { CmdInputRequest, CmdListRequest, CmdRunRequest, CommandOutputEvent, CommandRecord, CommandSummary, VmStateChange } from "@vmc/protocol/rpc";
import type { Fleet } from "../fleet/fleet";

export type CmdRunParams = z.infer<typeof CmdRunRequest.params>;
export type CmdInputParams = z.infer<typeof CmdInputRequest.params>;
export type CmdListParams = NonNullable<z.infer<typeof CmdListRequest.params>>;

/** What the service reports; the endpoint forwards them as notifications. */
export interface CommandEvents {
  started(record: CommandRecord): void;
  output(event: CommandOutputEvent): void;
  /** Called after the finished record is in the store. */
  finished(record: CommandRecord): void;
}

/** Which VM an agent lives in (the endpoint implements it from the VM registry). */
export interface VmDirectory {
  vmOfAgent(agentId: string): string | undefined;
}

export interface CommandServiceOptions {
  home: string;
  fleet: Fleet;
  events: CommandEvents;
  vms: VmDirectory;
  log?: (message: string) => void;
}

export class CommandService {
  private constructor(private readonly options: CommandServiceOptions) {}

  static async open(options: CommandServiceOptions): Promise<CommandService> {
    return new CommandService(options);
  }

  run(_params: CmdRunParams, _signal?: AbortSignal): Promise<CommandRecord> {
    throw new VmcError(VmcErrorCodes.UnknownCommand, "not implemented yet");
  }

  async input(_params: CmdInputParams): Promise<void> {}

  cancel(id: string): Promise<CommandRecord> {
    return this.get(id);
  }

  async list(_params?: CmdListParams): Promise<CommandSummary[]> {
    return [];
  }

  async get(id: string): Promise<CommandRecord> {
    throw new VmcError(VmcErrorCodes.UnknownCommand, `no command ${id}`, { id });
  }

  vmStateChanged(_change: VmStateChange): void {}

  snapshotRestored(_vm: string, _agentId: string, _snapshotTakenAt: number, _restoredAt: number, _snapshot?: string): void {}

  async close(): Promise<void> {
    void this.options;
  }
}
