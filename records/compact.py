"""The compact form a packed record embeds: the same program without comments, docstrings or signature annotations.

`compact_source` parses a module, drops what never runs (comments, docstrings of modules / classes / functions,
annotations of function arguments and returns; the text of `help=` arguments, i.e. the knob table's descriptions:
documentation that `--help` and error hints print, which a record's own run never needs; its --help still lists
every knob, type and default) and writes it back with `ast.unparse`. It checks its own work: the
result must parse to exactly the transformed tree, else the module ships verbatim. Kept on purpose: a module
docstring the module reads through `__doc__` (train_gpt.py's --help), class-level annotations (dataclass and
NamedTuple fields need them), every string and name. Indentation is one space a level (a quarter of the bytes
lzma has to code; the program is the same); `readable(embedded)` gives the usual four back, which is what
`records unpack` writes. `embeds(original, compact)` says whether a compact source is the compaction of an original,
comparing syntax trees, so it does not depend on how this Python version prints code or how deep it indents.
"""
from __future__ import annotations

import ast
import io
import tokenize

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or isinstance(node.value, str)


def _plain_local_assignments(function: ast.AST) -> None:
    """`x: T = v` in a function body becomes `x = v`: a local variable's annotation is never evaluated. A bare `x: T`
    stays (it makes x local); class bodies keep theirs (dataclass fields)."""
    todo = [function]
    while todo:
        node = todo.pop()
        if node is not function and isinstance(node, (ast.ClassDef, *_FUNCTIONS, ast.Lambda)):
            continue  # their own scopes: a nested function is visited by strip_tree's walk
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.AnnAssign) and item.value is not None and item.simple:
                        value[i] = ast.copy_location(ast.Assign(targets=[item.target], value=item.value), item)
        todo.extend(ast.iter_child_nodes(node))


def strip_tree(tree: ast.Module, keep_module_doc: bool) -> ast.Module:
    """`tree` without what the compact form drops (in place; returned)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, *_FUNCTIONS)):
            keep = isinstance(node, ast.Module) and keep_module_doc
            if node.body and _is_docstring(node.body[0]) and not keep:
                node.body = node.body[1:] or [ast.Pass()]
        if isinstance(node, ast.Call):  # help= texts (the knob table's, argparse's) are documentation, like docstrings
            for kw in node.keywords:
                if kw.arg == "help" and isinstance(kw.value, (ast.Constant, ast.JoinedStr)) and _is_text(kw.value):
                    kw.value = ast.Constant("")
        if isinstance(node, _FUNCTIONS):
            _plain_local_assignments(node)
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


def _reindent(text: str, old: int, new: int) -> str:
    """Each line's leading indentation from `old` spaces a level to `new`; lines that continue a token spanning
    several lines (a triple-quoted string) are left alone: their spaces are the string's."""
    inside: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.start[0] != tok.end[0]:
            inside.update(range(tok.start[0] + 1, tok.end[0] + 1))
    lines = text.splitlines(keepends=True)
    for row, line in enumerate(lines, 1):
        spaces = len(line) - len(line.lstrip(" "))
        if spaces and row not in inside:
            lines[row - 1] = " " * (spaces // old * new) + line[spaces:]
    return "".join(lines)


def _indent_unit(text: str) -> int:
    """Spaces a level in `text`: its first indented block's (1 in the compact form, 4 in the project's); 0 if none.
    (The tokenizer never yields INDENT inside a string, so a docstring's spaces do not count.)"""
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return next((len(tok.string) for tok in tokens if tok.type == tokenize.INDENT), 0)


def readable(embedded: str) -> str:
    """An embedded source as people read it: four spaces an indentation level. A source packed with another
    indentation (records before one-space compaction, v1's verbatim sources) comes back unchanged."""
    try:
        return _reindent(embedded, 1, 4) if _indent_unit(embedded) == 1 else embedded
    except (SyntaxError, tokenize.TokenError):
        return embedded


def compact_source(source: str) -> str:
    """The compact form of `source` (see the module docstring); `source` itself if it cannot be compacted safely."""
    try:
        tree = strip_tree(ast.parse(source), _reads_doc(source))
        text = _reindent(_double_quoted(ast.unparse(tree) + "\n"), 4, 1)
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
        return ast.dump(strip_tree(ast.parse(original), _reads_doc(original))) == ast.dump(ast.parse(compact))
    except (SyntaxError, ValueError, RecursionError):
        return False
