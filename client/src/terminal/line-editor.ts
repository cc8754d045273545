/**
 * The terminal's line discipline: the guest runs commands without a pty, so editing, echo and
 * history happen here. Feed it the terminal's input; it answers with what to echo and, on Enter,
 * the finished line.
 */
export class LineEditor {
  private line = "";
  private cursor = 0;
  private readonly history: string[] = [];
  private historyIndex = 0;
  private draft = "";

  get text(): string {
    return this.line;
  }

  clear(): void {
    this.line = "";
    this.cursor = 0;
    this.historyIndex = this.history.length;
  }

  remember(line: string): void {
    if (line.trim() && this.history[this.history.length - 1] !== line) this.history.push(line);
    if (this.history.length > 1000) this.history.shift();
    this.historyIndex = this.history.length;
  }

  /** Applies input; returns the echo and any lines completed by Enter. */
  feed(data: string): { echo: string; lines: string[] } {
    let echo = "";
    const lines: string[] = [];
    for (let i = 0; i < data.length; i++) {
      const rest = data.slice(i);
      const esc = /^\x1b\[([ABCDHF]|[0-9]~|3~)/.exec(rest);
      if (esc) {
        echo += this.escape(esc[1]!);
        i += esc[0].length - 1;
        continue;
      }
      const ch = data[i]!;
      if (ch === "\r" || ch === "\n") {
        if (ch === "\n" && data[i - 1] === "\r") continue;
        lines.push(this.line);
        echo += "\r\n";
        this.line = "";
        this.cursor = 0;
      } else if (ch === "\x7f" || ch === "\b") {
        if (this.cursor > 0) {
          this.line = this.line.slice(0, this.cursor - 1) + this.line.slice(this.cursor);
          this.cursor--;
          echo += "\b" + this.redrawTail() ;
        }
      } else if (ch >= " ") {
        this.line = this.line.slice(0, this.cursor) + ch + this.line.slice(this.cursor);
        this.cursor++;
        echo += ch + this.redrawTail();
      }
    }
    return { echo, lines };
  }

  private escape(code: string): string {
    switch (code) {
      case "A":
      case "B": {
        if (code === "A" && this.historyIndex === 0) return "";
        if (code === "B" && this.historyIndex >= this.history.length) return "";
        if (this.historyIndex === this.history.length) this.draft = this.line;
        this.historyIndex += code === "A" ? -1 : 1;
        const next = this.historyIndex === this.history.length ? this.draft : this.history[this.historyIndex]!;
        return this.replace(next);
      }
      case "C":
        if (this.cursor >= this.line.length) return "";
        this.cursor++;
        return "\x1b[C";
      case "D":
        if (this.cursor === 0) return "";
        this.cursor--;
        return "\x1b[D";
      case "H":
      case "1~": {
        const back = this.cursor;
        this.cursor = 0;
        return back ? `\x1b[${back}D` : "";
      }
      case "F":
      case "4~": {
        const fwd = this.line.length - this.cursor;
        this.cursor = this.line.length;
        return fwd ? `\x1b[${fwd}C` : "";
      }
      case "3~":
        if (this.cursor >= this.line.length) return "";
        this.line = this.line.slice(0, this.cursor) + this.line.slice(this.cursor + 1);
        return this.redrawTail();
      default:
        return "";
    }
  }

  private replace(next: string): string {
    const back = this.cursor ? `\x1b[${this.cursor}D` : "";
    this.line = next;
    this.cursor = next.length;
    return `${back}\x1b[K${next}`;
  }

  /** Rewrites from the cursor to the end of line and moves the cursor back. */
  private redrawTail(): string {
    const tail = this.line.slice(this.cursor);
    return `\x1b[K${tail}${tail.length ? `\x1b[${tail.length}D` : ""}`;
  }
}
