/**
 * GLB Director (github.com/github/glb-director, docs/development/glb-hashing.md
 * and second-chance-design.md).
 *
 * Directors are stateless and share one forwarding table of 2^16 rows,
 * indexed by a hash of the client's source address. Each row names a
 * primary and a secondary server: the servers in the table (active,
 * filling or draining) ordered by a rendezvous score of (row, server), the
 * first two; where a draining server would be primary, the two are swapped.
 * A packet goes to the row's primary; the primary's glb-redirect module
 * accepts a SYN or a packet of a connection it holds, and sends anything
 * else to the secondary ("second chance", one extra hop), which takes it
 * (and resets it if it does not hold the connection: broken).
 *
 * The known weakness: a row only remembers two servers, so GLB allows one
 * server at a time in a state other than active ("no more than one proxy
 * server at a time", and changes "as quickly as the longest connection
 * duration"). Changes that overlap with connections still on a server that
 * falls out of its rows' top two break them. Director churn breaks nothing
 * (every director has the same table); a failed director loses its packets
 * until the router stops sending to it.
 *
 * Modelled: the rendezvous score is fmix32(row seed ^ server hash) instead
 * of siphash (any good mix keeps the property that matters: any two servers
 * keep their relative order whatever else is in the table); rows by xxHash32
 * of the source address. Backends removed here were drained first, until
 * their last connection ended (as every strategy's).
 */
import { xxh32Utf8 } from '../../../shared/hash/xxh32.js';
import { hashFiveTuple } from '../../../shared/hash/xxh32.js';
import { LOST_IN_WINDOW, type Env, type Step, type Strategy } from '../strategy.js';
import { Router } from '../router.js';

const ROWS = 1 << 16;
const SEED = 0x676c62; // "glb"

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class GlbModel implements Strategy {
  readonly name = 'glb director';
  readonly follows = 'GLB Director (github/glb-director: glb-hashing.md, second-chance-design.md)';
  hops = 0;
  private env!: Env;
  private router!: Router;
  readonly primary = new Int16Array(ROWS);
  readonly secondary = new Int16Array(ROWS);
  /** Servers in the table and whether each is draining. */
  private inTable: number[] = [];
  private draining = new Set<number>();
  private key = new Uint32Array(0);

  init(env: Env): void {
    this.env = env;
    this.router = new Router(env.trace, env.fds, env.allFds);
    this.key = Uint32Array.from(env.allBackends, (b) => xxh32Utf8(b, SEED));
    this.inTable = env.backends.map((b) => env.allBackends.indexOf(b));
    this.rebuild();
  }

  /** Every row: the two highest rendezvous scores; a draining primary swaps with its secondary. */
  rebuild(): void {
    const servers = this.inTable;
    for (let r = 0; r < ROWS; r++) {
      const rs = mix32(r ^ SEED);
      let p = -1;
      let ps = -1;
      let s = -1;
      let ss = -1;
      for (const b of servers) {
        const sc = mix32(rs ^ this.key[b]!);
        if (sc > ps) {
          s = p;
          ss = ps;
          p = b;
          ps = sc;
        } else if (sc > ss) {
          s = b;
          ss = sc;
        }
      }
      if (this.draining.has(p) && s >= 0) [p, s] = [s, p];
      this.primary[r] = p;
      this.secondary[r] = s;
    }
  }

  rowOf(f: number): number {
    return hashFiveTuple(this.env.trace.srcIp[f]!, 0, 0, 0, 0, SEED) & (ROWS - 1);
  }

  open(f: number): number {
    this.hops = 0;
    if (this.router.failed.has(this.router.pick(f))) return LOST_IN_WINDOW;
    return this.primary[this.rowOf(f)]!; // the primary accepts a SYN
  }

  route(f: number): number {
    this.hops = 0;
    if (this.router.failed.has(this.router.pick(f))) return LOST_IN_WINDOW;
    const r = this.rowOf(f);
    const p = this.primary[r]!;
    if (this.env.backendOf[f] === p) return p;
    this.hops = 1; // second chance
    return this.secondary[r]!;
  }

  close(): void {}

  step(s: Step): void {
    this.router.step(s);
    const b = 'backend' in s ? this.env.allBackends.indexOf(s.backend) : -1;
    if (s.kind === 'backend-add') this.inTable.push(b); // filling looks like active
    else if (s.kind === 'backend-drain') this.draining.add(b);
    else if (s.kind === 'backend-remove') {
      this.draining.delete(b);
      this.inTable = this.inTable.filter((x) => x !== b);
    } else return;
    this.rebuild();
  }

  tick(): void {}

  state(): { entries: number; bytes: number } {
    return { entries: 0, bytes: 0 };
  }
}
