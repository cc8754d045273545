/**
 * The one handler table both endpoints serve: method → params schema → handler, built from the
 * catalogue's namespaces in @vmc/protocol/rpc, so a method's name, params and result type are
 * spelled only there.
 * @packageDocumentation
 */
import type { RequestType } from "vscode-jsonrpc";
import type { z } from "zod";
import {
  AgentListRequest,
  CmdCancelRequest,
  CmdGetRequest,
  CmdInputRequest,
  CmdListRequest,
  CmdRunRequest,
  FileGetRequest,
  FilePutRequest,
  FsDeleteRequest,
  FsMkdirRequest,
  FsReadDirRequest,
  FsReadFileRequest,
  FsRenameRequest,
  FsStatRequest,
  FsWriteFileRequest,
  HandshakeRequest,
  SnapshotDeleteRequest,
  SnapshotListRequest,
  SnapshotRestoreRequest,
  SnapshotTakeRequest,
  VmCreateRequest,
  VmDeleteRequest,
  VmListRequest,
  VmPauseRequest,
  VmResumeRequest,
  VmStartRequest,
  VmStopRequest,
  type TransferProgressValue,
} from "@vmc/protocol/rpc";
import type { Controller } from "../controller/controller";

export interface RequestContext {
  /** Aborted by `$/cancelRequest` for this request (or when the endpoint shuts down). */
  signal: AbortSignal;
  /** Sends `$/progress` with the request's `workDoneToken`; a no-op without one. */
  progress(value: TransferProgressValue): void;
}

export interface Handler {
  method: string;
  params: z.ZodType;
  handle(params: unknown, context: RequestContext): Promise<unknown>;
}

export type HandlerTable = ReadonlyMap<string, Handler>;

interface Catalogued<S extends z.ZodType, R> {
  method: string;
  params: S;
  type: RequestType<z.infer<S>, R, void>;
}

function entry<S extends z.ZodType, R>(request: Catalogued<S, R>, handle: (params: z.output<S>, context: RequestContext) => Promise<R>): Handler {
  return { method: request.method, params: request.params, handle: (p, c) => handle(p as z.output<S>, c) };
}

export function handlerTable(controller: Controller): HandlerTable {
  const c = controller;
  const fs = c.guestFs;
  const handlers: Handler[] = [
    entry(HandshakeRequest, async () => c.handshake()),
    entry(VmListRequest, () => c.listVms()),
    entry(VmCreateRequest, (p, ctx) =>
      c.createVm(p, p.workDoneToken === undefined ? undefined : (message) => ctx.progress({ kind: "report", message, bytesDone: 0, bytesTotal: 0, rate: 0, etaMs: null })),
    ),
    entry(VmStartRequest, (p, ctx) => c.startVm(p, ctx.signal)),
    entry(VmStopRequest, (p) => c.stopVm(p)),
    entry(VmPauseRequest, (p) => c.pauseVm(p.name)),
    entry(VmResumeRequest, (p) => c.resumeVm(p.name)),
    entry(VmDeleteRequest, (p) => c.deleteVm(p.name, p.force)),
    entry(SnapshotTakeRequest, (p) => c.takeSnapshot(p.name, p.snapshot)),
    entry(SnapshotRestoreRequest, (p) => c.restoreSnapshot(p.name, p.snapshot)),
    entry(SnapshotListRequest, (p) => c.listSnapshots(p.name)),
    entry(SnapshotDeleteRequest, (p) => c.deleteSnapshot(p.name, p.snapshot)),
    entry(AgentListRequest, (p) => c.listAgents(p ?? {})),
    entry(CmdRunRequest, (p, ctx) => c.commands.run(p, ctx.signal)),
    entry(CmdInputRequest, async (p) => {
      await c.commands.input(p);
      return null;
    }),
    entry(CmdCancelRequest, (p) => c.commands.cancel(p.id)),
    entry(CmdListRequest, (p) => c.commands.list(p ?? {})),
    entry(CmdGetRequest, (p) => c.commands.get(p.id)),
    entry(FilePutRequest, (p, ctx) => c.putFiles(p, ctx.signal, p.workDoneToken === undefined ? undefined : ctx.progress)),
    entry(FileGetRequest, (p, ctx) => c.getFiles(p, ctx.signal, p.workDoneToken === undefined ? undefined : ctx.progress)),
    entry(FsStatRequest, (p) => fs.stat(p)),
    entry(FsReadDirRequest, (p) => fs.readDir(p)),
    entry(FsReadFileRequest, (p) => fs.readFile(p)),
    entry(FsWriteFileRequest, (p) => fs.writeFile(p)),
    entry(FsMkdirRequest, (p) => fs.mkdir(p)),
    entry(FsDeleteRequest, (p) => fs.delete(p)),
    entry(FsRenameRequest, (p) => fs.rename(p)),
  ];
  return new Map(handlers.map((h) => [h.method, h]));
}
