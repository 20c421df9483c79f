#!/usr/bin/env python3
# scripts/module-deps.py — dependencies between the top-level modules of the crate in src/,
# and the import cycles among them. Python 3 standard library only; reads the sources, never
# builds anything (no cargo).
#
#   scripts/module-deps.py                  one line per module, `module -> dep1, dep2`, bottom
#                                           layer first; then every cycle, with file:line
#   scripts/module-deps.py --why            also the file:line of the first reference per edge
#   scripts/module-deps.py --tests          also the test-only dependencies, in their own section
#   scripts/module-deps.py --dot            a Graphviz digraph instead (cycle edges in red)
#   scripts/module-deps.py --layers format,meta,pool,volume,...
#                                           check an intended layering, bottom to top: every
#                                           edge must point down the list; modules missing from
#                                           the list are errors too
#   scripts/module-deps.py --impls          also fail on an `impl` block for a type defined in another
#                                          top-level module (each type's methods live beside it)
#   scripts/module-deps.py --self-test      check the parser on a small fake crate
#   scripts/module-deps.py --src DIR        another crate's src/ (default: the one beside scripts/)
#
# Exit status: 0 no cycle (and no --layers violation), 1 cycles or violations (also with
# --dot), 2 bad usage.
#
# A module is src/<m>.rs or src/<m>/ (src/<m>/... submodules belong to <m>); src/lib.rs,
# src/main.rs and src/bin/ are not modules. A dependency of A on B is a path `crate::B...` in a
# file of A (in `use crate::B::x`, `use crate::{B, C::{x, y}}` groups over any number of lines,
# or inline `crate::B::f()`), and also `super::...::B` chains that climb out of A to the crate
# root. Comments (`//`, `///`, `//!`, nested `/* */`), string, raw-string and char literals are
# skipped. References inside items under `#[cfg(test)]` (the `mod tests { .. }` blocks, or
# `mod tests;` files), or in files with `#![cfg(test)]`, are test-only: they never count for
# cycles or --layers, and are listed only with --tests.

import argparse
import os
import re
import signal
import sys
import tempfile
from collections import defaultdict, deque

# ----------------------------------------------------------------------------------------------
# Lexer: tokens (kind, text, line) with comments and literals dropped.

_IDENT = re.compile(r"[^\W\d]\w*")
_NUMBER = re.compile(r"\d\w*")
_RAW_PREFIXES = ("r", "br", "cr")


class LexError(Exception):
    pass


def lex(text):
    toks = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while depth and i < n:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += text[i] == "\n"
                    i += 1
        elif c == '"':
            i, line = _skip_string(text, i + 1, line)
        elif c == "'":
            # char literal ('a', '\n', '\u{1F600}', '"') or a lifetime / loop label ('a)
            if text.startswith("\\", i + 1):
                j = i + 2
                while j < n and text[j] != "'":
                    j += 1 + (text[j] == "\\")
                i = j + 1
            elif i + 2 < n and text[i + 2] == "'":
                i += 3
            else:
                m = _IDENT.match(text, i + 1)
                i = m.end() if m else i + 1
        elif _IDENT.match(text, i):
            m = _IDENT.match(text, i)
            word = m.group()
            j = m.end()
            if word in _RAW_PREFIXES and j < n and text[j] in '#"':
                k = j
                while k < n and text[k] == "#":
                    k += 1
                if k < n and text[k] == '"':  # raw string r"..", r#".."#
                    end = text.find('"' + "#" * (k - j), k + 1)
                    if end < 0:
                        raise LexError("line %d: unterminated raw string" % line)
                    line += text.count("\n", k, end)
                    i = end + 1 + (k - j)
                    continue
                if word == "r" and k == j + 1 and _IDENT.match(text, k):  # raw identifier r#foo
                    m = _IDENT.match(text, k)
                    toks.append(("id", m.group(), line))
                    i = m.end()
                    continue
            if word in ("b", "c") and j < n and text[j] == '"':  # b"..", c".."
                i, line = _skip_string(text, j + 1, line)
                continue
            toks.append(("id", word, line))
            i = j
        elif c.isdigit():
            i = _NUMBER.match(text, i).end()
        elif text.startswith("::", i):
            toks.append(("p", "::", line))
            i += 2
        else:
            toks.append(("p", c, line))
            i += 1
    return toks


def _skip_string(text, i, line):
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            line += text[i + 1 : i + 2] == "\n"
            i += 2
        elif c == '"':
            return i + 1, line
        else:
            line += c == "\n"
            i += 1
    raise LexError("line %d: unterminated string" % line)


# ----------------------------------------------------------------------------------------------
# cfg(test) regions

_BODY_ITEMS = {"fn", "mod", "impl", "trait", "struct", "enum", "union", "macro_rules"}
_SEMI_ITEMS = {"use", "type", "let", "static", "const"}
_QUALIFIERS = {"const", "async", "unsafe", "extern", "default"}


def _match(toks, i, open_, close):
    """Index of the token closing the bracket opened at toks[i]."""
    depth = 0
    for j in range(i, len(toks)):
        t = toks[j][1]
        if toks[j][0] == "p":
            if t == open_:
                depth += 1
            elif t == close:
                depth -= 1
                if depth == 0:
                    return j
    return len(toks) - 1


def _test_only(pred):
    """pred: tokens inside cfg( .. ). True when the code exists only when compiling tests."""
    def parse(k):
        kind, text, _ = pred[k]
        if kind == "id" and k + 1 < len(pred) and pred[k + 1][1] == "(":
            end = _match(pred, k + 1, "(", ")")
            args, j = [], k + 2
            while j < end:
                val, j = parse(j)
                args.append(val)
                while j < end and pred[j][1] != ",":
                    j += 1
                j += 1
            if text == "all":
                val = any(args)
            elif text == "any":
                val = bool(args) and all(args)
            else:  # not(..) or unknown
                val = False
            return val, end + 1
        return (kind == "id" and text == "test"), k + 1

    return bool(pred) and parse(0)[0]


def _item_end(toks, j):
    """Last token index of the item, field, arm or statement starting at toks[j]."""
    n = len(toks)
    k = j
    if k < n and toks[k][1] == "pub":
        k += 1
        if k < n and toks[k][1] == "(":
            k = _match(toks, k, "(", ")") + 1
    quals = 0
    while k < n and toks[k][1] in _QUALIFIERS and toks[k][0] == "id":
        k += 1
        quals += 1
    head = toks[k][1] if k < n else ""
    if head == "crate" and k > 0 and toks[k - 1][1] == "extern":
        mode = "semi"
    elif head in _BODY_ITEMS or (quals and head == "{"):
        mode = "body"
    elif head in _SEMI_ITEMS or quals:
        mode = "semi"
    else:
        mode = "expr"
    depth = 0
    for m in range(j, n):
        kind, t, _ = toks[m]
        if kind != "p":
            continue
        if t in "([{":
            if t == "{" and depth == 0 and mode == "body":
                return _match(toks, m, "{", "}")
            depth += 1
        elif t in ")]}":
            depth -= 1
            if depth < 0:
                return m - 1
        elif depth == 0 and (t == ";" or (t == "," and mode == "expr")):
            return m
    return n - 1


def test_regions(toks):
    """(whole_file_is_test, [(first, last) token index ranges], [out-of-line test mod names])"""
    regions, test_mods, whole = [], [], False
    brace = 0
    i, n = 0, len(toks)
    while i < n:
        t = toks[i][1]
        if t == "{":
            brace += 1
        elif t == "}":
            brace -= 1
        if t != "#" or toks[i][0] != "p":
            i += 1
            continue
        inner = i + 1 < n and toks[i + 1][1] == "!"
        b = i + 1 + inner
        if b >= n or toks[b][1] != "[":
            i += 1
            continue
        close = _match(toks, b, "[", "]")
        body = toks[b + 1 : close]
        is_test = (
            len(body) >= 3
            and body[0][1] == "cfg"
            and body[1][1] == "("
            and _test_only(body[2:-1])
        )
        if not is_test:
            i = close + 1
            continue
        if inner:
            if brace == 0:
                whole = True
            i = close + 1
            continue
        j = close + 1
        while j < n and toks[j][1] == "#" and j + 1 < n and toks[j + 1][1] == "[":
            j = _match(toks, j + 1, "[", "]") + 1
        end = _item_end(toks, j)
        item = [tk[1] for tk in toks[j : end + 1]]
        if "mod" in item:
            k = item.index("mod")
            if k + 2 < len(item) and item[k + 2] == ";":
                test_mods.append(item[k + 1])
        regions.append((i, end))
        i = end + 1
    return whole, regions, test_mods


# ----------------------------------------------------------------------------------------------
# References


def file_mod_path(rel):
    """Module path of a file given relative to src/: pool/mod.rs -> [pool], pool/io.rs ->
    [pool, io]."""
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts.pop()
    return parts


def references(toks, mod_path):
    """Yield (name, line, token_index, via) for every path that names a top-level item:
    `crate::name`, `crate::{name, ..}`, and `super::` chains that reach the crate root."""
    n = len(toks)
    stack = []  # per open brace: True when it opens an inline `mod x {`
    pending_mod = False
    for i, (kind, t, line) in enumerate(toks):
        if kind == "p":
            if t == "{":
                stack.append(pending_mod)
                pending_mod = False
            elif t == "}":
                if stack:
                    stack.pop()
            elif t == ";":
                pending_mod = False
            continue
        if t == "mod" and i + 2 < n and toks[i + 1][0] == "id" and toks[i + 2][1] == "{":
            pending_mod = True
            continue
        prev = toks[i - 1][1] if i else ""
        if prev == "::":
            continue
        if t == "crate":
            k, via = i + 1, "crate"
            if k >= n or toks[k][1] != "::":
                continue
        elif t == "super":
            k, ups = i, 0
            while k + 1 < n and toks[k][1] == "super" and toks[k + 1][1] == "::":
                k, ups = k + 2, ups + 1
            depth = len(mod_path) + sum(stack)
            if ups != depth:
                continue  # stays inside the module (or is invalid)
            k, via = k - 1, "super"
        else:
            continue
        k += 1  # token after `::`
        if k >= n:
            continue
        if toks[k][0] == "id":
            yield toks[k][1], toks[k][2], i, via
        elif toks[k][1] == "{":
            end = _match(toks, k, "{", "}")
            depth, expect = 0, True
            for m in range(k, end):
                kk, tt, ll = toks[m]
                if tt == "{":
                    depth += 1
                    expect = depth == 1
                elif tt == "}":
                    depth -= 1
                elif tt == "," and depth == 1:
                    expect = True
                elif expect and depth == 1:
                    expect = False
                    if kk == "id" and tt != "self":
                        yield tt, ll, i, via
                    elif tt == "*":
                        yield "*", ll, i, via
        elif toks[k][1] == "*":
            yield "*", toks[k][2], i, via


# ----------------------------------------------------------------------------------------------
# The crate


class Graph:
    def __init__(self):
        self.modules = []
        self.edges = defaultdict(dict)  # a -> {b: "file:line" of the first reference}
        self.test_edges = defaultdict(dict)  # the same, test-only references
        self.warnings = []

    def deps(self, a):
        return sorted(self.edges[a])


def discover(src):
    mods = {}
    for name in sorted(os.listdir(src)):
        p = os.path.join(src, name)
        if os.path.isdir(p):
            if name == "bin":
                continue
            files = []
            for dp, dns, fns in os.walk(p):
                dns.sort()
                files += [os.path.join(dp, f) for f in sorted(fns) if f.endswith(".rs")]
            if files:
                mods.setdefault(name, []).extend(files)
        elif name.endswith(".rs") and name not in ("lib.rs", "main.rs"):
            mods.setdefault(name[:-3], []).insert(0, p)
    return mods


def analyse(src, label_root=None):
    label_root = label_root or os.path.dirname(os.path.abspath(src))
    g = Graph()
    mods = discover(src)
    g.modules = sorted(mods)
    known = set(mods)

    declared = None
    lib = os.path.join(src, "lib.rs")
    if os.path.exists(lib):
        with open(lib, encoding="utf-8") as f:
            ltoks = lex(f.read())
        declared = {
            ltoks[i + 1][1]
            for i in range(len(ltoks) - 2)
            if ltoks[i][1] == "mod" and ltoks[i + 1][0] == "id" and ltoks[i + 2][1] in ";{"
        }
        for m in g.modules:
            if m not in declared:
                g.warnings.append("module %s has files in src/ but no `mod %s` in src/lib.rs" % (m, m))

    parsed = {}
    test_files = set()
    for m, files in mods.items():
        for path in files:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            try:
                toks = lex(text)
            except LexError as e:
                raise SystemExit("module-deps: %s: %s" % (path, e))
            whole, regions, test_mods = test_regions(toks)
            parsed[path] = (m, toks, whole, regions)
            if whole:
                test_files.add(path)
            base = os.path.basename(path)
            d = os.path.dirname(path)
            sub = d if base in ("mod.rs", "lib.rs") else os.path.join(d, base[:-3])
            for tm in test_mods:
                test_files.add(os.path.join(sub, tm + ".rs"))
                test_dir = os.path.join(sub, tm)
                for dp, _, fns in os.walk(test_dir):
                    test_files.update(os.path.join(dp, f) for f in fns if f.endswith(".rs"))

    # the module's own file (m.rs, m/mod.rs) first, so "first reference" reads naturally
    top = lambda p: os.path.basename(p) != "mod.rs" and os.path.dirname(p) != src
    for path in sorted(parsed, key=lambda p: (parsed[p][0], top(p), p)):
        m, toks, _, regions = parsed[path]
        rel = os.path.relpath(path, src).replace(os.sep, "/")
        label = os.path.relpath(path, label_root).replace(os.sep, "/")
        in_test_file = path in test_files
        for name, line, idx, via in references(toks, file_mod_path(rel)):
            where = "%s:%d" % (label, line)
            if name == m:
                continue
            if name not in known:
                if name == "*":
                    g.warnings.append("%s: glob import of the crate root (ignored)" % where)
                elif declared is not None and name in declared:
                    g.warnings.append("%s: crate::%s has no file in src/ (ignored)" % (where, name))
                continue
            test = in_test_file or any(a <= idx <= b for a, b in regions)
            target = g.test_edges if test else g.edges
            target[m].setdefault(name, where)
    # an edge is test-only when no non-test code has it
    for a in list(g.test_edges):
        for b in list(g.test_edges[a]):
            if b in g.edges[a]:
                del g.test_edges[a][b]
    return g


# ----------------------------------------------------------------------------------------------
# Graph algorithms


def tarjan(nodes, succ):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 10 * len(nodes) + 100))
    for v in nodes:
        if v not in index:
            visit(v)
    return out  # components in reverse topological order: dependencies before dependents


def layer_order(g):
    """[(layer, [modules])] bottom first; modules of one cycle share a layer and a group."""
    comps = tarjan(g.modules, g.deps)
    comp_of = {v: ci for ci, c in enumerate(comps) for v in c}
    layer = {}
    for ci, c in enumerate(comps):  # Tarjan emits dependencies before dependents
        deps = {comp_of[w] for v in c for w in g.edges[v]} - {ci}
        layer[ci] = 1 + max((layer[d] for d in deps), default=-1)
    order = sorted(range(len(comps)), key=lambda ci: (layer[ci], comps[ci]))
    return comps, [(layer[ci], comps[ci]) for ci in order]


def shortest_path(g, src, dst, allowed):
    prev = {src: None}
    q = deque([src])
    while q:
        v = q.popleft()
        if v == dst:
            path = []
            while v is not None:
                path.append(v)
                v = prev[v]
            return path[::-1]
        for w in g.deps(v):
            if w in allowed and w not in prev:
                prev[w] = v
                q.append(w)
    return None


def cycles_of(g, comp):
    """Simple cycles that together use every edge inside the component: for each edge u -> v,
    u -> v plus a shortest path back v ~> u. Rotated to start at the smallest name."""
    allowed = set(comp)
    seen, out = set(), []
    for u in comp:
        for v in g.deps(u):
            if v not in allowed:
                continue
            back = shortest_path(g, v, u, allowed)
            cyc = [u] + back[:-1]
            r = cyc.index(min(cyc))
            cyc = cyc[r:] + cyc[:r]
            if tuple(cyc) not in seen:
                seen.add(tuple(cyc))
                out.append(cyc)
    out.sort(key=lambda c: (len(c), c))
    return out


# ----------------------------------------------------------------------------------------------
# Output


def report(g, args, out=sys.stdout):
    bad = False
    comps, order = layer_order(g)
    cyclic = [c for c in comps if len(c) > 1]
    cycle_edges = {(u, v) for c in cyclic for u in c for v in g.edges[u] if v in c}

    if args.dot:
        out.write("digraph modules {\n  rankdir=BT;\n  node [shape=box];\n")
        for lay, comp in order:
            for m in comp:
                out.write('  "%s";\n' % m)
        for a in g.modules:
            for b in g.deps(a):
                attr = ' [color=red, tooltip="%s"]' if (a, b) in cycle_edges else ' [tooltip="%s"]'
                out.write('  "%s" -> "%s"%s;\n' % (a, b, attr % g.edges[a][b]))
            if args.tests:
                for b in sorted(g.test_edges[a]):
                    out.write('  "%s" -> "%s" [style=dashed, color=gray, tooltip="test: %s"];\n'
                              % (a, b, g.test_edges[a][b]))
        out.write("}\n")
    else:
        if cyclic:
            out.write("# modules by layer, bottom first (no strict order: the graph has cycles;"
                      " modules of one cycle are listed together)\n")
        else:
            out.write("# modules in layer order, bottom first\n")
        width = max((len(m) for m in g.modules), default=0)
        for lay, comp in order:
            for m in comp:
                deps = g.deps(m)
                out.write(("%s -> %s" % (m, ", ".join(deps))).rstrip() + "\n")
                if args.why:
                    for d in deps:
                        out.write("    %-*s  %s\n" % (width, d, g.edges[m][d]))
        if args.tests:
            out.write("\n# test-only dependencies (#[cfg(test)] code; not counted for cycles)\n")
            any_test = False
            for m in g.modules:
                deps = sorted(g.test_edges[m])
                if deps:
                    any_test = True
                    out.write("%s -> %s\n" % (m, ", ".join(deps)))
                    if args.why:
                        for d in deps:
                            out.write("    %-*s  %s\n" % (width, d, g.test_edges[m][d]))
            if not any_test:
                out.write("(none)\n")

    if cyclic:
        bad = True
        if not args.dot:
            out.write("\n")
        for comp in cyclic:
            if not args.dot:
                out.write("# strongly connected: %s\n" % ", ".join(comp))
            for cyc in cycles_of(g, comp):
                line = "cycle: %s -> %s" % (" -> ".join(cyc), cyc[0])
                ev = ["    %s -> %s  %s" % (a, b, g.edges[a][b])
                      for a, b in zip(cyc, cyc[1:] + cyc[:1])]
                if args.dot:
                    sys.stderr.write(line + "\n")
                else:
                    out.write(line + "\n" + "\n".join(ev) + "\n")
    elif not args.dot:
        out.write("\nno cycles\n")

    if args.layers is not None:
        lst = [x.strip() for x in args.layers.split(",") if x.strip()]
        dst = sys.stderr if args.dot else out
        if not args.dot:
            dst.write("\n# layering check, bottom to top: %s\n" % " < ".join(lst))
        pos = {}
        problems = 0
        for i, m in enumerate(lst):
            if m in pos:
                dst.write("error: %s is listed twice in --layers\n" % m)
                problems += 1
            elif m not in g.modules:
                dst.write("error: %s in --layers is not a module of src/\n" % m)
                problems += 1
            pos.setdefault(m, i)
        for m in g.modules:
            if m not in pos:
                dst.write("unlisted: %s is not in --layers\n" % m)
                problems += 1
        for a in g.modules:
            for b in g.deps(a):
                if a in pos and b in pos and pos[b] >= pos[a]:
                    dst.write("upward: %s -> %s (%s)\n" % (a, b, g.edges[a][b]))
                    problems += 1
        if problems:
            bad = True
        elif not args.dot:
            dst.write("layering ok\n")

    for w in g.warnings:
        sys.stderr.write("module-deps: warning: %s\n" % w)
    return 1 if bad else 0


# ----------------------------------------------------------------------------------------------
# Self-test

_FAKE = {
    "lib.rs": "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub mod e;\npub mod f;\n",
    # a: nested group over several lines -> b, d; comment/string/raw-string/char mentions of e
    "a/mod.rs": """//! crate::e is mentioned in a doc comment
/// and crate::e here
use crate::{
    b::{x, y},
    d,
    self,
};
/* block /* nested crate::e */ still comment crate::e */
mod inner;
pub fn f() -> &'static str {
    let _c = '"';
    let _q = '\\'';
    let _s = "crate::e::in_a_string \\" crate::e";
    let _r = r#"crate::e "quoted" crate::e"#;
    let _b = b"crate::e";
    "x"
}
""",
    # a's submodule: inline path to c; super::super escape from a/inner.rs -> f
    "a/inner.rs": """pub fn g() -> u32 {
    crate::c::value() + super::super::f::h()
}
""",
    # b -> c (use), c -> a (inline path): cycle a -> b -> c -> a
    "b.rs": "use crate::c::Thing;\npub fn x() {}\npub fn y() {}\n",
    "c/mod.rs": """pub struct Thing;
pub(crate) fn value() -> u32 {
    crate::a::f().len() as u32
}
#[cfg(test)]
mod tests {
    use crate::e::helper;
    #[test]
    fn t() { let _ = crate::f::h(); }
}
#[cfg(test)]
mod more_tests;
""",
    # out-of-line test module file: test-only reference to e
    "c/more_tests.rs": "use crate::e;\n",
    "d.rs": "pub fn d() {}\n#[cfg(all(test, unix))]\nfn only_test() { crate::e::helper(); }\n",
    "e.rs": "pub fn helper() {}\n#[cfg(not(test))]\npub fn real() { crate::d::d(); }\n",
    "f/mod.rs": "pub fn h() -> u32 { 1 }\n",
    "bin/tool.rs": "use crate::a;\n",
}

_WANT_EDGES = {
    "a": {"b", "c", "d", "f"},
    "b": {"c"},
    "c": {"a"},
    "d": set(),
    "e": {"d"},
    "f": set(),
}
_WANT_TEST = {"c": {"e", "f"}, "d": {"e"}}


def self_test():
    failures = []

    def check(what, got, want):
        if got != want:
            failures.append("%s: got %r, want %r" % (what, got, want))

    with tempfile.TemporaryDirectory(prefix="module-deps-") as tmp:
        src = os.path.join(tmp, "src")
        for rel, body in _FAKE.items():
            p = os.path.join(src, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w", encoding="utf-8") as f:
                f.write(body)
        g = analyse(src)
        check("modules", g.modules, sorted(_WANT_EDGES))
        for m in g.modules:
            check("edges of %s" % m, set(g.edges[m]), _WANT_EDGES.get(m, set()))
            check("test-only edges of %s" % m, set(g.test_edges[m]), _WANT_TEST.get(m, set()))
        check("where a -> b", g.edges["a"].get("b"), "src/a/mod.rs:4")
        check("where a -> d", g.edges["a"].get("d"), "src/a/mod.rs:5")
        check("where a -> c", g.edges["a"].get("c"), "src/a/inner.rs:2")
        check("where c -> a", g.edges["c"].get("a"), "src/c/mod.rs:3")
        comps, order = layer_order(g)
        cyclic = [c for c in comps if len(c) > 1]
        check("cycles", cyclic, [["a", "b", "c"]])
        cyc = [c for comp in cyclic for c in cycles_of(g, comp)]
        check("concrete cycles", cyc, [["a", "c"], ["a", "b", "c"]])
        check("layers", [(lay, c) for lay, c in order],
              [(0, ["d"]), (0, ["f"]), (1, ["a", "b", "c"]), (1, ["e"])])
        check("warnings", g.warnings, [])

        # an acyclic variant orders by layers and exits 0; --layers flags upward edges
        with open(os.path.join(src, "c/mod.rs"), "w", encoding="utf-8") as f:
            f.write("pub struct Thing;\npub(crate) fn value() -> u32 { 0 }\n")
        os.remove(os.path.join(src, "c/more_tests.rs"))
        g = analyse(src)
        _, order = layer_order(g)
        check("acyclic layers", order,
              [(0, ["c"]), (0, ["d"]), (0, ["f"]), (1, ["b"]), (1, ["e"]), (2, ["a"])])

        class A:
            dot = why = tests = False
            layers = None

        sink = open(os.devnull, "w")
        check("exit acyclic", report(g, A, sink), 0)
        A.layers = "c,d,f,b,e,a"
        check("exit good layers", report(g, A, sink), 0)
        A.layers = "d,c,f,b,e"  # a unlisted
        check("exit unlisted", report(g, A, sink), 1)
        A.layers = "a,b,c,d,e,f"
        import io
        buf = io.StringIO()
        check("exit upward", report(g, A, buf), 1)
        check("upward lines", sorted(l for l in buf.getvalue().splitlines() if l.startswith("upward")),
              ["upward: a -> b (src/a/mod.rs:4)", "upward: a -> c (src/a/inner.rs:2)",
               "upward: a -> d (src/a/mod.rs:5)", "upward: a -> f (src/a/inner.rs:2)",
               "upward: b -> c (src/b.rs:1)"])
        sink.close()

    for f in failures:
        print("FAIL " + f)
    print("self-test: %s" % ("ok" if not failures else "%d failure(s)" % len(failures)))
    return 1 if failures else 0


# ----------------------------------------------------------------------------------------------


def foreign_impls(src):
    """`impl` blocks (inherent or of a trait) for a type defined in another top-level module:
    each type's methods must live beside it. Returns (file:line, type, its modules)."""
    defs, impls = {}, []
    item = re.compile(r"^\s*(?:pub(?:\([a-z:]+\))?\s+)?(?:struct|enum|union|trait|type)\s+(\w+)", re.M)
    imp = re.compile(r"^impl(?:<[^>{]*>)?\s+(?:[\w:<>', ]+\s+for\s+)?(?:&\s*)?([\w:]+)", re.M)
    for mod, files in discover(src).items():
        for f in files:
            text = open(f, encoding="utf-8").read()
            for m in item.finditer(text):
                defs.setdefault(m.group(1), set()).add(mod)
            for m in imp.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                impls.append((mod, "%s:%d" % (os.path.relpath(f, os.path.dirname(src)), line),
                              m.group(1).split("::")[-1]))
    return [(where, t, sorted(defs[t])) for mod, where, t in impls
            if t in defs and mod not in defs[t]]


def main():
    if hasattr(signal, "SIGPIPE"):  # `| head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ap = argparse.ArgumentParser(
        description="Dependencies and import cycles between the top-level modules in src/.")
    ap.add_argument("--src", help="the crate's src/ directory (default: ../src from this script)")
    ap.add_argument("--why", action="store_true", help="file:line of the first reference per edge")
    ap.add_argument("--tests", action="store_true", help="also list test-only dependencies")
    ap.add_argument("--dot", action="store_true", help="print a Graphviz digraph instead")
    ap.add_argument("--layers", metavar="A,B,C", help="check an ordered layering, bottom first")
    ap.add_argument("--self-test", action="store_true", help="test the parser on a fake crate")
    ap.add_argument("--impls", action="store_true",
                    help="also fail on an impl block for a type of another module")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    src = args.src or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    src = os.path.normpath(src)
    if not os.path.isdir(src):
        ap.error("no directory %s" % src)
    rc = report(analyse(src), args)
    if args.impls:
        bad = foreign_impls(src)
        print()
        for where, t, mods in bad:
            print("foreign impl: %s extends %s (defined in %s)" % (where, t, ", ".join(mods)))
        if not bad:
            print("no impl block extends a type of another module")
        rc = rc or (1 if bad else 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
