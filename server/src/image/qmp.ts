/** A minimal QMP client over a unix socket: enough to send commands and see the reply. */
import { connect, type Socket } from "node:net";

export class Qmp {
  private buffer = "";
  private waiters: ((msg: Record<string, unknown>) => void)[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => {
      this.buffer += d;
      let nl: number;
      while ((nl = this.buffer.indexOf("\n")) >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ("return" in msg || "error" in msg) this.waiters.shift()?.(msg);
      }
    });
  }

  /** Connects (retrying until QEMU has created the socket) and negotiates capabilities. */
  static async open(path: string, deadlineMs = 10_000): Promise<Qmp> {
    const until = Date.now() + deadlineMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path, () => resolve(s));
          s.once("error", reject);
        });
        const qmp = new Qmp(socket);
        await qmp.execute("qmp_capabilities");
        return qmp;
      } catch (e) {
        if (Date.now() > until) throw new Error(`QMP ${path}: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.waiters.push((msg) => (msg.error ? reject(new Error(`QMP ${command}: ${JSON.stringify(msg.error)}`)) : resolve(msg.return)));
      this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
