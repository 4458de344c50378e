"""Code canonicalisation for the contamination auditor's code tier.

A rephrased benchmark program keeps its structure but renames the function and its variables,
rewrites comments and docstrings and changes literals. The canonical form removes exactly those
degrees of freedom, so two such programs share most of their canonical token shingles:

- Python (source that `ast.parse` accepts): list comprehensions rewritten as loops and `for` loops in their
  `while` form (a rephrasing
  that turns one into the other then changes nothing), unparsed, tokens from `tokenize`; comments and
  docstrings (a string that is a statement of its own) dropped; every name that is not a keyword, a builtin or an
  attribute (`x.append` keeps `append`: it is the API, not a chosen name) renamed `v1`, `v2`, ... by
  first appearance; numbers become `N`, strings `S`; layout kept as `NL`/`IN`/`DE` tokens.
- Anything else (other languages, Python that does not parse): the same idea on a regex token
  stream (`//`, `/* */` and `#` comments dropped, keywords of the common languages kept). The
  caller counts these fallbacks.

Every canonical token is made of word characters only (operators become `o_` + their name), so the
stream joined by spaces shingles with the project's MinHash word shingler unchanged.

`extract_code` finds the code in a record: its fenced blocks, else its run of code-looking lines.
"""

from __future__ import annotations

import ast
import builtins
import copy
import io
import keyword
import re
import tokenize
import warnings
from dataclasses import dataclass

import polars as pl

_KEEP = (frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))) - {"_"}
# keywords and common type/library names of C, C++, Java, JavaScript, Go, Rust, SQL, shell
_OTHER_KEEP = frozenset("""
auto break case char const continue default do double else enum extern float for goto if int long register
return short signed sizeof static struct switch typedef union unsigned void volatile while bool true false
class public private protected new delete this throw try catch namespace using template typename virtual
include define std cout cin endl string vector map set null nullptr final extends implements interface
import package super static boolean byte abstract synchronized var let function async await yield typeof
instanceof undefined export from def lambda in is not and or none elif except raise pass with as fn mut
impl pub match loop go func defer chan select where order by group having insert update values into
create table join left right inner outer on limit echo then fi done esac print println printf length
size push pop append len range main math list dict
""".split())
_OP_NAMES = {op: "o_" + tokenize.tok_name[t].lower() for op, t in tokenize.EXACT_TOKEN_TYPES.items()}
_FALLBACK_RE = re.compile(
    r"(?P<comment>//[^\n]*|/\*.*?\*/|#[^\n]*)"
    r"|(?P<string>\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'|`[^`]*`)"
    r"|(?P<number>\b\d[\w.]*)"
    r"|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op>[^\s\w])", re.S)
_FENCE_RE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.S)
_CODE_LINE_RE = re.compile(
    r"^\s*(def |class |import |from \w+ import|return\b|for .*:|while .*:|if .*:|elif .*:|else:|try:|except\b"
    r"|with .*:|@\w|#include|public |private |static |int |void |function\b|const |let |var |print\(|\}|\{)"
    r"|[;{}]\s*$|^\s*\w+(\[.*\])?\s*[+\-*/]?=\s*\S|^\s*\w+(\.\w+)*\(.*\)\s*;?\s*$")


def _has(nodes: list[ast.stmt], kinds: tuple) -> bool:
    return any(isinstance(n, kinds) for s in nodes for n in ast.walk(s))


class LoopRewriter(ast.NodeTransformer):
    """for -> while, comprehension -> loop, append-loop -> comprehension (each where it is safe).

    The canonical form turns comprehensions into loops and every loop into its `while` form, so a
    program and its rewrite canonicalise alike; the development set uses all three rewrites to rephrase."""

    def __init__(self, for_while: bool, comp_to_loop: bool, loop_to_comp: bool = False):
        self.for_while, self.to_loop, self.to_comp, self.n = for_while, comp_to_loop, loop_to_comp, 0

    def _body(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in stmts:
            s = self.visit(s)
            out.extend(s if isinstance(s, list) else [s])
        i = 0
        while self.to_comp and i + 1 < len(out):  # r = [] ; for x in it: r.append(e)  ->  r = [e for x in it]
            a, b = out[i], out[i + 1]
            if (isinstance(a, ast.Assign) and len(a.targets) == 1 and isinstance(a.targets[0], ast.Name)
                    and isinstance(a.value, ast.List) and not a.value.elts and isinstance(b, ast.For)
                    and not b.orelse and len(b.body) == 1 and isinstance(b.body[0], ast.Expr)
                    and isinstance(call := b.body[0].value, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "append" and isinstance(call.func.value, ast.Name)
                    and call.func.value.id == a.targets[0].id and len(call.args) == 1):
                comp = ast.ListComp(call.args[0], [ast.comprehension(b.target, b.iter, [], 0)])
                out[i:i + 2] = [ast.Assign([a.targets[0]], comp, lineno=0)]
            i += 1
        return out

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(node, name, None)
            if isinstance(stmts, list) and all(isinstance(s, ast.stmt) for s in stmts):
                setattr(node, name, self._body(stmts))
        return node

    def visit_For(self, node: ast.For):
        self.generic_visit(node)
        if not self.for_while or node.orelse or _has(node.body, (ast.Continue,)) \
                or not isinstance(node.target, ast.Name):
            return node  # a `continue` would skip the index step of the while form
        it = node.iter
        if (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
                and 1 <= len(it.args) <= 2 and not it.keywords):
            start = it.args[0] if len(it.args) == 2 else ast.Constant(0)
            stop = it.args[-1]
            var = node.target.id
            init = ast.Assign([ast.Name(var, ast.Store())], start, lineno=0)
            step = ast.AugAssign(ast.Name(var, ast.Store()), ast.Add(), ast.Constant(1))
            cond = ast.Compare(ast.Name(var, ast.Load()), [ast.Lt()], [stop])
            return [init, ast.While(cond, node.body + [step], [])]
        self.n += 1
        idx = f"k{self.n}" if self.n > 1 else "k"
        init = ast.Assign([ast.Name(idx, ast.Store())], ast.Constant(0), lineno=0)
        seq = it if isinstance(it, ast.Name) else None
        if seq is None:
            return node
        get = ast.Assign([node.target], ast.Subscript(copy.deepcopy(seq), ast.Name(idx, ast.Load()), ast.Load()),
                         lineno=0)
        step = ast.AugAssign(ast.Name(idx, ast.Store()), ast.Add(), ast.Constant(1))
        cond = ast.Compare(ast.Name(idx, ast.Load()), [ast.Lt()],
                           [ast.Call(ast.Name("len", ast.Load()), [copy.deepcopy(seq)], [])])
        return [init, ast.While(cond, [get] + node.body + [step], [])]

    def _unroll(self, comp: ast.expr, name: str) -> list[ast.stmt] | None:
        """`name = []` and the loop that fills it, for a one-generator list comprehension."""
        if not self.to_loop or not isinstance(comp, ast.ListComp) or len(comp.generators) != 1 \
                or comp.generators[0].is_async:
            return None
        g = comp.generators[0]
        inner: ast.stmt = ast.Expr(ast.Call(ast.Attribute(ast.Name(name, ast.Load()), "append", ast.Load()),
                                            [comp.elt], []))
        for cond in reversed(g.ifs):
            inner = ast.If(cond, [inner], [])
        loop = self.visit_For(ast.For(g.target, g.iter, [inner], [], lineno=0))
        return [ast.Assign([ast.Name(name, ast.Store())], ast.List([], ast.Load()), lineno=0),
                *(loop if isinstance(loop, list) else [loop])]

    def visit_Return(self, node: ast.Return):
        # return [e for x in it if c]  ->  result = [] ; for x in it: if c: result.append(e) ; return result
        loop = self._unroll(node.value, "result") if node.value is not None else None
        return node if loop is None else [*loop, ast.Return(ast.Name("result", ast.Load()))]

    def visit_Assign(self, node: ast.Assign):
        # r = [e for x in it]  ->  r = [] ; for x in it: r.append(e)
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            return node
        return self._unroll(node.value, node.targets[0].id) or node


@dataclass(frozen=True)
class Canonical:
    tokens: list[str]
    fallback: bool  # True: the token-level (non-Python) form

    def text(self) -> str:
        return " ".join(self.tokens)


def canonicalise(code: str) -> Canonical:
    """The canonical token stream of `code` (see the module docstring)."""
    if not code or not code.strip():
        return Canonical([], False)
    try:
        with warnings.catch_warnings():  # invalid escape sequences in user code are not our concern
            warnings.simplefilter("ignore")
            tree = ast.parse(code)
            if "for" in code:  # every loop and comprehension the rewriter touches is spelt with `for`
                tree = LoopRewriter(for_while=True, comp_to_loop=True).visit(tree)
            # unparsed: comments and layout gone, the loops in their normal form (unparse reads no
            # locations, so the rewritten nodes need none: fixing them cost a third of the time)
            source = ast.unparse(tree)
        return Canonical(_python_tokens(source), False)
    except (SyntaxError, ValueError, tokenize.TokenError, RecursionError, MemoryError):
        return Canonical(_fallback_tokens(code), True)


def _python_tokens(code: str) -> list[str]:
    out: list[str] = []
    names: dict[str, str] = {}
    toks = [t for t in tokenize.generate_tokens(io.StringIO(code).readline)
            if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER)]
    prev_sig = tokenize.NEWLINE  # type of the last kept token: a statement starts after NEWLINE/INDENT/DEDENT
    prev_op = ""
    fstring = 0
    i = 0
    while i < len(toks):
        t = toks[i]
        kind = t.type
        if fstring:  # inside an f-string (Python 3.12+ tokenises it): one S for the whole literal
            fstring += {"FSTRING_START": 1, "FSTRING_END": -1}.get(tokenize.tok_name[kind], 0)
            i += 1
            continue
        if tokenize.tok_name[kind] == "FSTRING_START":
            fstring = 1
            out.append("S")
        elif kind == tokenize.STRING:
            nxt = toks[i + 1].type if i + 1 < len(toks) else tokenize.NEWLINE
            if prev_sig in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT) and nxt == tokenize.NEWLINE:
                i += 2  # a docstring (or a bare string statement): dropped with its NEWLINE
                continue
            if out and out[-1] == "S":  # implicit concatenation: still one literal
                i += 1
                continue
            out.append("S")
        elif kind == tokenize.NUMBER:
            out.append("N")
        elif kind == tokenize.NAME:
            word = t.string
            if word in _KEEP or prev_op == ".":
                out.append(word)
            else:
                out.append(names.setdefault(word, f"v{len(names) + 1}"))
        elif kind == tokenize.OP:
            out.append(_OP_NAMES.get(t.string, "o_op"))
        elif kind == tokenize.NEWLINE:
            out.append("NL")
        elif kind == tokenize.INDENT:
            out.append("IN")
        elif kind == tokenize.DEDENT:
            out.append("DE")
        prev_sig = kind
        prev_op = t.string if kind == tokenize.OP else ""
        i += 1
    return out


def _fallback_tokens(code: str) -> list[str]:
    out: list[str] = []
    names: dict[str, str] = {}
    prev = ""
    for m in _FALLBACK_RE.finditer(code):
        kind = m.lastgroup
        if kind == "comment":
            # `#include`, `#define`: preprocessor lines are code in C, comments in Python/shell
            if m.group().startswith(("#include", "#define")):
                out.append("include")
            continue
        if kind == "string":
            token = "S"
        elif kind == "number":
            token = "N"
        elif kind == "name":
            word = m.group()
            token = word if word in _OTHER_KEEP or prev == "." else names.setdefault(word, f"v{len(names) + 1}")
        else:
            token = _OP_NAMES.get(m.group(), "o_op")
        out.append(token)
        prev = m.group() if kind == "op" else ""
    return out


def looks_like_code(line: str) -> bool:
    return bool(_CODE_LINE_RE.search(line))


# may_hold_code's pattern: _CODE_LINE_RE for the Rust regex engine, widened so that it matches every
# line that Python's matches (Python's \w also takes numeric symbols such as "½", its \s the
# separators \x1c-\x1f, and Rust's \b would follow its own \w): a superset, never fewer lines
_LINE_SEPARATORS = "[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]"  # what str.splitlines splits on besides \n
_RUST_CODE_LINE = "(?m)" + (_CODE_LINE_RE.pattern.replace("\\b", "").replace("\\w", "[\\w\\p{No}]")
                            .replace("\\s", "[\\s\\x1c-\\x1f]"))


def may_hold_code(texts: pl.Series) -> pl.Series:
    """False where `extract_code` certainly finds nothing (no fence and no code-looking line), in one
    vectorised pass: most records of an instruction set are prose, and the per-line Python scan of
    `extract_code` was most of the code tier's cost on them."""
    lines = texts.fill_null("").str.replace_all(_LINE_SEPARATORS, "\n")
    return lines.str.contains("```", literal=True) | lines.str.contains(_RUST_CODE_LINE)


def extract_code(text: str | None) -> str:
    """The code in a record's text: its fenced blocks joined, else its longest run of lines that look
    like code (indented lines and blank lines inside a run belong to it), else ''."""
    if not text:
        return ""
    blocks = _FENCE_RE.findall(text)
    if blocks:
        return "\n".join(b.strip("\n") for b in blocks)
    lines = text.splitlines()
    best: tuple[int, int] = (0, 0)  # [start, end) of the run with the most code lines
    best_count = 0
    start, count, last_code = None, 0, -1
    for i, line in enumerate(lines + [""]):
        codey = bool(line.strip()) and (line[:1] in " \t" and start is not None or looks_like_code(line))
        if codey:
            if start is None:
                start, count = i, 0
            count += 1
            last_code = i
        elif line.strip() or i == len(lines) or (start is not None and i - last_code > 1):
            if start is not None and count > best_count:
                best, best_count = (start, last_code + 1), count
            start = None
    if best_count < 2:  # one code-looking line in prose is not a program
        return ""
    return "\n".join(lines[best[0]:best[1]])
