export * from "./bus";
export * from "./vm";
export * from "./errors";
export * from "./signing";
