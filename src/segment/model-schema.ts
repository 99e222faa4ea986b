import { z } from "zod";

/** Segment names become parts of nft set names and k8s object names. */
export const SEGMENT_NAME_RE = /^[a-z][a-z0-9_-]{0,39}$/;

const hostSchema = z.union([
  z.string(),
  z.object({ name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/), ip: z.string() }).strict(),
]);

const labelsSchema = z.record(z.string(), z.string());

const segmentSchema = z
  .object({
    hosts: z.array(hostSchema).default([]),
    k8s: z
      .object({
        // checked against Kubernetes' rules (with labels) in parseSegModel, naming the segment
        namespace: z.string(),
        podSelector: labelsSchema.default({}),
      })
      .strict()
      .optional(),
    description: z.string().optional(),
  })
  .strict();

const flowSchema = z
  .object({
    from: z.string(),
    to: z.string(),
    ports: z.array(z.string()).min(1, "expected at least one port (tcp/PORT, udp/PORT, icmp)"),
    rate: z.string().optional(),
    burst: z.number().int().positive().optional(),
    comment: z.string().optional(),
  })
  .strict();

const modeName = z.enum(["audit", "enforce"]);

/** The raw shape of `segments.yaml`; its keys are a public contract. */
export const segModelSchema = z
  .object({
    version: z.literal(1).optional(),
    segments: z.record(z.string(), segmentSchema.nullable()),
    flows: z.array(flowSchema).nullable().default([]),
    egress: z.record(z.string(), z.array(z.string())).nullable().default({}),
    ingress: z.record(z.string(), z.array(z.string())).nullable().default({}),
    mode: z
      .object({
        default: modeName.default("enforce"),
        enforce: z.array(z.string()).default([]),
        audit: z.array(z.string()).default([]),
      })
      .strict()
      .optional(),
    log: z
      .object({
        rate: z.string().optional(),
        burst: z.number().int().positive().optional(),
      })
      .strict()
      .nullable()
      .optional(),
  })
  .strict();

export type RawSegModel = z.infer<typeof segModelSchema>;
