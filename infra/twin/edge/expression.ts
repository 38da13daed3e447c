// A parser and evaluator for the part of Cloudflare's Rules language
// (wirefilter) that our rules use, plus the neighbouring features a reader of
// Cloudflare's documentation would expect to work, so that an expression the
// twin accepts means what it means at Cloudflare. Anything outside this subset
// is rejected with the position of the offending token instead of being
// guessed at: a twin that silently evaluated `http.request.uri.path wildcard
// "/v2/*"` as false would hide exactly the mistakes it exists to catch.
//
// Supported:
//   fields     http.host, http.request.method, http.request.uri,
//              http.request.uri.path, http.request.uri.query,
//              http.request.full_uri, http.user_agent (String), ip.src (IP),
//              ssl (Bool)
//   functions  lower(String), upper(String) -> String;
//              starts_with(String, "literal"), ends_with(String, "literal") -> Bool
//   operators  eq ==, ne !=, contains, matches ~ (String);
//              in {"a" "b"} (String); eq ==, ne !=, in {192.0.2.0/24 2001:db8::1} (IP)
//   logic      not !, and &&, xor ^^, or || (precedence in that order, highest
//              first, as Cloudflare documents it), parentheses
//   literals   "quoted" with \" and \\ as the only escapes (Cloudflare's rule);
//              raw strings r"..." and r#"..."# (no escapes at all);
//              unquoted IP addresses and CIDR ranges (for ip.src)
//
// `matches` uses JavaScript's RegExp where Cloudflare uses Rust's regex crate.
// The two agree on the common syntax (classes, anchors, groups, repetition);
// they differ at the edges (Rust has no look-around or backreferences, which
// Cloudflare rejects and we accept; Unicode classes and some escapes differ).
// It is an approximation: do not use it to validate a regex for Cloudflare.
import { BlockList, isIP } from 'node:net';

export type FieldType = 'String' | 'IP' | 'Bool';

/** The fields an expression may name, with their types. */
export const FIELD_TYPES = {
  'http.host': 'String',
  'http.request.method': 'String',
  'http.request.uri': 'String',
  'http.request.uri.path': 'String',
  'http.request.uri.query': 'String',
  'http.request.full_uri': 'String',
  'http.user_agent': 'String',
  'ip.src': 'IP',
  ssl: 'Bool',
} as const satisfies Record<string, FieldType>;

export type FieldName = keyof typeof FIELD_TYPES;

/** The values of the fields for one request, supplied by the caller. */
export type RequestFields = {
  [K in FieldName]: (typeof FIELD_TYPES)[K] extends 'Bool' ? boolean : string;
};

/** A syntax or type error, at a 0-based character offset into the expression. */
export class ExpressionError extends Error {
  readonly position: number;
  readonly expression: string;
  constructor(message: string, position: number, expression: string) {
    // The caret line makes a long generated expression's error readable in a log.
    super(`${message} at position ${position}\n  ${expression}\n  ${' '.repeat(position)}^`);
    this.name = 'ExpressionError';
    this.position = position;
    this.expression = expression;
  }
}

// ---- syntax tree -------------------------------------------------------------

/** Something that has a value: a field, or a function applied to values and literals. */
export type Value =
  | { kind: 'field'; name: FieldName; type: FieldType; position: number }
  | { kind: 'call'; name: FunctionName; args: Value[]; literal?: string; type: FieldType; position: number };

export type Expr =
  | { kind: 'or' | 'xor' | 'and'; left: Expr; right: Expr }
  | { kind: 'not'; operand: Expr }
  /** A Bool field or function used on its own, e.g. `ssl`. */
  | { kind: 'bool'; value: Value }
  | { kind: 'compare'; op: 'eq' | 'ne' | 'contains'; left: Value; right: string }
  | { kind: 'matches'; left: Value; pattern: string; regex: RegExp }
  | { kind: 'in'; left: Value; set: string[] }
  /** ip.src compared with addresses and ranges; `ne` is kept as a negated `eq`. */
  | { kind: 'ip'; left: Value; negate: boolean; ranges: string[]; list: BlockList };

type FunctionName = 'lower' | 'upper' | 'starts_with' | 'ends_with';

/** Each function: its argument types ('literal' = a String literal) and result. */
const FUNCTIONS: Record<FunctionName, { args: ('String' | 'literal')[]; returns: FieldType }> = {
  lower: { args: ['String'], returns: 'String' },
  upper: { args: ['String'], returns: 'String' },
  starts_with: { args: ['String', 'literal'], returns: 'Bool' },
  ends_with: { args: ['String', 'literal'], returns: 'Bool' },
};

// Operators Cloudflare has that we do not model: named so the error can say
// "not supported" rather than "unknown", which would send a reader to the docs
// in vain.
const UNSUPPORTED_OPERATORS = new Set(['lt', 'le', 'gt', 'ge', '<', '<=', '>', '>=', 'wildcard', 'strict', 'bitwise_and', '&']);

// ---- lexer -------------------------------------------------------------------

type Token =
  | { kind: 'word'; text: string; position: number }
  | { kind: 'string'; value: string; position: number }
  | { kind: 'punct'; text: string; position: number }
  | { kind: 'end'; position: number };

// A "word" is anything unquoted: field and function names, keywords, and IP
// literals (which contain ':' and '/'). The parser decides which by context,
// the way wirefilter does, instead of the lexer guessing.
const WORD = /[A-Za-z0-9_.:/]/;
const PUNCT = ['==', '!=', '&&', '||', '^^', '<=', '>=', '(', ')', '{', '}', ',', '!', '~', '<', '>', '&'];

function tokenize(src: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const fail = (message: string, at: number): never => {
    throw new ExpressionError(message, at, src);
  };
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const start = i;
    if (c === '"') {
      let value = '';
      i++;
      for (;;) {
        if (i >= src.length) fail('unterminated string', start);
        const ch = src[i];
        if (ch === '"') break;
        if (ch === '\\') {
          const next = src[i + 1];
          if (next !== '"' && next !== '\\') fail(`invalid escape \\${next ?? ''} (only \\" and \\\\ are allowed in a quoted string; use a raw string r"..." for regexes)`, i);
          value += next;
          i += 2;
          continue;
        }
        value += ch;
        i++;
      }
      i++;
      tokens.push({ kind: 'string', value, position: start });
      continue;
    }
    // Raw strings: r"..." or r#"..."# (any number of #), taken verbatim.
    if (c === 'r' && (src[i + 1] === '"' || src[i + 1] === '#')) {
      let hashes = 0;
      let j = i + 1;
      while (src[j] === '#') {
        hashes++;
        j++;
      }
      if (src[j] !== '"') fail('expected " to open a raw string', j);
      const close = '"' + '#'.repeat(hashes);
      const end = src.indexOf(close, j + 1);
      if (end < 0) fail('unterminated raw string', start);
      tokens.push({ kind: 'string', value: src.slice(j + 1, end), position: start });
      i = end + close.length;
      continue;
    }
    if (WORD.test(c)) {
      while (i < src.length && WORD.test(src[i])) i++;
      tokens.push({ kind: 'word', text: src.slice(start, i), position: start });
      continue;
    }
    const punct = PUNCT.find((p) => src.startsWith(p, i));
    if (!punct) fail(`unexpected character ${JSON.stringify(c)}`, i);
    tokens.push({ kind: 'punct', text: punct!, position: start });
    i += punct!.length;
  }
  tokens.push({ kind: 'end', position: src.length });
  return tokens;
}

// ---- parser ------------------------------------------------------------------

/** Parses an expression into its syntax tree, checking names and types. */
export function parse(src: string): Expr {
  const tokens = tokenize(src);
  let at = 0;
  const peek = () => tokens[at];
  const fail = (message: string, token: Token = peek()): never => {
    throw new ExpressionError(message, token.position, src);
  };
  const describe = (t: Token) =>
    t.kind === 'end' ? 'end of expression' : t.kind === 'string' ? `string ${JSON.stringify(t.value)}` : JSON.stringify(t.text);
  /** True (and consumes it) if the next token is one of these words or symbols. */
  const accept = (...texts: string[]): boolean => {
    const t = peek();
    if ((t.kind === 'word' || t.kind === 'punct') && texts.includes(t.text)) {
      at++;
      return true;
    }
    return false;
  };
  const expect = (text: string, context: string) => {
    if (!accept(text)) fail(`expected "${text}" ${context}, found ${describe(peek())}`);
  };

  // Precedence, lowest first: or, xor, and, not (Cloudflare's documented order).
  const parseOr = (): Expr => {
    let left = parseXor();
    while (accept('or', '||')) left = { kind: 'or', left, right: parseXor() };
    return left;
  };
  const parseXor = (): Expr => {
    let left = parseAnd();
    while (accept('xor', '^^')) left = { kind: 'xor', left, right: parseAnd() };
    return left;
  };
  const parseAnd = (): Expr => {
    let left = parseNot();
    while (accept('and', '&&')) left = { kind: 'and', left, right: parseNot() };
    return left;
  };
  const parseNot = (): Expr => {
    if (accept('not', '!')) return { kind: 'not', operand: parseNot() };
    if (accept('(')) {
      const inner = parseOr();
      expect(')', 'to close "("');
      return inner;
    }
    return parseComparison();
  };

  const parseValue = (): Value => {
    const t = peek();
    if (t.kind !== 'word') fail(`expected a field or function, found ${describe(t)}`);
    const name = (t as { text: string }).text;
    at++;
    if (accept('(')) return parseCall(name, t);
    if (!(name in FIELD_TYPES)) {
      if (name in FUNCTIONS) fail(`${name} is a function: call it as ${name}(...)`, t);
      fail(`unknown field "${name}" (the twin knows ${Object.keys(FIELD_TYPES).join(', ')})`, t);
    }
    const field = name as FieldName;
    return { kind: 'field', name: field, type: FIELD_TYPES[field], position: t.position };
  };

  const parseCall = (name: string, nameToken: Token): Value => {
    if (!(name in FUNCTIONS)) fail(`unknown function "${name}" (the twin knows ${Object.keys(FUNCTIONS).join(', ')})`, nameToken);
    const fn = FUNCTIONS[name as FunctionName];
    const args: Value[] = [];
    let literal: string | undefined;
    fn.args.forEach((want, n) => {
      if (n > 0) expect(',', `between the arguments of ${name}()`);
      if (want === 'literal') {
        const t = peek();
        if (t.kind !== 'string') fail(`${name}() takes a string literal as argument ${n + 1}, found ${describe(t)}`);
        literal = (t as { value: string }).value;
        at++;
        return;
      }
      const arg = parseValue();
      if (arg.type !== want) fail(`${name}() takes a ${want}, and ${valueName(arg)} is ${article(arg.type)}`, tokens[at - 1]);
      args.push(arg);
    });
    expect(')', `to close ${name}(`);
    return { kind: 'call', name: name as FunctionName, args, ...(literal !== undefined ? { literal } : {}), type: fn.returns, position: nameToken.position };
  };

  const parseComparison = (): Expr => {
    const first = peek();
    if (first.kind === 'string') fail('a comparison starts with a field or function, not a literal');
    const left = parseValue();
    const opToken = peek();
    const op = opToken.kind === 'word' || opToken.kind === 'punct' ? opToken.text : '';
    if (left.type === 'Bool') {
      // A Bool stands alone; Cloudflare has no `ssl eq true`.
      if (isOperator(op)) fail(`${valueName(left)} is a Bool: use it on its own (e.g. "${valueName(left)}" or "not ${valueName(left)}")`, opToken);
      return { kind: 'bool', value: left };
    }
    if (!isOperator(op)) {
      if (opToken.kind === 'end' || op === ')' || op === 'and' || op === 'or' || op === 'xor' || op === '&&' || op === '||' || op === '^^') {
        fail(`${valueName(left)} is ${article(left.type)}, not a Bool: compare it with an operator`, opToken);
      }
      fail(`unknown operator ${describe(opToken)}`, opToken);
    }
    if (UNSUPPORTED_OPERATORS.has(op)) fail(`operator "${op}" is not supported by the twin`, opToken);
    at++;
    return left.type === 'IP' ? parseIpComparison(left, op, opToken) : parseStringComparison(left, op, opToken);
  };

  const parseStringComparison = (left: Value, op: string, opToken: Token): Expr => {
    if (op === 'in') return { kind: 'in', left, set: parseSet((t) => (t.kind === 'string' ? t.value : undefined), 'a string literal') };
    const t = peek();
    if (t.kind !== 'string') fail(`"${op}" compares ${valueName(left)} with a string literal, found ${describe(t)}`);
    const right = (t as { value: string }).value;
    at++;
    if (op === 'matches' || op === '~') {
      try {
        return { kind: 'matches', left, pattern: right, regex: new RegExp(right) };
      } catch (e) {
        fail(`invalid regular expression: ${(e as Error).message}`, t);
      }
    }
    const canonical = op === '==' ? 'eq' : op === '!=' ? 'ne' : op;
    if (canonical !== 'eq' && canonical !== 'ne' && canonical !== 'contains') fail(`operator "${op}" does not apply to a String`, opToken);
    return { kind: 'compare', op: canonical as 'eq' | 'ne' | 'contains', left, right };
  };

  const parseIpComparison = (left: Value, op: string, opToken: Token): Expr => {
    const ipLiteral = (t: Token, allowRange: boolean): string | undefined => {
      if (t.kind !== 'word') return undefined;
      const [addr, bits, extra] = t.text.split('/');
      if (!isIP(addr) || extra !== undefined) return undefined;
      if (bits === undefined) return t.text;
      const max = isIP(addr) === 4 ? 32 : 128;
      if (!allowRange || !/^\d+$/.test(bits) || Number(bits) > max) return undefined;
      return t.text;
    };
    if (op === 'in') {
      const ranges = parseSet((t) => ipLiteral(t, true), 'an IP address or CIDR range');
      return { kind: 'ip', left, negate: false, ranges, list: blockList(ranges) };
    }
    if (op !== 'eq' && op !== 'ne' && op !== '==' && op !== '!=') fail(`operator "${op}" does not apply to an IP`, opToken);
    const t = peek();
    const addr = ipLiteral(t, false);
    if (addr === undefined) {
      const cidr = t.kind === 'word' && t.text.includes('/');
      fail(cidr ? 'a CIDR range needs "in {...}" (Cloudflare does not accept one after eq)' : `expected an IP address, found ${describe(t)}`, t);
    }
    at++;
    return { kind: 'ip', left, negate: op === 'ne' || op === '!=', ranges: [addr!], list: blockList([addr!]) };
  };

  /** `{ item item ... }`: space-separated, as Cloudflare writes sets. */
  const parseSet = (item: (t: Token) => string | undefined, what: string): string[] => {
    expect('{', 'to open the set after "in"');
    const items: string[] = [];
    while (!accept('}')) {
      const t = peek();
      if (t.kind === 'punct' && t.text === ',') fail('set members are separated by spaces, not commas');
      const v = item(t);
      if (v === undefined) fail(`expected ${what} or "}" in the set, found ${describe(t)}`);
      items.push(v!);
      at++;
    }
    return items;
  };

  const expr = parseOr();
  if (peek().kind !== 'end') fail(`unexpected ${describe(peek())} after a complete expression`);
  return expr;
}

const OPERATORS = new Set(['eq', 'ne', '==', '!=', 'contains', 'matches', '~', 'in', ...UNSUPPORTED_OPERATORS]);
const isOperator = (op: string) => OPERATORS.has(op);

function valueName(v: Value): string {
  return v.kind === 'field' ? v.name : `${v.name}(...)`;
}

function article(type: FieldType): string {
  return type === 'IP' ? 'an IP' : `a ${type}`;
}

function blockList(ranges: string[]): BlockList {
  const list = new BlockList();
  for (const r of ranges) {
    const [addr, bits] = r.split('/');
    const family = isIP(addr) === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) list.addAddress(addr, family);
    else list.addSubnet(addr, Number(bits), family);
  }
  return list;
}

// ---- evaluation --------------------------------------------------------------

export type Predicate = (fields: RequestFields) => boolean;

/** Parses once and returns the evaluator: the rules are compiled at start-up, evaluated per request. */
export function compile(src: string): Predicate {
  return evaluator(parse(src));
}

function evaluator(e: Expr): Predicate {
  switch (e.kind) {
    case 'or': {
      const [l, r] = [evaluator(e.left), evaluator(e.right)];
      return (f) => l(f) || r(f);
    }
    case 'and': {
      const [l, r] = [evaluator(e.left), evaluator(e.right)];
      return (f) => l(f) && r(f);
    }
    case 'xor': {
      const [l, r] = [evaluator(e.left), evaluator(e.right)];
      return (f) => l(f) !== r(f);
    }
    case 'not': {
      const inner = evaluator(e.operand);
      return (f) => !inner(f);
    }
    case 'bool': {
      const v = valueOf(e.value);
      return (f) => v(f) === true;
    }
    case 'compare': {
      const v = valueOf(e.left);
      const right = e.right;
      if (e.op === 'eq') return (f) => v(f) === right;
      if (e.op === 'ne') return (f) => v(f) !== right;
      return (f) => String(v(f)).includes(right);
    }
    case 'matches': {
      const v = valueOf(e.left);
      const re = e.regex;
      return (f) => re.test(String(v(f)));
    }
    case 'in': {
      const v = valueOf(e.left);
      const set = new Set(e.set);
      return (f) => set.has(String(v(f)));
    }
    case 'ip': {
      const v = valueOf(e.left);
      const { list, negate } = e;
      return (f) => {
        const addr = String(v(f));
        const family = isIP(addr);
        const hit = family !== 0 && list.check(addr, family === 4 ? 'ipv4' : 'ipv6');
        return negate ? !hit : hit;
      };
    }
  }
}

function valueOf(v: Value): (f: RequestFields) => string | boolean {
  if (v.kind === 'field') {
    const name = v.name;
    return (f) => f[name];
  }
  const args = v.args.map(valueOf);
  const literal = v.literal ?? '';
  switch (v.name) {
    case 'lower':
      return (f) => String(args[0](f)).toLowerCase();
    case 'upper':
      return (f) => String(args[0](f)).toUpperCase();
    case 'starts_with':
      return (f) => String(args[0](f)).startsWith(literal);
    case 'ends_with':
      return (f) => String(args[0](f)).endsWith(literal);
  }
}
