// UI sessions, kept in this process only: a random id in the cookie names an
// entry here, so a stolen cookie dies with logout or expiry, and nothing the
// client holds can be forged or replayed after the server forgot it. The map
// is bounded (the oldest session goes first) so that logins cannot grow memory
// without limit. Replicas behind one load balancer do not share sessions.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Identity } from '../auth/authenticator.ts';

export interface Session {
  readonly id: string;
  /** Who logged in, and what they could do then (used only where the account cannot be looked up again). */
  readonly identity: Identity & { user: string };
  /** The account's credential stamp at login: a session ends when the password changes. */
  readonly stamp?: string;
  /** Sent with every change (a form field or header) and compared with this. */
  readonly csrf: string;
  readonly createdAt: number;
  lastSeen: number;
}

export interface SessionOptions {
  /** Sessions kept at most; the least recently created goes when a new one would exceed it. */
  max?: number;
  /** A session unused this long is gone. */
  idleMs?: number;
  /** A session is gone this long after login, used or not. */
  maxAgeMs?: number;
  now?: () => number;
}

export class Sessions {
  private readonly map = new Map<string, Session>();
  private readonly max: number;
  private readonly idleMs: number;
  private readonly maxAgeMs: number;
  private readonly now: () => number;

  constructor(options: SessionOptions = {}) {
    this.max = options.max ?? 10_000;
    this.idleMs = options.idleMs ?? 3_600_000;
    this.maxAgeMs = options.maxAgeMs ?? 12 * 3_600_000;
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    return this.map.size;
  }

  create(identity: Identity & { user: string }, stamp?: string): Session {
    const now = this.now();
    const session: Session = { id: token(), identity, stamp, csrf: token(), createdAt: now, lastSeen: now };
    while (this.map.size >= this.max) this.map.delete(this.map.keys().next().value as string);
    this.map.set(session.id, session);
    return session;
  }

  /** The live session of this id (and marks it used), or undefined. */
  get(id: string | undefined): Session | undefined {
    if (!id) return undefined;
    const session = this.map.get(id);
    if (!session) return undefined;
    const now = this.now();
    if (now - session.lastSeen > this.idleMs || now - session.createdAt > this.maxAgeMs) {
      this.map.delete(id);
      return undefined;
    }
    session.lastSeen = now;
    return session;
  }

  delete(id: string): void {
    this.map.delete(id);
  }
}

/** 256 random bits, URL-safe. */
export function token(): string {
  return randomBytes(32).toString('base64url');
}

/** Constant-time comparison of two tokens (a mismatch in length is a mismatch). */
export function sameToken(a: string | undefined, b: string | undefined): boolean {
  if (!a || !b) return false;
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
