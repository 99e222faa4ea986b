import type { AuditRowChained } from "../audit-log.js";
import {
  formatSyslog,
  SyslogClient,
  type SyslogOptions,
  type SyslogSeverity,
} from "./syslog-client.js";
import { formatEvent, type Sink, type SinkFormat } from "./sink.js";

function severityOf(r: AuditRowChained): SyslogSeverity {
  if (r.kind === "alert") {
    const sev = (JSON.parse(r.data) as { severity?: string }).severity;
    return sev === "critical" ? 2 : 4;
  }
  if (r.kind.includes("breakglass")) return 2;
  return r.outcome === "deny" || r.outcome === "failure" ? 5 : 6;
}

/** Audit events as RFC 5424 messages (MSG = the event's JSON) over UDP, TCP or TLS. */
export function syslogSink(name: string, options: SyslogOptions, format: SinkFormat): Sink {
  const client = new SyslogClient(options);
  return {
    name,
    async deliver(rows) {
      await client.send(
        rows.map((r) =>
          formatSyslog({
            severity: severityOf(r),
            ts: r.ts,
            host: client.host,
            appName: client.appName,
            msgId: r.kind,
            sd: { seq: String(r.seq), id: r.id, outcome: r.outcome },
            msg: JSON.stringify(formatEvent(r, format)),
          }),
        ),
      );
    },
    close: () => client.close(),
  };
}
