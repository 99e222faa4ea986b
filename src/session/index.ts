export { SessionService, sessionNotFound } from "./session-service.js";
export type { SessionInfo, CreateSessionOptions, SessionCheck } from "./session-service.js";
