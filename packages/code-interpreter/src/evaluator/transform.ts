// Turns one JavaScript/TypeScript cell into a script that a persistent `vm` context can run:
// TypeScript annotations are stripped and ESM imports become require() (sucrase), then the
// cell is wrapped in an async function so top-level `await` works, with its top-level
// declarations hoisted to `var`s of the context so they persist into later cells (and may be
// declared again, as notebook users re-run cells). The last expression statement is returned.
import { parse, type Node } from 'acorn';
import { transform } from 'sucrase';

interface Edit { start: number; end: number; text: string }

type AnyNode = Node & Record<string, any>;

function patternNames(p: AnyNode, out: string[]): void {
  switch (p.type) {
    case 'Identifier': out.push(p.name); break;
    case 'ObjectPattern': for (const prop of p.properties) patternNames(prop.type === 'RestElement' ? prop.argument : prop.value, out); break;
    case 'ArrayPattern': for (const el of p.elements) if (el) patternNames(el, out); break;
    case 'RestElement': patternNames(p.argument, out); break;
    case 'AssignmentPattern': patternNames(p.left, out); break;
  }
}

export interface Rewritten { code: string }

export function rewriteCell(source: string): Rewritten {
  // Both languages go through the TypeScript transform (as upstream's Babel preset does), so
  // JavaScript cells may carry annotations too; JSX is not enabled.
  const transforms: Array<'typescript' | 'imports'> = ['typescript', 'imports'];
  let code = transform(source, { transforms, keepUnusedImports: true, disableESTransforms: true, production: true }).code;
  const ast = parse(code, {
    ecmaVersion: 'latest', sourceType: 'script', allowAwaitOutsideFunction: true,
    allowReturnOutsideFunction: true, allowHashBang: true,
  }) as AnyNode;
  const body: AnyNode[] = ast.body;
  const names: string[] = [];
  const hoisted: string[] = [];
  const edits: Edit[] = [];
  // The cell's value is its last expression statement's, when only declarations follow it (their
  // completion is empty, as in a REPL): `f()\nfunction f() {…}` shows f's result.
  let valueAt = -1;
  for (let i = body.length - 1; i >= 0; i--) {
    const t = body[i].type;
    if (t === 'ExpressionStatement' && !body[i].directive) { valueAt = i; break; }
    if (t !== 'FunctionDeclaration' && t !== 'ClassDeclaration' && t !== 'VariableDeclaration' && t !== 'EmptyStatement') break;
  }
  body.forEach((stmt, i) => {
    if (stmt.type === 'ExpressionStatement' && stmt.directive === 'use strict') {
      // sucrase's imports transform adds it; a REPL cell is sloppy script code.
      edits.push({ start: stmt.start, end: stmt.end, text: '' });
      return;
    }
    if (stmt.type === 'VariableDeclaration') {
      const parts: string[] = [];
      for (const d of stmt.declarations) {
        patternNames(d.id, names);
        if (d.init) parts.push(`(${code.slice(d.id.start, d.id.end)} = ${code.slice(d.init.start, d.init.end)})`);
        else if (stmt.kind !== 'var') parts.push(`(${code.slice(d.id.start, d.id.end)} = undefined)`);
      }
      edits.push({ start: stmt.start, end: stmt.end, text: parts.length ? `void (${parts.join(', ')});` : ';' });
      return;
    }
    if (stmt.type === 'FunctionDeclaration' && stmt.id) {
      names.push(stmt.id.name);
      hoisted.push(`${stmt.id.name} = (${code.slice(stmt.start, stmt.end)});`);
      edits.push({ start: stmt.start, end: stmt.end, text: '' });
      return;
    }
    if (stmt.type === 'ClassDeclaration' && stmt.id) {
      names.push(stmt.id.name);
      edits.push({ start: stmt.start, end: stmt.end, text: `${stmt.id.name} = (${code.slice(stmt.start, stmt.end)});` });
      return;
    }
    if (i === valueAt) {
      edits.push({ start: stmt.start, end: stmt.end, text: `__coveValue = (${code.slice(stmt.expression.start, stmt.expression.end)});` });
    }
  });
  for (const e of edits.sort((a, b) => b.start - a.start)) code = code.slice(0, e.start) + e.text + code.slice(e.end);
  const decl = names.length ? `var ${[...new Set(names)].join(', ')};\n` : '';
  return { code: `${decl}(async () => {let __coveValue;\n${hoisted.join('\n')}\n${code}\n;return __coveValue;\n})()` };
}
