export { openAppContext } from "./app-context.js";
export type { AppContext, OpenAppContextOptions } from "./app-context.js";
