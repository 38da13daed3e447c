// A TCP relay that models a WAN link in front of a registry, for the mirror
// rows: `node --import tsx test/bench/relay.ts <target port> <bytes/s>`
// listens on a free 127.0.0.1 port (printed on stdout), forwards every
// connection to 127.0.0.1:<target port>, and limits the bytes flowing back
// (upstream → client) to <bytes/s> in all, shared by all connections like one
// link. The request direction is not limited. Runs as its own process so its
// CPU is neither the bench's nor a server's.
import * as net from 'node:net';

const target = Number(process.argv[2]);
const rate = Number(process.argv[3]);
if (!(target > 0) || !(rate > 0)) {
  process.stderr.write('usage: relay.ts <target port> <bytes per second>\n');
  process.exit(2);
}

// Token bucket: at most ~10 ms of traffic (and at least 256 KiB) in a burst.
const BURST = Math.max(256 * 1024, rate / 100);
let tokens = BURST;
let last = process.hrtime.bigint();
const queue: Array<{ bytes: number; send: () => void }> = [];
let timer: NodeJS.Timeout | undefined;

function refill(): void {
  const now = process.hrtime.bigint();
  tokens = Math.min(BURST, tokens + (Number(now - last) / 1e9) * rate);
  last = now;
}

function schedule(): void {
  if (timer || queue.length === 0) return;
  timer = setTimeout(drainQueue, Math.max(1, Math.ceil((-tokens / rate) * 1000)));
}

function drainQueue(): void {
  timer = undefined;
  refill();
  while (queue.length > 0 && tokens > 0) {
    const next = queue.shift()!;
    tokens -= next.bytes;
    next.send();
  }
  schedule();
}

const server = net.createServer((client) => {
  const upstream = net.connect(target, '127.0.0.1');
  client.pipe(upstream);
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
  client.on('close', close);
  upstream.on('end', () => client.end());
  upstream.on('data', (chunk: Buffer) => {
    const forward = () => {
      if (!client.write(chunk)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    };
    refill();
    if (queue.length === 0 && tokens > 0) {
      tokens -= chunk.length;
      forward();
      return;
    }
    // Over budget: hold this connection until the link has room again, in arrival order.
    upstream.pause();
    queue.push({
      bytes: chunk.length,
      send: () => {
        forward();
        if (client.writableNeedDrain === false) upstream.resume();
      },
    });
    schedule();
  });
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as net.AddressInfo).port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
