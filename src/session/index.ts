export {
  SessionService,
  SESSION_TOKEN_RE,
  revokeSessionsOfUser,
  sessionNotFound,
} from "./session-service.js";
export type {
  SessionInfo,
  CreateSessionOptions,
  SessionCheck,
  RevocationOrigin,
} from "./session-service.js";
