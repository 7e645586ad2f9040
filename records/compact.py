"""The compact form a packed record embeds: the same program without comments, docstrings or signature annotations.

`compact_source` parses a module, drops what never runs (comments, docstrings of modules / classes / functions,
annotations of function arguments and returns) and writes it back with `ast.unparse`. It checks its own work: the
result must parse to exactly the transformed tree, else the module ships verbatim. Kept on purpose: a module
docstring the module reads through `__doc__` (train_gpt.py's --help), class-level annotations (dataclass and
NamedTuple fields need them), every string and name. `embeds(original, compact)` says whether a compact source is
the compaction of an original, comparing syntax trees, so it does not depend on how this Python version prints code.
"""
from __future__ import annotations

import ast
import io
import tokenize

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _strip(tree: ast.Module, keep_module_doc: bool) -> ast.Module:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, *_FUNCTIONS)):
            keep = isinstance(node, ast.Module) and keep_module_doc
            if node.body and _is_docstring(node.body[0]) and not keep:
                node.body = node.body[1:] or [ast.Pass()]
        if isinstance(node, _FUNCTIONS):
            node.returns = None
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None:
                    arg.annotation = None
    return tree


def _reads_doc(source: str) -> bool:
    return "__doc__" in source


def _double_quoted(text: str) -> str:
    """ast.unparse writes 'x'; the project (and tools that grep sources, e.g. for `Knob("NAME"`) write "x". Plain
    one-line string tokens and f-strings without a double quote inside get double quotes: same length, same value,
    and one quote style compresses better. (Python 3.12+ tokenizes f-strings in parts; they are left as printed.)"""
    lines = text.splitlines(keepends=True)
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        s = tok.string
        prefix = "f" if s[:2] in ("f'", "F'") else ""
        body = s[len(prefix):]
        if (tok.type == tokenize.STRING and body.startswith("'") and not body.startswith("'" * 3) and '"' not in s
                and tok.start[0] == tok.end[0]):
            row, col = tok.start
            line = lines[row - 1]
            lines[row - 1] = line[:col] + s[:len(prefix)] + '"' + body[1:-1] + '"' + line[col + len(s):]
    return "".join(lines)


def compact_source(source: str) -> str:
    """The compact form of `source` (see the module docstring); `source` itself if it cannot be compacted safely."""
    try:
        tree = _strip(ast.parse(source), _reads_doc(source))
        text = _double_quoted(ast.unparse(tree) + "\n")
        if ast.dump(ast.parse(text)) != ast.dump(tree):
            return source
    except (SyntaxError, ValueError, RecursionError, tokenize.TokenError):
        return source
    return text


def embeds(original: str, compact: str) -> bool:
    """Whether `compact` is `original` compacted (or `original` itself): the same syntax tree after stripping."""
    if compact == original:
        return True
    try:
        return ast.dump(_strip(ast.parse(original), _reads_doc(original))) == ast.dump(ast.parse(compact))
    except (SyntaxError, ValueError, RecursionError):
        return False
