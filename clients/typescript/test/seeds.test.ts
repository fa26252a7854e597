// Every TypeScript snippet of the two seed documents (../shared/seeds/, the
// pages this project was built from) type-checks against this package.
//
// The seed pages are stored as flattened text: each code block lost some of
// its line breaks, so a `// comment` runs into the code after it and a
// section heading runs into the code before it. The extractor undoes exactly
// that and nothing else:
//   - a line is code when it starts like TypeScript (import, const, await,
//     //, try, if, return, interface, handler:, a call on a known object);
//     consecutive code lines of one page section form one snippet;
//   - a comment ends where one of the code tokens that follow comments in
//     these pages begins after its first word (`const `, `await `, `try {`,
//     `if (`, `return `, `worker.`, `process.on`, `console.log`, `import {`,
//     `handler: `, `cleanup(`, `}`, `//`);
//   - a heading glued after the last `;` or `}` ("…;Task Groups") and a
//     "Section titled “…”" prefix are cut off;
//   - snippet-level `const` becomes `var`, because a page's examples reuse a
//     name in one block ("const handle = …" twice) and `var` may repeat;
//   - where a page elides a handler's body (`/* ... */`, `// ...`, "// Your
//     handler logic"), `return { type: "success" };` follows the marker.
// Each snippet becomes a module that declares the names the page assumes
// (its helpers such as `sendEmail`, and `client`, `handle`, `worker` where the
// page made them earlier) and is checked by `tsc --noEmit` with
// "@silo-ai/client" mapped to ../src. The runnable ones (the worker page's
// minimal worker, the cancel / restart / expedite / delete calls) are run
// against a real server in jobs.test.ts, worker.test.ts and quickstart.test.ts.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

import { describe, expect, it } from "vitest";

/** The seed documents: $SILO_SEEDS_DIR, or shared/seeds beside a parent of this repository. */
function seedsDir(): string | undefined {
  if (process.env.SILO_SEEDS_DIR) return process.env.SILO_SEEDS_DIR;
  let dir = resolve(__dirname, "../../..");
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, "..", "shared", "seeds");
    if (existsSync(candidate)) return candidate;
    dir = resolve(dir, "..");
  }
  return undefined;
}

const CODE_START = /^(import |const |let |await |\/\/|try \{|if \(|return |interface |handler: |worker\.|process\.on|client\.)/;
const AFTER_COMMENT = /(const |await |try \{|if \(|return |worker\.|process\.on|console\.log|import \{|handler: |cleanup\(|\}|\/\/)/;

/** Splits a flattened line's glued comments back onto lines of their own. */
export function unglue(line: string): string {
  const out: string[] = [];
  let rest = line;
  for (;;) {
    const at = findComment(rest);
    if (at < 0) {
      out.push(rest);
      break;
    }
    out.push(rest.slice(0, at));
    const comment = rest.slice(at + 2);
    // The comment's own first word never ends it ("// worker.ts - run …").
    const skip = comment.match(/^\s*[\w.'’-]+/)?.[0].length ?? 0;
    const found = comment.slice(skip).search(AFTER_COMMENT);
    const end = found < 0 ? -1 : found + skip;
    if (end < 0) {
      out.push("//" + comment);
      break;
    }
    out.push("//" + comment.slice(0, end));
    rest = comment.slice(end);
  }
  return out.filter((l) => l.trim() !== "").join("\n");
}

/** Index of the first `//` outside a string or template, or -1. */
function findComment(s: string): number {
  let quote: string | undefined;
  for (let i = 0; i < s.length - 1; i++) {
    const c = s[i];
    if (quote) {
      if (c === "\\") i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'" || c === "`") quote = c;
    else if (c === "/" && s[i + 1] === "/" && s[i - 1] !== ":") return i;
  }
  return -1;
}

/** Cuts prose glued after a snippet's last statement ("…;Task Groups", "…} -"). */
function cutProse(line: string): string {
  const m = line.match(/^(.*[;}])\s*([A-Z][^;{}()=`]*|[a-zA-Z]+ \((?:required|optional)\)|-)$/);
  return m && !m[2].startsWith("//") ? m[1] : line;
}

export interface Snippet {
  page: string;
  index: number;
  code: string;
}

export function extract(page: string, text: string): Snippet[] {
  const snippets: Snippet[] = [];
  let current: string[] = [];
  const flush = () => {
    if (current.length) snippets.push({ page, index: snippets.length, code: current.join("\n") });
    current = [];
  };
  for (let raw of text.split("\n")) {
    raw = raw.replace(/^Section titled “[^”]*”/, "").trim();
    // A sentence that starts with code ("worker.stop() gracefully shuts down …:") is prose.
    const prose = /:$/.test(raw) && !/[;{]/.test(raw);
    if (prose || (!CODE_START.test(raw) && !(current.length && /^[\w.]+\(|^\}/.test(raw)))) {
      flush();
      continue;
    }
    // Prose glued after the code ends this code block.
    let ended = false;
    const lines = unglue(raw)
      .split("\n")
      .map((l) => {
        const cut = cutProse(l);
        ended ||= cut !== l;
        return cut;
      });
    current.push(lines.join("\n"));
    if (ended) flush();
  }
  flush();
  return snippets;
}

/** What a page assumes exists: its helpers, and objects made earlier on the page. */
const PRELUDE = `
import { SiloGRPCClient, SiloWorker, JobStatus, JobNotFoundError, type TaskHandler, type JobHandle } from "@silo-ai/client";
import { RpcError } from "@protobuf-ts/runtime-rpc";
declare function sendEmail(to: string, subject: string, body: string): Promise<string>;
declare function processData(payload: unknown): Promise<any>;
declare function processItem(item: unknown): Promise<void>;
declare function cleanup(): void;
declare const handleEmail: TaskHandler<any>;
declare const handleReport: TaskHandler<any>;
declare const logger: { error(message: string, fields: Record<string, unknown>): void };
interface MyPayload { items: unknown[] }
interface MyMetadata extends Record<string, string> { source: string }
interface MyResult { ok: boolean }
`;

/** Names a snippet uses but does not make (the page made them earlier). */
function assumed(code: string): string {
  const out: string[] = [];
  const makes = (name: string) => new RegExp(`\\b(const|var|let) ${name}\\b`).test(code);
  if (/\bclient\b/.test(code) && !makes("client")) out.push("declare var client: SiloGRPCClient;");
  if (/\bhandle\./.test(code) && !makes("handle")) out.push("declare var handle: JobHandle;");
  if (/\bworker\./.test(code) && !makes("worker")) out.push("declare var worker: SiloWorker;");
  return out.join("\n");
}

/** Where a page elides a handler's body ("your code here"), a minimal outcome follows the marker. */
const ELIDED = /(\/\* \.\.\. \*\/|\/\/ \.\.\.$|\/\/ Your handler logic\s*$)/gm;

/** A snippet as a module: imports hoisted and de-duplicated against the prelude, const → var. */
function asModule(s: Snippet): string {
  const lines = s.code.split("\n");
  const body = lines
    .filter((l) => !/^import /.test(l.trim()))
    .join("\n")
    .replace(/(^|[\s;{}])const (?=[\w{])/g, "$1var ")
    .replace(ELIDED, '$1\nreturn { type: "success" };');
  // A handler fragment (`handler: async (ctx) => {...}`) is an object
  // property; bare `return` outcomes are a handler's body.
  const code = body.replace(/^(\/\/[^\n]*\n)*/, "");
  const wrapped = /^handler: /.test(code)
    ? `var fragment: { handler: TaskHandler<any> } = { ${body} };`
    : /^return /.test(code)
      ? `var handler: TaskHandler<any> = async () => {\n${body}\n};`
      : body;
  return `${PRELUDE}\n${assumed(body)}\n// ${s.page} #${s.index}\n${wrapped}\nexport {};\n`;
}

const dir = seedsDir();

describe.skipIf(!dir)("seed document snippets", () => {
  const pages = dir ? readdirSync(dir).filter((f) => f.endsWith(".txt")) : [];
  const snippets = pages.flatMap((p) => extract(p, readFileSync(join(dir!, p), "utf8")));

  it("finds the snippets of both pages", () => {
    expect(pages.length).toBe(2);
    expect(snippets.length).toBeGreaterThan(30);
  });

  it("repairs glued comments and headings, and nothing else", () => {
    expect(unglue('// Cancel a job by IDtry { await client.cancelJob("job-123");')).toBe(
      '// Cancel a job by ID\ntry { await client.cancelJob("job-123");',
    );
    expect(unglue('await fetch(url); // note: "a // b" stays')).toBe('await fetch(url); \n// note: "a \n// b" stays');
    expect(unglue("handler: async (ctx) => { run(); // ...}")).toBe("handler: async (ctx) => { run(); \n// ...\n}");
    expect(unglue("// worker.ts - run multiple instances of thisimport { x }")).toBe("// worker.ts - run multiple instances of this\nimport { x }");
    expect(cutProse("await worker.stop();Task Groups")).toBe("await worker.stop();");
    expect(cutProse('const x = { a: "A" };')).toBe('const x = { a: "A" };');
    expect(cutProse("new SiloWorker({ client }});taskGroup (required)")).toBe("new SiloWorker({ client }});");
  });

  it("type-checks every snippet against this package", () => {
    const out = resolve(__dirname, "../test-output/seeds");
    mkdirSync(out, { recursive: true });
    const files = snippets.map((s) => {
      const file = join(out, `${s.page.replace(/\W/g, "_")}_${String(s.index).padStart(2, "0")}.ts`);
      writeFileSync(file, asModule(s));
      return file;
    });
    writeFileSync(
      join(out, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "es2022",
          moduleResolution: "node",
          lib: ["ES2022", "DOM"],
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          esModuleInterop: true,
          types: ["node"],
          baseUrl: ".",
          paths: { "@silo-ai/client": [resolve(__dirname, "../src")] },
          typeRoots: [resolve(__dirname, "../node_modules/@types")],
        },
        files,
      }),
    );
    let report = "";
    try {
      execFileSync(resolve(__dirname, "../node_modules/.bin/tsc"), ["-p", join(out, "tsconfig.json")], { encoding: "utf8" });
    } catch (e) {
      report = String((e as { stdout?: string }).stdout ?? e);
    }
    expect(report, `snippets that do not compile (sources in ${out}):\n${report}`).toBe("");
  });
});
