// Who may log in, and what they may do now: users from htpasswd, robots
// (`robot$NAME`) from the robot store, rights from the access policy. A
// robot gets what both its own scopes and the policy allow, and nothing once
// it is revoked or expired: that is checked at every request (with the
// store's few seconds of caching), so tokens already out stop working too.
import type { Action, AccessPolicy, Subject } from './access-policy.ts';
import type { Htpasswd, LoginBudget } from './htpasswd.ts';
import { ROBOT_PREFIX, robotActions, robotStatus, type RobotStore } from './robots.ts';

/** What a subject may do on a repository: the actions allowed on `name`. */
export type Rights = (name: string) => ReadonlySet<Action>;

export class Accounts {
  constructor(
    readonly policy: () => AccessPolicy,
    private readonly htpasswd?: Htpasswd,
    private readonly robots?: RobotStore,
    private readonly now: () => number = Date.now,
  ) {}

  /** The account name when the password (a robot's secret) is right; draws on `budget` when not. */
  async verify(user: string, password: string, budget?: LoginBudget): Promise<string | undefined> {
    if (user.startsWith(ROBOT_PREFIX)) {
      const robot = this.robots ? await this.robots.verify(user.slice(ROBOT_PREFIX.length), password) : undefined;
      // No bcrypt runs for a robot, so nothing to reserve: a wrong secret is charged after.
      if (!robot) await budget?.charge();
      return robot ? user : undefined;
    }
    return this.htpasswd ? this.htpasswd.verify(user, password, budget) : undefined;
  }

  /** A stamp of the account's current credentials (refresh tokens carry it); undefined when it is gone. */
  async stamp(user: string): Promise<string | undefined> {
    if (!user.startsWith(ROBOT_PREFIX)) return this.htpasswd?.credentialStamp(user);
    const robot = await this.robots?.get(user.slice(ROBOT_PREFIX.length));
    return robot && robotStatus(robot, this.now()) === 'active' ? robot.secretHash.slice(7, 23) : undefined;
  }

  /** What `subject` may do now; undefined when it is a robot that is gone, revoked or expired. */
  async rights(subject: Subject): Promise<Rights | undefined> {
    const policy = this.policy();
    const { user } = subject;
    if (user === undefined || !user.startsWith(ROBOT_PREFIX)) return (name) => policy.actions(subject, name);
    const robot = await this.robots?.get(user.slice(ROBOT_PREFIX.length));
    if (!robot || robotStatus(robot, this.now()) !== 'active') return undefined;
    return (name) => {
      const own = robotActions(robot, name);
      return new Set([...policy.actions(subject, name)].filter((a) => own.has(a)));
    };
  }
}
