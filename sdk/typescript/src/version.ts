/** The SDK's version (package.json's), sent in the User-Agent. */
export const VERSION = "0.1.0";
