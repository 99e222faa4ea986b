import { describe, expect, it } from "vitest";
import { ManualClock } from "../src/core/clock.js";
import {
  AlertEngine,
  jailMatches,
  networkOf,
  type AlertEvent,
} from "../src/audit/alerts/alert-engine.js";
import { parseAlertsConfig } from "../src/audit/alerts/alerts-config.js";
import { isBanned, setBansForTest } from "../src/audit/alerts/ban-cache.js";
import type { ZtError } from "../src/core/errors.js";

const clock = new ManualClock();
let seq = 0;
function ev(partial: Partial<AlertEvent>): AlertEvent {
  return {
    seq: ++seq,
    ts: clock.now(),
    kind: "decision",
    outcome: "deny",
    subject: null,
    source_ip: "203.0.113.9",
    route: "app",
    reason: null,
    data: {},
    ...partial,
  };
}
const loginFail = (ip: string, user = "alice", reason = "bad-password") =>
  ev({ kind: "login", outcome: "failure", source_ip: ip, subject: user, reason, route: null });

/** Only the rule under test switched on. */
function only(extra: Record<string, unknown>) {
  return parseAlertsConfig({
    jails: [],
    denial_burst: null,
    fan_out: null,
    mtls_failures: null,
    new_network: null,
    break_glass: false,
    ...extra,
  });
}

/** A login jail by source address: 3 failures within 60 s ban it for 100 s. */
const loginIpJail = {
  name: "login-ip",
  match: "login-failure",
  by: "ip",
  maxretry: 3,
  findtime: "60s",
  bantime: "100s",
};

describe("regulation (fail2ban model)", () => {
  const jail = { ...loginIpJail, bantime_factor: 2, max_bantime: "350s" };

  it("bans at exactly maxretry within findtime, and bantime grows on repeat up to max_bantime", () => {
    const e = new AlertEngine(only({ jails: [jail] }));
    const ip = "198.51.100.1";
    expect(e.evaluate(loginFail(ip)).bans).toEqual([]);
    clock.advance(10_000);
    expect(e.evaluate(loginFail(ip)).bans).toEqual([]);
    clock.advance(10_000);
    const third = e.evaluate(loginFail(ip));
    expect(third.bans).toHaveLength(1);
    expect(third.bans[0]).toMatchObject({
      key: `ip:${ip}`,
      count: 1,
      until: clock.now() + 100_000,
    });
    expect(third.alerts[0]).toMatchObject({
      rule: "login-ip",
      severity: "warning",
      key: `ip:${ip}`,
    });
    // While banned, nothing more is counted.
    for (let i = 0; i < 5; i++) expect(e.evaluate(loginFail(ip)).bans).toEqual([]);
    const durations: number[] = [];
    for (let round = 0; round < 3; round++) {
      clock.advance(400_000); // past any ban
      e.evaluate(loginFail(ip));
      e.evaluate(loginFail(ip));
      const b = e.evaluate(loginFail(ip)).bans[0]!;
      durations.push(b.until - b.createdAt);
    }
    expect(durations).toEqual([200_000, 350_000, 350_000]);
  });

  it("does not ban when the failures are spread wider than findtime", () => {
    const e = new AlertEngine(only({ jails: [jail] }));
    const ip = "198.51.100.2";
    for (let i = 0; i < 10; i++) {
      expect(e.evaluate(loginFail(ip)).bans).toEqual([]);
      clock.advance(30_001); // 3 failures never fit in 60 s
    }
  });

  it("counts TOTP failures separately, per user, and honours the allow-list", () => {
    const e = new AlertEngine(
      only({
        jails: [
          {
            name: "totp-user",
            match: "totp-failure",
            by: "user",
            maxretry: 2,
            findtime: "1m",
            bantime: "1m",
          },
        ],
        allow_list: { ips: ["10.0.0.0/8"], users: ["ops-robot"] },
      }),
    );
    expect(e.evaluate(loginFail("192.0.2.1", "bob", "bad-password")).bans).toEqual([]);
    expect(e.evaluate(loginFail("192.0.2.1", "bob", "mfa-invalid")).bans).toEqual([]);
    expect(e.evaluate(loginFail("192.0.2.2", "bob", "mfa-replayed")).bans[0]).toMatchObject({
      key: "user:bob",
      kind: "user",
    });
    for (let i = 0; i < 5; i++)
      expect(e.evaluate(loginFail("192.0.2.3", "ops-robot", "mfa-invalid")).bans).toEqual([]);
    const ipJail = new AlertEngine(
      only({ jails: [{ ...jail, maxretry: 1 }], allow_list: { ips: ["10.0.0.0/8"] } }),
    );
    expect(ipJail.evaluate(loginFail("10.1.2.3")).bans).toEqual([]);
    expect(ipJail.evaluate(loginFail("11.1.2.3")).bans).toHaveLength(1);
  });
});

// An IPv6 client holds a whole /64 and can take a new address for every attempt: a jail
// keyed on the single address would never count to maxretry, or ban anything that stops it.
describe("IPv6 sources are jailed by network (alerts.ban_ipv6_prefix)", () => {
  const jail = loginIpJail;

  it("counts and bans a rotating IPv6 client by its /64", () => {
    const e = new AlertEngine(only({ jails: [jail] }));
    expect(e.evaluate(loginFail("2001:db8:1:2::a")).bans).toEqual([]);
    expect(e.evaluate(loginFail("2001:DB8:1:2:ffff::b")).bans).toEqual([]);
    const third = e.evaluate(loginFail("2001:db8:1:2:1:2:3:4")).bans;
    expect(third).toHaveLength(1);
    expect(third[0]).toMatchObject({
      key: "ip:2001:db8:1:2::/64",
      kind: "ip",
      value: "2001:db8:1:2::/64",
    });
    // Another /64 is counted on its own.
    expect(e.evaluate(loginFail("2001:db8:1:3::a")).bans).toEqual([]);
    // IPv4 stays by address.
    expect(e.evaluate(loginFail("198.51.100.7")).bans).toEqual([]);
    expect(e.evaluate(loginFail("198.51.100.8")).bans).toEqual([]);
    expect(e.evaluate(loginFail("198.51.100.9")).bans).toEqual([]);
  });

  it("ban_ipv6_prefix: 128 jails single addresses; other prefixes are honoured", () => {
    const single = new AlertEngine(only({ jails: [jail], ban_ipv6_prefix: 128 }));
    for (const ip of ["2001:db8:1:2::a", "2001:db8:1:2::b", "2001:db8:1:2::c"])
      expect(single.evaluate(loginFail(ip)).bans).toEqual([]);
    const wide = new AlertEngine(only({ jails: [jail], ban_ipv6_prefix: 48 }));
    wide.evaluate(loginFail("2001:db8:1:2::a"));
    wide.evaluate(loginFail("2001:db8:1:3::a"));
    expect(wide.evaluate(loginFail("2001:db8:1:ffff::a")).bans[0]?.key).toBe("ip:2001:db8:1::/48");
  });

  it("never bans a network holding an allow-listed address: that source is jailed alone", () => {
    const e = new AlertEngine(
      only({ jails: [jail], allow_list: { ips: ["2001:db8:1:2::10/128"] } }),
    );
    for (let i = 0; i < 2; i++) expect(e.evaluate(loginFail("2001:db8:1:2::a")).bans).toEqual([]);
    expect(e.evaluate(loginFail("2001:db8:1:2::a")).bans[0]?.key).toBe("ip:2001:db8:1:2::a");
    // The allow-listed address itself never counts.
    for (let i = 0; i < 5; i++) expect(e.evaluate(loginFail("2001:db8:1:2::10")).bans).toEqual([]);
  });

  it("isBanned refuses every address of a banned network, and only until the ban ends", () => {
    setBansForTest({ "2001:db8:1:2::/64": 2_000, "198.51.100.0/24": 2_000 });
    expect(isBanned("2001:db8:1:2::99", 1_999)).toBe(true);
    expect(isBanned("2001:db8:1:2:ffff:ffff:ffff:ffff", 1_999)).toBe(true);
    expect(isBanned("2001:db8:1:3::99", 1_999)).toBe(false);
    expect(isBanned("2001:db8:1:2::99", 2_000)).toBe(false);
    expect(isBanned("198.51.100.200", 1_999)).toBe(true);
    expect(isBanned("198.51.101.1", 1_999)).toBe(false);
    // A new set of bans replaces the old one: nothing is remembered from before.
    setBansForTest({});
    expect(isBanned("2001:db8:1:2::99", 1_000)).toBe(false);
  });
});

describe("api-refused: credentials the control-plane API refused before authentication", () => {
  const a = (kind: string, outcome: string, reason: string | null, subject: string | null = null) =>
    ev({ kind, outcome, reason, subject, route: null });
  it("counts guesses of join tokens, renewal proofs, device signatures and session tokens", () => {
    for (const e of [
      a("svid.issue", "failure", "token-unknown", "join-token"),
      a("svid.issue", "failure", "token-used", "join-token"),
      a("svid.issue", "failure", "renew-proof-invalid", "svid"),
      a("device.report", "failure", "device-signature-invalid"),
      a("device.report", "failure", "device-unknown"),
      a("device.bind", "failure", "device-signature-invalid"),
      a("device.bind", "failure", "device-unknown"),
      a("ssh.sign", "deny", "session-invalid"),
    ])
      expect(jailMatches("api-refused", e), `${e.kind} ${e.reason}`).toBe(true);
  });

  it("does not count what a signed-in user or a working agent meets in normal use", () => {
    for (const e of [
      a("svid.issue", "failure", "token-expired", "join-token"),
      a("svid.issue", "failure", "san-not-allowed", "join-token"),
      a("svid.issue", "failure", "cert-expired", "svid"),
      a("device.report", "failure", "device-noncompliant"),
      a("device.report", "failure", "device-revoked"),
      a("device.bind", "failure", "no-session-token"),
      a("device.bind", "failure", "session-expired"),
      a("device.bind", "failure", "device-not-approved"),
      a("ssh.sign", "deny", "no-credentials"),
      a("ssh.sign", "deny", "session-expired"),
      a("ssh.sign", "deny", "session-idle"),
      a("ssh.sign", "deny", "session-revoked"),
      a("ssh.sign", "deny", "cert-untrusted"),
      // A policy deny of a signed-in user is a `denial`, whatever its reason.
      a("ssh.sign", "deny", "session-invalid", "alice"),
      a("ssh.sign", "deny", null, "alice"),
      a("authn.mtls", "deny", "cert-untrusted"),
      a("login", "failure", "bad-password", "alice"),
      a("request.refused", "refused", "no-route"),
    ])
      expect(jailMatches("api-refused", e), `${e.kind} ${e.reason}`).toBe(false);
  });

  it("is a default jail: 10 within 10m ban the source", () => {
    const e = new AlertEngine(parseAlertsConfig({ allow_list: { ips: [] } }));
    const guess = () =>
      ev({
        kind: "svid.issue",
        outcome: "failure",
        subject: "join-token",
        reason: "token-unknown",
        source_ip: "192.0.2.44",
        route: null,
      });
    for (let i = 0; i < 9; i++) expect(e.evaluate(guess()).bans).toEqual([]);
    expect(e.evaluate(guess()).bans.map((b) => [b.rule, b.key])).toEqual([
      ["api-ip", "ip:192.0.2.44"],
    ]);
  });
});

describe("default allow-list", () => {
  it("keeps a local operator (loopback) from banning themselves unless configured to", () => {
    const jail = {
      name: "login-ip",
      match: "login-failure",
      by: "ip",
      maxretry: 1,
      findtime: "1m",
      bantime: "1m",
    };
    const byDefault = new AlertEngine(only({ jails: [jail] }));
    for (const ip of ["127.0.0.1", "::1"])
      expect(byDefault.evaluate(loginFail(ip)).bans).toEqual([]);
    expect(byDefault.evaluate(loginFail("198.51.100.77")).bans).toHaveLength(1);
    const strict = new AlertEngine(only({ jails: [jail], allow_list: { ips: [] } }));
    expect(strict.evaluate(loginFail("127.0.0.1")).bans).toHaveLength(1);
  });
});

describe("trusted proxies", () => {
  it("are counted but never banned by a jail: every client behind one shares its address", () => {
    const jail = {
      name: "api-ip",
      match: "login-failure",
      by: "ip",
      maxretry: 2,
      findtime: "1m",
      bantime: "1m",
    };
    const cfg = parseAlertsConfig(
      {
        jails: [jail],
        denial_burst: null,
        fan_out: null,
        mtls_failures: null,
        new_network: null,
        break_glass: false,
      },
      ["10.0.0.5/32", "2001:db8:1::7/128"],
    );
    const e = new AlertEngine(cfg);
    const proxy = [e.evaluate(loginFail("10.0.0.5")), e.evaluate(loginFail("10.0.0.5"))];
    expect(proxy.flatMap((r) => r.bans)).toEqual([]);
    const said = proxy.flatMap((r) => r.alerts);
    expect(said).toHaveLength(1);
    expect(said[0]!.message).toMatch(
      /^ip:10\.0\.0\.5 not banned: 2 login-failure within 60s, but it is in trusted_proxies/,
    );
    // said once per findtime, not on every further match
    expect(
      [e.evaluate(loginFail("10.0.0.5")), e.evaluate(loginFail("10.0.0.5"))].flatMap(
        (r) => r.alerts,
      ),
    ).toEqual([]);
    // another address of the same network is banned as before
    e.evaluate(loginFail("10.0.0.6"));
    expect(e.evaluate(loginFail("10.0.0.6")).bans.map((b) => b.key)).toEqual(["ip:10.0.0.6"]);
    // an IPv6 network ban stops short of a trusted proxy inside it: the address alone
    e.evaluate(loginFail("2001:db8:1::9"));
    expect(e.evaluate(loginFail("2001:db8:1::9")).bans.map((b) => b.key)).toEqual([
      "ip:2001:db8:1::9",
    ]);
  });
});

describe("the never-ban list replaced at a reload (setSharedIps)", () => {
  const jail = {
    name: "login-ip",
    match: "login-failure",
    by: "ip",
    maxretry: 2,
    findtime: "1m",
    bantime: "1m",
  };
  const config = (shared: string[]) =>
    parseAlertsConfig(
      {
        jails: [jail],
        denial_burst: null,
        fan_out: null,
        mtls_failures: null,
        new_network: null,
        break_glass: false,
      },
      shared,
    );
  const twice = (e: AlertEngine, ip: string) => [
    e.evaluate(loginFail(ip)),
    e.evaluate(loginFail(ip)),
  ];

  it("stops a jail from banning an address added to the list, and from banning an IPv6 network holding it", () => {
    const e = new AlertEngine(config([]));
    e.setSharedIps(["10.1.0.5/32", "2001:db8:7::7/128"]);
    const proxy = twice(e, "10.1.0.5");
    expect(proxy.flatMap((r) => r.bans)).toEqual([]);
    expect(proxy.flatMap((r) => r.alerts.map((a) => a.message))).toEqual([
      expect.stringMatching(/^ip:10\.1\.0\.5 not banned: /),
    ]);
    // Another address of the trusted proxy's /64: banned by its address alone.
    expect(twice(e, "2001:db8:7::9").flatMap((r) => r.bans.map((b) => b.key))).toEqual([
      "ip:2001:db8:7::9",
    ]);
  });

  it("lets a jail ban an address taken off the list, and ban the IPv6 network it was in", () => {
    const e = new AlertEngine(config(["10.1.0.6/32", "2001:db8:8::7/128"]));
    expect(twice(e, "10.1.0.6").flatMap((r) => r.bans)).toEqual([]);
    e.setSharedIps([]);
    expect(twice(e, "10.1.0.6").flatMap((r) => r.bans.map((b) => b.key))).toEqual(["ip:10.1.0.6"]);
    expect(twice(e, "2001:db8:8::9").flatMap((r) => r.bans.map((b) => b.key))).toEqual([
      "ip:2001:db8:8::/64",
    ]);
  });
});

describe("detection rules", () => {
  it("denial burst fires at exactly the threshold within the window, then cools down", () => {
    const e = new AlertEngine(only({ denial_burst: { threshold: 4, window: "10s" } }));
    const ip = "203.0.113.50";
    const fired = (): number => e.evaluate(ev({ source_ip: ip })).alerts.length;
    expect([fired(), fired(), fired()]).toEqual([0, 0, 0]);
    expect(fired()).toBe(1);
    expect(fired()).toBe(0); // cool-down within the window
    clock.advance(10_000);
    expect([fired(), fired(), fired()]).toEqual([0, 0, 0]);
    expect(fired()).toBe(1);
    // Allowed requests never count.
    expect(e.evaluate(ev({ source_ip: "203.0.113.51", outcome: "allow" })).alerts).toEqual([]);
  });

  it("fan-out fires when one source is denied on N distinct routes", () => {
    const e = new AlertEngine(only({ fan_out: { distinct_routes: 3, window: "1m" } }));
    const ip = "203.0.113.60";
    expect(e.evaluate(ev({ source_ip: ip, route: "a" })).alerts).toEqual([]);
    expect(e.evaluate(ev({ source_ip: ip, route: "a" })).alerts).toEqual([]);
    expect(e.evaluate(ev({ source_ip: ip, route: "b" })).alerts).toEqual([]);
    const a = e.evaluate(ev({ source_ip: ip, route: "c" })).alerts;
    expect(a).toHaveLength(1);
    expect(a[0]).toMatchObject({
      rule: "fan-out",
      severity: "high",
      data: { routes: ["a", "b", "c"] },
    });
  });

  it("refused client certificates fire at the threshold", () => {
    const e = new AlertEngine(only({ mtls_failures: { threshold: 3, window: "1m" } }));
    const f = (outcome = "deny", kind = "authn.mtls") =>
      e.evaluate(
        ev({ kind, outcome, source_ip: "203.0.113.70", route: null, reason: "cert-revoked" }),
      ).alerts.length;
    // A certificate accepted, or another kind of failure, is not counted.
    expect([f("allow"), f("success"), f("failure", "login")]).toEqual([0, 0, 0]);
    expect([f(), f(), f()]).toEqual([0, 0, 1]);
  });

  it("first access from a new network for a user on a route", () => {
    const e = new AlertEngine(only({ new_network: {} }));
    const ok = (ip: string, user = "alice", route = "wiki") =>
      e.evaluate(ev({ outcome: "allow", source_ip: ip, subject: user, route })).alerts;
    expect(ok("192.0.2.10")).toEqual([]); // first ever: learn
    expect(ok("192.0.2.99")).toEqual([]); // same /24
    const a = ok("198.51.100.7");
    expect(a).toHaveLength(1);
    expect(a[0]).toMatchObject({
      rule: "new-network",
      key: "user:alice|route:wiki",
      data: { network: "198.51.100.0/24", known: ["192.0.2.0/24"] },
    });
    expect(ok("198.51.100.8")).toEqual([]);
    expect(ok("2001:db8:1:2::5")).toHaveLength(1);
    expect(ok("198.51.100.7", "bob")).toEqual([]); // bob's first
  });

  it("any break-glass use is critical", () => {
    const e = new AlertEngine(only({ break_glass: true }));
    const a = e.evaluate(
      ev({ kind: "breakglass", outcome: "success", subject: "root-ops", route: "prod-db" }),
    ).alerts;
    expect(a).toEqual([
      expect.objectContaining({ rule: "break-glass", severity: "critical", key: "user:root-ops" }),
    ]);
    expect(
      e.evaluate(
        ev({ kind: "access.approve", outcome: "info", reason: "breakglass", subject: "x" }),
      ).alerts,
    ).toHaveLength(1);
    expect(e.evaluate(ev({ kind: "decision", outcome: "allow" })).alerts).toEqual([]);
  });

  it("ignores its own alert and ban events (no feedback loop)", () => {
    const e = new AlertEngine(
      only({ break_glass: true, denial_burst: { threshold: 1, window: "1m" } }),
    );
    expect(e.evaluate(ev({ kind: "alert", outcome: "info", reason: "breakglass" })).alerts).toEqual(
      [],
    );
    expect(e.evaluate(ev({ kind: "ban.add", outcome: "deny" })).alerts).toEqual([]);
  });
});

describe("helpers", () => {
  it("networkOf masks IPv4, IPv6 and IPv4-mapped addresses", () => {
    expect(networkOf("192.0.2.200", 24, 64)).toBe("192.0.2.0/24");
    expect(networkOf("10.20.30.40", 16, 64)).toBe("10.20.0.0/16");
    expect(networkOf("::ffff:192.0.2.1", 24, 64)).toBe("192.0.2.0/24");
    expect(networkOf("2001:db8:aa:bb:cc::1", 24, 64)).toBe("2001:db8:aa:bb::/64");
    expect(networkOf("2001:db8::1", 24, 48)).toBe("2001:db8::/48");
    expect(networkOf("2001:DB8:0:0:1::1", 24, 128)).toBe("2001:db8::1:0:0:1/128");
  });

  it("isBanned is a lookup against the ban's end time", () => {
    setBansForTest({ "192.0.2.66": 2_000 });
    expect(isBanned("192.0.2.66", 1_999)).toBe(true);
    expect(isBanned("192.0.2.66", 2_000)).toBe(false);
    expect(isBanned("192.0.2.67", 1_000)).toBe(false);
    setBansForTest({});
  });

  it("caps repeat bans at max_bantime, or when unset at 7d or a longer bantime (not a silent cut to 7d)", () => {
    const jail = (extra: Record<string, unknown>) =>
      parseAlertsConfig({
        jails: [
          { name: "x", match: "login-failure", by: "ip", maxretry: 3, findtime: "1m", ...extra },
        ],
      }).jails[0]!.maxBantimeMs;
    const DAY = 86_400_000;
    expect(jail({ bantime: "10m" })).toBe(7 * DAY);
    expect(jail({ bantime: "30d" })).toBe(30 * DAY);
    expect(jail({ bantime: "10m", max_bantime: "1d" })).toBe(DAY);
    expect(() => jail({ bantime: "30d", max_bantime: "7d" })).toThrow(
      /alerts\.jails\.0\.max_bantime: expected at least bantime \(30d\)/,
    );
  });

  it("config errors name the key path", () => {
    expect(() =>
      parseAlertsConfig({
        jails: [
          {
            name: "x",
            match: "login-failure",
            by: "ip",
            maxretry: 0,
            findtime: "1m",
            bantime: "1m",
          },
        ],
      }),
    ).toThrow(/alerts\.jails\.0\.maxretry: /);
    try {
      parseAlertsConfig({ allow_list: { ips: ["10.0.0.0/40"] } });
      expect.unreachable();
    } catch (e) {
      expect((e as ZtError).code).toBe("ZT_CONFIG_INVALID");
      expect((e as ZtError).message).toMatch(
        /^alerts\.allow_list\.ips\.0: expected an IP address or CIDR/,
      );
    }
  });
});
