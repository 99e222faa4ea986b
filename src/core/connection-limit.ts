import type { Server, Socket } from "node:net";
import { normalizeIp } from "./cidr.js";

/**
 * `limits.max_connections_per_source` on a listening server: a new connection from an
 * address that already holds `max` is closed at once, so one address cannot hold every
 * connection (and file descriptor) of the process. Counts follow the sockets' closes.
 */
export function limitConnectionsPerSource(server: Server, max: number): void {
  const perSource = new Map<string, number>();
  server.on("connection", (socket: Socket) => {
    const ip = normalizeIp(socket.remoteAddress);
    const n = (perSource.get(ip) ?? 0) + 1;
    if (n > max) {
      socket.destroy();
      return;
    }
    perSource.set(ip, n);
    socket.once("close", () => {
      const left = (perSource.get(ip) ?? 1) - 1;
      if (left <= 0) perSource.delete(ip);
      else perSource.set(ip, left);
    });
  });
}
