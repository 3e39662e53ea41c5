// Marks dist/cjs/ (the CommonJS build, tsconfig.cjs.json) as CommonJS inside this ESM package,
// so that `require("@assetwithdrawal/sdk")` loads it and TypeScript reads its .d.ts as CommonJS.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "cjs");
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, "package.json"), '{\n  "type": "commonjs"\n}\n');
