// Writes README.md's example (the ```ts block after `<!-- example: quickstart -->`) to
// build/readme/readme.test.ts, which tsconfig.test.json compiles and `node --test` runs:
// the README's example is type-checked and run against the real stack like any test.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const readme = readFileSync(join(root, "README.md"), "utf8");
const match = /<!-- example: quickstart -->\s*```ts\n([\s\S]*?)\n```/.exec(readme);
if (match === null) {
  console.error("README.md has no ```ts block after <!-- example: quickstart -->");
  process.exit(1);
}
const out = join(root, "build", "readme", "readme.test.ts");
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `// Generated from README.md by scripts/readme-example.mjs: edit the README.\n${match[1]}\n`);
