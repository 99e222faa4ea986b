/**
 * Kubernetes names in a segmentation model (namespace, pod selector keys and values, the
 * NetworkPolicy name a segment gives) follow Kubernetes' own rules
 * (k8s.io/apimachinery pkg/util/validation): the real CLI refuses a model the API server
 * would refuse, naming the segment, the label and what is wrong, and emits nothing.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { afterAll, describe, expect, it } from "vitest";
import { runZt, tempDir } from "./helpers/zt-process.js";

const dir = tempDir("zt-seg-k8s-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
async function compileK8s(segments: string) {
  const file = join(dir, `m${++n}.yaml`);
  writeFileSync(
    file,
    `segments:\n${segments}\n  db: { k8s: { namespace: data, podSelector: { app: db } } }\nflows:\n  - { from: "*", to: db, ports: [tcp/5432] }\n`,
  );
  return runZt(["seg", "compile", "--model", file, "-t", "k8s"], { timeoutMs: 30_000 });
}

const k63 = "a".repeat(63);
const prefix253 = `${"p".repeat(61)}.${"q".repeat(63)}.${"r".repeat(63)}.${"s".repeat(63)}`;

describe("zt seg compile -t k8s: Kubernetes names", () => {
  it("accepts what Kubernetes accepts (limits included): 63-character names, a 253-character prefix, empty values, dots and underscores inside", async () => {
    expect(prefix253).toHaveLength(253);
    const r = await compileK8s(
      `  web: { k8s: { namespace: ${"w".repeat(63)}, podSelector: { "${prefix253}/${k63}": "${k63}", "kubernetes.io/metadata.name": x, "app.kubernetes.io/name": "A_b.c-D", "Tier": "", "9": "0" } } }`,
    );
    expect(r.stderr).not.toContain("error");
    expect(r.code).toBe(0);
    type Policy = {
      metadata: { name: string };
      spec: { podSelector: { matchLabels?: Record<string, string> } };
    };
    const docs = parseAllDocuments(r.stdout).map((d) => d.toJS() as Policy);
    const web = docs.find((d) => d.metadata.name === "zt-web");
    expect(web?.spec.podSelector.matchLabels).toEqual({
      [`${prefix253}/${k63}`]: k63,
      "kubernetes.io/metadata.name": "x",
      "app.kubernetes.io/name": "A_b.c-D",
      Tier: "",
      "9": "0",
    });
  });

  const refused: [string, string, RegExp][] = [
    [
      "a label key with a space",
      `{ "app name": web }`,
      /segments\.web\.k8s\.podSelector\.app name: segment "web": label key "app name" is not a valid Kubernetes label key: the name part must be at most 63 characters: letters, digits, '-', '_' and '\.', beginning and ending with a letter or digit/,
    ],
    [
      "a label key name of 64 characters",
      `{ "${"a".repeat(64)}": web }`,
      /segment "web": label key "a{64}" is not a valid Kubernetes label key: the name part is longer than 63 characters \(64\)/,
    ],
    [
      "a label key ending in '-'",
      `{ "app-": web }`,
      /segment "web": label key "app-" is not a valid Kubernetes label key: the name part must be/,
    ],
    [
      "a label key with two '/'",
      `{ "a/b/c": web }`,
      /segment "web": label key "a\/b\/c" is not a valid Kubernetes label key: a label key has at most one '\/'/,
    ],
    [
      "a label key with an empty prefix",
      `{ "/app": web }`,
      /segment "web": label key "\/app" is not a valid Kubernetes label key: the prefix before '\/' is empty/,
    ],
    [
      "a label key with an empty name",
      `{ "example.com/": web }`,
      /segment "web": label key "example\.com\/" is not a valid Kubernetes label key: the name part is empty/,
    ],
    [
      "a label key whose prefix has upper case",
      `{ "Example.com/app": web }`,
      /segment "web": label key "Example\.com\/app" is not a valid Kubernetes label key: the prefix "Example\.com" is not a DNS subdomain/,
    ],
    [
      "a label key whose prefix is 254 characters",
      `{ "${prefix253}x/app": web }`,
      /segment "web": label key "p{61}\.qq…" is not a valid Kubernetes label key: the prefix is longer than 253 characters \(254\)/,
    ],
    [
      "an empty label key",
      `{ "": web }`,
      /segment "web": label key "" is not a valid Kubernetes label key: the name part is empty/,
    ],
    [
      "a label value starting with '-'",
      `{ app: "-web" }`,
      /segments\.web\.k8s\.podSelector\.app: segment "web": label "app" has value "-web", not a valid Kubernetes label value: a label value is empty or at most 63 characters/,
    ],
    [
      "a label value with '/'",
      `{ app: "web/x" }`,
      /segment "web": label "app" has value "web\/x", not a valid Kubernetes label value/,
    ],
    [
      "a label value of 64 characters",
      `{ app: "${"v".repeat(64)}" }`,
      /segment "web": label "app" has value "v{64}", not a valid Kubernetes label value: longer than 63 characters \(64\)/,
    ],
    [
      // zod dropped this key silently: the selector became {} and selected every pod
      "a label key __proto__ (it was dropped and the selector selected every pod)",
      `{ __proto__: web }`,
      /segments\.web\.k8s\.podSelector\.__proto__: segment "web": label key "__proto__" is not a valid Kubernetes label key/,
    ],
  ];
  it.each(refused)("refuses %s, naming segment, label and rule", async (_, sel, message) => {
    const r = await compileK8s(`  web: { k8s: { namespace: web, podSelector: ${sel} } }`);
    expect(r.code).toBe(65);
    expect(r.stderr).toContain("ZT_SEG_MODEL_INVALID");
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(r.stdout).toBe(""); // no NetworkPolicy at all
  });

  it("refuses a namespace that is not a DNS-1123 label (upper case, '_', 64 characters)", async () => {
    for (const [ns, why] of [
      ["Web", /a namespace name is lower-case letters, digits and '-'/],
      ["web_ns", /a namespace name is lower-case letters/],
      ["w".repeat(64), /longer than 63 characters \(64\)/],
    ] as const) {
      const r = await compileK8s(`  web: { k8s: { namespace: "${ns}" } }`);
      expect(r.code).toBe(65);
      expect(r.stderr).toMatch(
        new RegExp(
          `segments\\.web\\.k8s\\.namespace: segment "web": namespace "${ns.slice(0, 64)}" is not a valid Kubernetes namespace name: ${why.source}`,
        ),
      );
      expect(r.stdout).toBe("");
    }
  });

  it("refuses a Kubernetes segment whose name cannot name its NetworkPolicy (zt-NAME with '_' or a trailing '-')", async () => {
    for (const name of ["web_front", "web-"]) {
      const r = await compileK8s(`  ${name}: { k8s: { namespace: web } }`);
      expect(r.code).toBe(65);
      expect(r.stderr).toContain(
        `segments.${name}.k8s: segment "${name}" has k8s selectors, so it names a NetworkPolicy "zt-${name}", which Kubernetes refuses`,
      );
      expect(r.stdout).toBe("");
    }
    // a segment without k8s selectors has no policy of its own: '_' stays allowed
    const ok = await compileK8s(`  web_front: { hosts: [10.0.0.1] }`);
    expect(ok.code).toBe(0);
  });

  it("a selector { constructor: x } next to {} (every pod) in one namespace is an overlap error, as for any other key", async () => {
    // `k in sb` found Object.prototype.constructor on {}, so the two were taken as disjoint
    const r = await compileK8s(
      `  a: { k8s: { namespace: web, podSelector: { constructor: x } } }\n  b: { k8s: { namespace: web } }`,
    );
    expect(r.code).toBe(65);
    expect(r.stderr).toContain(
      `segments.b.k8s.podSelector: {} (every pod) overlaps { constructor: x } of segment "a" in namespace "web"`,
    );
  });

  it("a __proto__ key anywhere else is refused too (it was dropped without a word)", async () => {
    const file = join(dir, "proto.yaml");
    writeFileSync(
      file,
      `segments:\n  a: { hosts: [10.0.0.1] }\nflows: []\negress: { __proto__: [tcp/443], a: [tcp/80] }\n`,
    );
    const r = await runZt(["seg", "compile", "--model", file], { timeoutMs: 30_000 });
    expect(r.code).toBe(65);
    expect(r.stderr).toContain(`egress.__proto__: "__proto__" is not allowed as a key`);
  });
});
