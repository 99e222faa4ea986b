import type { SinkConfig } from "../audit-config.js";
import { jsonlSink } from "./jsonl-sink.js";
import { syslogSink } from "./syslog-sink.js";
import { lokiSink, webhookSink } from "./http-sinks.js";
import type { Sink } from "./sink.js";

/** The sink a config entry describes; its name defaults to its type (plus index when repeated). */
export function buildSink(c: SinkConfig, index: number): Sink {
  const name = c.name ?? `${c.type}${index > 0 ? `-${index}` : ""}`;
  switch (c.type) {
    case "stdout":
      return jsonlSink(name, "stdout", c.format);
    case "file":
      return jsonlSink(name, { path: c.path }, c.format);
    case "syslog":
      return syslogSink(
        name,
        { host: c.host, port: c.port, protocol: c.protocol, appName: c.app_name, ca: c.ca_file },
        c.format,
      );
    case "loki":
      return lokiSink(name, c.url, c.labels, c.format);
    case "webhook":
      return webhookSink(name, c.url, c.headers, c.format);
  }
}
