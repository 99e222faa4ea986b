export * from "./errors.js";
export * from "./clock.js";
export * from "./ids.js";
export * from "./duration.js";
export * from "./secure-files.js";
export * from "./secret-box.js";
export * from "./cidr.js";
export * from "./latest-reads.js";
