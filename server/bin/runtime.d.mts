// Types of runtime.mjs (plain JavaScript: it is read before anything is compiled).
export declare const NODE_FLAGS: string[];
export declare const NODE_ENV: Record<string, string>;
