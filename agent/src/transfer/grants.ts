/** The agent's book of transfer grants: signed, for this agent, unexpired, each token used once. */
import type { KeyObject } from "node:crypto";
import type { XferCancel, XferGrant } from "@vmc/protocol/bus";
import { verifyMessage } from "@vmc/protocol/signing";

const MAX_LIVE_GRANTS = 256;

interface Entry {
  grant: XferGrant;
  used: boolean;
}

export class GrantBook {
  private readonly byToken = new Map<string, Entry>();
  private readonly seenTransfers = new Map<string, number>(); // transferId → expiresAt
  private readonly waiters = new Map<string, (e: Entry) => void>();

  constructor(
    private readonly agentId: string,
    private readonly publicKey: KeyObject,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records a grant; returns the reason when it is refused. */
  admit(grant: XferGrant): string | undefined {
    this.expire();
    if (grant.agentId !== this.agentId) return `grant is for agent ${grant.agentId}`;
    if (!verifyMessage(grant, this.publicKey)) return "bad signature";
    if (grant.expiresAt <= this.now()) return "grant expired";
    if (this.seenTransfers.has(grant.transferId)) return "grant replayed";
    if (this.byToken.size >= MAX_LIVE_GRANTS) return "too many pending grants";
    const entry = { grant, used: false };
    this.byToken.set(grant.token, entry);
    this.seenTransfers.set(grant.transferId, grant.expiresAt);
    const w = this.waiters.get(grant.token);
    if (w) {
      this.waiters.delete(grant.token);
      w(entry);
    }
    return undefined;
  }

  verifyCancel(cancel: XferCancel): boolean {
    return cancel.agentId === this.agentId && verifyMessage(cancel, this.publicKey);
  }

  /** True when the transfer is known (an unused bus grant, for routing bus frames). */
  busGrant(transferId: string): XferGrant | undefined {
    for (const e of this.byToken.values()) if (e.grant.transferId === transferId && e.grant.channel === "bus" && !e.used) return e.grant;
    return undefined;
  }

  /**
   * Consumes the grant for `token` (waiting up to `waitMs` for it to arrive over the bus);
   * returns it, or the reason it is refused.
   */
  async take(token: string, transferId: string, channel: XferGrant["channel"], waitMs: number): Promise<XferGrant | string> {
    let entry = this.byToken.get(token);
    if (!entry && waitMs > 0 && !this.waiters.has(token) && this.waiters.size < MAX_LIVE_GRANTS) {
      entry = await new Promise<Entry | undefined>((resolve) => {
        const timer = setTimeout(() => {
          this.waiters.delete(token);
          resolve(undefined);
        }, waitMs);
        this.waiters.set(token, (e) => {
          clearTimeout(timer);
          resolve(e);
        });
      });
    }
    if (!entry) return "unknown token";
    if (entry.used) return "token already used";
    if (entry.grant.transferId !== transferId) return "token is for another transfer";
    if (entry.grant.channel !== channel) return `grant is for the ${entry.grant.channel} channel`;
    if (entry.grant.expiresAt <= this.now()) return "grant expired";
    entry.used = true;
    return entry.grant;
  }

  private expire(): void {
    const now = this.now();
    for (const [token, e] of this.byToken) if (e.grant.expiresAt <= now) this.byToken.delete(token);
    // Transfer ids are remembered until their grant expires, so a replay is refused as long as it could be accepted.
    for (const [id, exp] of this.seenTransfers) if (exp <= now) this.seenTransfers.delete(id);
  }
}
