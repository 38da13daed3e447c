// Robot changes across replicas (auth/robots.ts's RobotChanges) over Redis
// pub/sub: `registry robot create|revoke|rotate` publishes the robot's name on
// "<prefix>robots:changed" after writing its record, and every server drops
// its cached record, so a revoked robot is refused on its next request instead
// of up to the cache time later. Pub/sub keeps nothing for a subscriber that is
// away: after a reconnect a server drops every cached record, since it may
// have missed changes meanwhile. A subscriber needs a connection of its own (a
// subscribed connection takes no other commands).
import type { Redis } from 'ioredis';
import type { RobotChanges } from '../auth/robots.ts';
import type { Logger } from '../log/logger.ts';
import type { SharedRedis } from './redis.ts';

export class RedisRobotChanges implements RobotChanges {
  private subscriber?: Redis;
  private readonly channel: string;

  constructor(
    private readonly redis: SharedRedis,
    private readonly logger: Pick<Logger, 'info' | 'warn'>,
  ) {
    this.channel = redis.key('robots', 'changed');
  }

  async publish(name: string): Promise<void> {
    await this.redis.client.publish(this.channel, name);
  }

  /** Subscribes before it resolves: a change published after that is heard. */
  async subscribe(changed: (name: string | undefined) => void): Promise<void> {
    if (this.subscriber) throw new Error('already subscribed');
    // Resubscribed by hand, so that "drop everything" runs once the subscription is back, not before.
    const sub = this.redis.client.duplicate({ autoResubscribe: false, connectionName: 'registry-robots' });
    this.subscriber = sub;
    sub.on('error', () => {}); // the shared client logs the connection's troubles
    sub.on('message', (channel: string, name: string) => {
      if (channel !== this.channel) return;
      this.logger.info({ robot: `robot$${name}` }, 'robot changed: cached record dropped');
      changed(name);
    });
    let first = true;
    sub.on('ready', () => {
      if (first) return;
      sub.subscribe(this.channel).then(
        () => {
          this.logger.info({ redis: this.redis.addr }, 'robot changes: subscribed again, every cached robot record dropped');
          changed(undefined);
        },
        (err: Error) => this.logger.warn({ err: err.message }, 'robot changes: could not subscribe again'),
      );
    });
    await sub.connect();
    await sub.subscribe(this.channel);
    first = false;
  }

  close(): void {
    this.subscriber?.disconnect();
    this.subscriber = undefined;
  }
}
