export { openAppContext } from "./app-context.js";
export type { AppContext, OpenAppContextOptions } from "./app-context.js";
export { createServices } from "./services.js";
export type { Services } from "./services.js";
