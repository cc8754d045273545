/** Transfer progress: bytes, rate over a sliding window, ETA. */
export interface TransferProgress {
  bytesDone: number;
  bytesTotal: number;
  /** Bytes per second over the last few seconds. */
  rate: number;
  /** Estimated milliseconds left, or null when unknown. */
  etaMs: number | null;
  /** Relative path being moved. */
  path: string;
  entriesDone: number;
  entriesTotal: number;
}

export type ProgressListener = (p: TransferProgress) => void;

/** Accumulates progress and calls the listener at most every `intervalMs` (and at the end). */
export class ProgressMeter {
  private samples: { at: number; bytes: number }[] = [];
  private lastEmit = 0;
  bytesDone = 0;
  bytesTotal = 0;
  entriesDone = 0;
  entriesTotal = 0;
  path = "";

  constructor(
    private readonly listener: ProgressListener | undefined,
    private readonly intervalMs = 100,
  ) {}

  add(bytes: number): void {
    this.bytesDone += bytes;
    this.emit(false);
  }

  emit(force: boolean): void {
    if (!this.listener) return;
    const now = Date.now();
    if (!force && now - this.lastEmit < this.intervalMs) return;
    this.lastEmit = now;
    this.samples.push({ at: now, bytes: this.bytesDone });
    while (this.samples.length > 2 && now - this.samples[0]!.at > 3000) this.samples.shift();
    const first = this.samples[0]!;
    const dt = (now - first.at) / 1000;
    const rate = dt > 0 ? (this.bytesDone - first.bytes) / dt : 0;
    const left = Math.max(0, this.bytesTotal - this.bytesDone);
    this.listener({
      bytesDone: this.bytesDone,
      bytesTotal: this.bytesTotal,
      rate,
      etaMs: left === 0 ? 0 : rate > 0 ? Math.round((left / rate) * 1000) : null,
      path: this.path,
      entriesDone: this.entriesDone,
      entriesTotal: this.entriesTotal,
    });
  }
}
