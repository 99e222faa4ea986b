import { describe, expect, it } from "vitest";
import {
  KEY_ID_GRANTS,
  boundByGrants,
  grantsNamedIn,
  keyIdGrants,
  type SshGrantFacts,
} from "./ssh-grant-bound.js";

const grant = (id: string, kind: "jit" | "breakglass", resource: string, expiresAt: number) => ({
  id,
  userId: "u_1",
  kind,
  resource,
  expiresAt,
});

describe("boundByGrants", () => {
  const now = 1_000;

  it("is undefined when the decision allows without any grant", async () => {
    const held = [grant("acc_a", "jit", 'HostGroup::"prod"', 5_000)];
    expect(await boundByGrants(held, "prod", now, async () => true)).toBeUndefined();
  });

  it("ends with the last grant the allow still needs, however many could give it", async () => {
    const held = [
      grant("acc_early", "jit", 'HostGroup::"prod"', 3_000),
      grant("acc_late", "jit", 'HostGroup::"prod-db"', 9_000),
      grant("acc_other", "jit", "db-admin", 2_000),
    ];
    // Either grant permits: the permission lasts until the later one ends.
    const either = async (f: SshGrantFacts) =>
      f.grants.includes("prod") || f.grants.includes("prod-db");
    expect(await boundByGrants(held, "prod", now, either)).toMatchObject({
      until: 9_000,
      grant: { id: "acc_late" },
    });
    // Both needed: it ends with the earlier one.
    const both = async (f: SshGrantFacts) =>
      f.grants.includes("prod") && f.grants.includes("prod-db");
    expect(await boundByGrants(held, "prod", now, both)).toMatchObject({
      until: 3_000,
      grant: { id: "acc_early" },
    });
  });

  it("counts break-glass only for the host group asked for", async () => {
    const held = [
      grant("bg_prod", "breakglass", 'HostGroup::"prod"', 4_000),
      grant("bg_dev", "breakglass", 'HostGroup::"dev"', 8_000),
    ];
    const allows = async (f: SshGrantFacts) => f.breakglass;
    expect(await boundByGrants(held, "prod", now, allows)).toMatchObject({
      until: 4_000,
      grant: { id: "bg_prod" },
    });
  });

  it("relies on every grant the facts were made of, the one it ends with first: any revocation may turn the decision", async () => {
    const held = [
      grant("acc_late", "jit", 'HostGroup::"pci"', 9_000),
      grant("acc_early", "jit", 'HostGroup::"prod"', 3_000),
      grant("bg_prod", "breakglass", 'HostGroup::"prod"', 6_000),
      grant("bg_dev", "breakglass", 'HostGroup::"dev"', 8_000),
      grant("acc_app", "jit", "db-admin", 7_000),
      grant("acc_gone", "jit", 'HostGroup::"prod"', 500),
    ];
    // Both JIT grants needed: ends with the earlier; revoking the later (or the break-glass
    // the facts held) must end it as well. App grants, another host group's break-glass
    // and ended grants are not in the facts.
    const both = async (f: SshGrantFacts) => f.grants.includes("prod") && f.grants.includes("pci");
    const b = await boundByGrants(held, "prod", now, both);
    expect(b).toMatchObject({ until: 3_000, grant: { id: "acc_early" } });
    expect(b!.reliedOn.map((g) => g.id)).toEqual(["acc_early", "bg_prod", "acc_late"]);
  });

  it("fails closed: a replay that throws ends the permission there", async () => {
    const held = [
      grant("acc_a", "jit", 'HostGroup::"prod"', 3_000),
      grant("acc_b", "jit", 'HostGroup::"prod"', 6_000),
    ];
    expect(
      await boundByGrants(held, "prod", now, async () => {
        throw new Error("engine broke");
      }),
    ).toMatchObject({ until: 3_000 });
  });
});

describe("keyIdGrants", () => {
  it("names every grant up to a sane length, then counts the rest", () => {
    expect(keyIdGrants(["acc_a"])).toBe("grant=acc_a");
    expect(keyIdGrants(["acc_a", "bg_b"])).toBe("grant=acc_a,bg_b");
    const ids = Array.from({ length: KEY_ID_GRANTS + 3 }, (_, i) => `acc_${i}`);
    expect(keyIdGrants(ids)).toBe(`grant=${ids.slice(0, KEY_ID_GRANTS).join(",")},+3`);
  });

  it("reads back from a key id what it named (and a key id from before: one grant)", () => {
    const ids = Array.from({ length: KEY_ID_GRANTS + 3 }, (_, i) => `acc_${i}`);
    expect(grantsNamedIn(`zt:user=a decision=dec_1 ${keyIdGrants(ids)} serial=9`)).toEqual(
      ids.slice(0, KEY_ID_GRANTS),
    );
    expect(grantsNamedIn("zt:user=a decision=dec_1 grant=acc_x serial=9")).toEqual(["acc_x"]);
    expect(grantsNamedIn("zt:user=a decision=dec_1 serial=9")).toEqual([]);
    expect(grantsNamedIn("zt:host=web1 serial=9")).toEqual([]);
  });
});
