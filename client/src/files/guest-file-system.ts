import { VmcErrorCodes } from "@vmc/protocol/errors";
import {
  FsDeleteRequest,
  FsMkdirRequest,
  FsReadDirRequest,
  FsReadFileRequest,
  FsRenameRequest,
  FsStatRequest,
  FsWriteFileRequest,
  type GuestFileStat,
} from "@vmc/protocol/rpc";
import * as vscode from "vscode";
import { ResponseError } from "vscode-languageclient/node";
import type { Controller } from "../controller/controller";
import { GUEST_SCHEME, parseGuestUri } from "./guest-uri";

/** Biggest file the editor reads through `fs.readFile` (the API's own ceiling). */
const MAX_READ = 64 * 1024 * 1024;

/**
 * Guest files in the editor: `vmc://<machine>/abs/path`, served by the controller's `fs.*`
 * methods. There is no watching (the guest has no change feed and polling is not an option);
 * changes made through this provider are announced, batched per tick.
 */
export class GuestFileSystem implements vscode.FileSystemProvider, vscode.Disposable {
  private readonly emitter = new vscode.EventEmitter<vscode.FileChangeEvent[]>();
  readonly onDidChangeFile = this.emitter.event;
  private pending: vscode.FileChangeEvent[] = [];
  private flush: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly controller: Controller) {}

  watch(): vscode.Disposable {
    return new vscode.Disposable(() => undefined);
  }

  async stat(uri: vscode.Uri): Promise<vscode.FileStat> {
    const { machine, path } = parseGuestUri(uri);
    const s = await this.call(uri, () => this.controller.request(FsStatRequest.type, { target: machine, path }));
    return { type: fileType(s.type), ctime: s.mtime, mtime: s.mtime, size: s.size, permissions: s.mode & 0o222 ? undefined : vscode.FilePermission.Readonly };
  }

  async readDirectory(uri: vscode.Uri): Promise<[string, vscode.FileType][]> {
    const { machine, path } = parseGuestUri(uri);
    const entries = await this.call(uri, () => this.controller.request(FsReadDirRequest.type, { target: machine, path }));
    return entries.map((e) => [e.name, fileType(e.type)]);
  }

  async readFile(uri: vscode.Uri): Promise<Uint8Array> {
    const { machine, path } = parseGuestUri(uri);
    const r = await this.call(uri, () => this.controller.request(FsReadFileRequest.type, { target: machine, path, maxBytes: MAX_READ }));
    return Buffer.from(r.data, "base64");
  }

  async writeFile(uri: vscode.Uri, content: Uint8Array, options: { create: boolean; overwrite: boolean }): Promise<void> {
    const { machine, path } = parseGuestUri(uri);
    let existed = true;
    if (!options.create || !options.overwrite) {
      existed = await this.exists(machine, path);
      if (!existed && !options.create) throw vscode.FileSystemError.FileNotFound(uri);
      if (existed && !options.overwrite) throw vscode.FileSystemError.FileExists(uri);
    }
    await this.call(uri, () =>
      this.controller.request(FsWriteFileRequest.type, { target: machine, path, data: Buffer.from(content).toString("base64"), create: options.create, overwrite: options.overwrite }),
    );
    this.announce({ type: existed ? vscode.FileChangeType.Changed : vscode.FileChangeType.Created, uri });
  }

  async createDirectory(uri: vscode.Uri): Promise<void> {
    const { machine, path } = parseGuestUri(uri);
    await this.call(uri, () => this.controller.request(FsMkdirRequest.type, { target: machine, path }));
    this.announce({ type: vscode.FileChangeType.Created, uri });
  }

  async delete(uri: vscode.Uri, options: { recursive: boolean }): Promise<void> {
    const { machine, path } = parseGuestUri(uri);
    await this.call(uri, () => this.controller.request(FsDeleteRequest.type, { target: machine, path, recursive: options.recursive }));
    this.announce({ type: vscode.FileChangeType.Deleted, uri });
  }

  async rename(oldUri: vscode.Uri, newUri: vscode.Uri, options: { overwrite: boolean }): Promise<void> {
    const from = parseGuestUri(oldUri);
    const to = parseGuestUri(newUri);
    if (from.machine !== to.machine) throw vscode.FileSystemError.Unavailable("a rename cannot move files between machines");
    await this.call(oldUri, () => this.controller.request(FsRenameRequest.type, { target: from.machine, from: from.path, to: to.path, overwrite: options.overwrite }));
    this.announce({ type: vscode.FileChangeType.Deleted, uri: oldUri }, { type: vscode.FileChangeType.Created, uri: newUri });
  }

  private async exists(machine: string, path: string): Promise<boolean> {
    try {
      await this.controller.request(FsStatRequest.type, { target: machine, path });
      return true;
    } catch (error) {
      if (error instanceof ResponseError && error.code === VmcErrorCodes.UnknownPath) return false;
      throw error;
    }
  }

  private async call<T>(uri: vscode.Uri, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (error) {
      throw toFileSystemError(uri, error);
    }
  }

  private announce(...events: vscode.FileChangeEvent[]): void {
    this.pending.push(...events);
    this.flush ??= setTimeout(() => {
      this.flush = undefined;
      const batch = this.pending;
      this.pending = [];
      this.emitter.fire(batch);
    }, 5);
  }

  dispose(): void {
    if (this.flush) clearTimeout(this.flush);
    this.emitter.dispose();
  }
}

export function registerGuestFileSystem(controller: Controller): vscode.Disposable[] {
  const fs = new GuestFileSystem(controller);
  return [fs, vscode.workspace.registerFileSystemProvider(GUEST_SCHEME, fs, { isCaseSensitive: true })];
}

function fileType(t: GuestFileStat["type"]): vscode.FileType {
  switch (t) {
    case "directory":
      return vscode.FileType.Directory;
    case "file":
      return vscode.FileType.File;
    case "symlink":
      return vscode.FileType.SymbolicLink | vscode.FileType.File;
    default:
      return vscode.FileType.Unknown;
  }
}

/** The controller's error codes as the editor's file system errors. */
export function toFileSystemError(uri: vscode.Uri, error: unknown): vscode.FileSystemError {
  if (error instanceof vscode.FileSystemError) return error;
  if (error instanceof ResponseError) {
    const data = (error.data ?? {}) as Record<string, unknown>;
    switch (error.code) {
      case VmcErrorCodes.UnknownPath:
        return data.notADirectory ? vscode.FileSystemError.FileNotADirectory(uri) : vscode.FileSystemError.FileNotFound(uri);
      case VmcErrorCodes.AlreadyExists:
        return vscode.FileSystemError.FileExists(uri);
      case VmcErrorCodes.TooLarge:
        return vscode.FileSystemError.Unavailable(`${uri.path} is too large to open (${error.message})`);
      case VmcErrorCodes.UnknownVm:
      case VmcErrorCodes.AgentUnreachable:
        return vscode.FileSystemError.Unavailable(error.message);
    }
    if (data.isDirectory) return vscode.FileSystemError.FileIsADirectory(uri);
    if (data.noPermissions) return vscode.FileSystemError.NoPermissions(uri);
    return vscode.FileSystemError.Unavailable(error.message);
  }
  return vscode.FileSystemError.Unavailable((error as Error)?.message ?? String(error));
}
