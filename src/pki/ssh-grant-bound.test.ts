import { describe, expect, it } from "vitest";
import { boundByGrants, type SshGrantFacts } from "./ssh-grant-bound.js";

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
