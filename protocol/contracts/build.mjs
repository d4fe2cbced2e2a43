// Compiles payment_channel.tolk with @ton/tolk-js and writes payment_channel.code.hex
// (lowercase hex of the code BOC, one line). `node build.mjs --check` recompiles and
// compares with the committed file instead, exiting 1 on mismatch.

import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runTolkCompiler, getTolkCompilerVersion } from "@ton/tolk-js";

const here = dirname(fileURLToPath(import.meta.url));
const SOURCE = "payment_channel.tolk";
const OUTPUT = join(here, "payment_channel.code.hex");

const args = process.argv.slice(2);
const unknown = args.filter((a) => a !== "--check");
if (unknown.length > 0) {
    console.error(`usage: node build.mjs [--check]  (unknown argument: ${unknown[0]})`);
    process.exit(2);
}
const check = args.includes("--check");

const result = await runTolkCompiler({
    entrypointFileName: SOURCE,
    fsReadCallback: (path) => readFileSync(join(here, path), "utf-8"),
    optimizationLevel: 2,
    withStackComments: false,
    withSrcLineComments: false,
});

if (result.status !== "ok") {
    console.error(`tolk compilation failed:\n${result.message}`);
    process.exit(1);
}
if (result.stderr && result.stderr.trim() !== "") {
    console.error(result.stderr.trim());
}

const hex = Buffer.from(result.codeBoc64, "base64").toString("hex") + "\n";
const version = await getTolkCompilerVersion();

if (check) {
    const committed = existsSync(OUTPUT) ? readFileSync(OUTPUT, "utf-8") : null;
    if (committed === hex) {
        console.log(`OK: payment_channel.code.hex matches (Tolk ${version}, code hash ${result.codeHashHex.toLowerCase()})`);
        process.exit(0);
    }
    console.error(
        committed === null
            ? "MISMATCH: payment_channel.code.hex is missing; run `node build.mjs` and commit it"
            : `MISMATCH: payment_channel.code.hex is stale (fresh code hash ${result.codeHashHex.toLowerCase()}); run \`node build.mjs\` and commit it`,
    );
    process.exit(1);
}

writeFileSync(OUTPUT, hex);
console.log(`wrote payment_channel.code.hex (Tolk ${version}, ${hex.length / 2 - 0.5} bytes, code hash ${result.codeHashHex.toLowerCase()})`);
