"""Reading a manifest's YAML safely, and line numbers for key paths so manifest errors can say where a problem is.

`load_yaml` is `yaml.safe_load` with two guards: a duplicate key in a mapping is an error naming both lines (PyYAML
silently keeps the last one), and the document may expand through aliases (`&a` / `*a`) to at most `MAX_NODES`
nodes, so a "billion laughs" manifest fails at once with little memory instead of expanding exponentially in every
later walk of the data (validation, hashing, printing).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 100_000  # a large manifest has a few thousand


class YamlError(ValueError):
    """A document `load_yaml` refuses: `line` (1-based) and what is wrong."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line, self.message = line, message


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes of the document once every alias is expanded (memoised per node: linear in the document's size)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > 500:
            raise YamlError(node.start_mark.line + 1, "nested more than 500 levels deep")
        sizes[id(node)] = 0  # a cycle (a recursive alias) counts once
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        sizes[id(node)] = min(total, limit + 1)
        return sizes[id(node)]

    return size(root, 0)


def _check_duplicates(root: yaml.Node) -> None:
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in first:
                        raise YamlError(
                            line, f"duplicate key {key.value!r} (first set on line {first[key.value]}); keep one"
                        )
                    first[key.value] = line
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def load_yaml(text: str, max_nodes: int = MAX_NODES) -> Any:
    """Parse `text` like `yaml.safe_load`, refusing duplicate keys and alias expansion beyond `max_nodes` nodes."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        if _expanded_size(root, max_nodes) > max_nodes:
            raise YamlError(
                root.start_mark.line + 1,
                f"the document expands to more than {max_nodes:,} values through aliases (&name / *name), like a "
                "'billion laughs' bomb; write the values out or nest fewer aliases",
            )
        _check_duplicates(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def key_lines(text: str) -> dict[tuple, int]:
    """Map every key path in the YAML text (e.g. `("inputs", 1, "format")`) to its 1-based line number.

    Call it on text `load_yaml` accepted: aliases are walked once per path, so an alias bomb would be exponential.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = path + (key.value,)
                walk(value, sub)
                lines[sub] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def line_of(lines: dict[tuple, int], path: tuple) -> int | None:
    """The line of `path`, or of its closest ancestor present in the document (for missing keys)."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def format_path(path: tuple) -> str:
    """`("inputs", 1, "format")` -> `inputs[1].format`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"
