import type { SessionService } from "../../src/session/index.js";

/**
 * A session for a user as if they had signed in from loopback: what a suite needs when
 * sign-in itself is not what it tests. Returns the session and its cookie/bearer token.
 */
export function testSession(
  sessions: SessionService,
  userId: string,
  options: { sourceIp?: string; userAgent?: string; deviceId?: string } = {},
): ReturnType<SessionService["create"]> {
  return sessions.create({
    userId,
    sourceIp: options.sourceIp ?? "127.0.0.1",
    userAgent: options.userAgent ?? "test",
    ...(options.deviceId !== undefined ? { deviceId: options.deviceId } : {}),
  });
}
