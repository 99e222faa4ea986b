export {
  SessionService,
  SESSION_TOKEN_RE,
  revokeSessionsOfUser,
  sessionNotFound,
} from "./session-service.js";
export type { SessionInfo, CreateSessionOptions, SessionCheck } from "./session-service.js";
