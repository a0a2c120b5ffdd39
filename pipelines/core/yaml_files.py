"""YAML files (``params.yaml``, ``best_params.yaml``) read safely: PyYAML's safe loader within
caps that keep a hostile file from costing minutes or gigabytes in any reader, every problem one
:class:`~pipelines.core.errors.ParamsError` line naming the file (and line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipelines.core.errors import ParamsError

# A params or search file is a few KB of a few hundred nodes. These caps refuse, before anything
# is built from it, files that would make a validator (or any reader) spend minutes or gigabytes:
# YAML anchors let a 1 KB file expand to 10**9 nodes ("billion laughs"), and deep nesting
# exhausts the recursion of every tree walker.
YAML_MAX_BYTES = 1 << 20
YAML_MAX_NODES = 100_000  # after expanding every alias
YAML_MAX_DEPTH = 64


class _TooBig(yaml.YAMLError):
    """Valid YAML that the caps refuse."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus three refusals made on the composed node graph, before any
    Python object is constructed: aliases that expand beyond :data:`YAML_MAX_NODES` nodes, an
    alias inside its own anchor (a cycle), nesting deeper than :data:`YAML_MAX_DEPTH`. Duplicate
    mapping keys (where PyYAML would silently keep the last) are refused too."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_graph(node)
        return node

    def construct_scalar(self, node: yaml.ScalarNode) -> Any:
        value = super().construct_scalar(node)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # "\ud83d": half of a character, which no file or name can hold
            raise yaml.constructor.ConstructorError(None, None, "a \\uD800-\\uDFFF escape is half of a "
                                                    "character (a lone surrogate)", node.start_mark) from None
        return value

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:  # the mapping's own keys; `<<: *base` merges may be overridden
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if (type(key), key) in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                            key_node.start_mark)
                seen.add((type(key), key))
        return super().construct_mapping(node, deep)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_graph(root: yaml.Node | None) -> None:
    """Size of the tree the node graph stands for (every alias expanded), computed iteratively
    in time linear in the graph, with cycle and depth checks."""
    size: dict[int, int] = {}
    path: set[int] = set()  # ids of the nodes being expanded: the current node's ancestors
    stack: list[tuple[yaml.Node, bool]] = [(root, False)] if root is not None else []
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if expanded:
            path.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in _children(node))
            if size[key] > YAML_MAX_NODES:
                raise _TooBig(f"its aliases expand to more than {YAML_MAX_NODES} values (an anchor/alias bomb?); "
                              "write the values out")
        elif key not in size:
            if key in path:
                raise _TooBig(f"line {node.start_mark.line + 1}: an alias refers to its own anchor (a cycle)")
            if len(path) >= YAML_MAX_DEPTH:
                raise _TooBig(f"line {node.start_mark.line + 1}: nested deeper than {YAML_MAX_DEPTH} levels")
            path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in size)


def _yaml_problem(exc: BaseException) -> str:
    """One line for anything PyYAML raises on a hostile text (its messages span lines)."""
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character #x{exc.character if isinstance(exc.character, int) else ord(exc.character):04x} " \
               f"at offset {exc.position} is not allowed in YAML"
    if isinstance(exc, RecursionError):
        return f"nested deeper than {YAML_MAX_DEPTH} levels"
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1} " if mark else ""
    problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
    return f"{where}is not valid YAML ({problem})".replace("\r", "\\r").replace("\n", "\\n")


def parse_yaml(text: str | bytes, name: str = "<text>") -> Any:
    """YAML text (UTF-8 bytes or str) as Python data, within the caps above, or a one-line
    :class:`ParamsError` naming ``name`` (and the line)."""
    if len(text) > YAML_MAX_BYTES:
        raise ParamsError(f"{name}: {len(text)} bytes, more than the {YAML_MAX_BYTES} a params file may have")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ParamsError(f"{name}: not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start})") from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except _TooBig as exc:
        raise ParamsError(f"{name}: refused: {exc}") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # ValueError/OverflowError: timestamps such as 2001-13-01 that no calendar has
        raise ParamsError(f"{name}: {_yaml_problem(exc)}") from None


def read_yaml(path: str | Path, missing: str = "file not found") -> Any:
    """A YAML file's content, or a one-line :class:`ParamsError` naming the file (and line)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: {missing}")
    try:
        if path.stat().st_size > YAML_MAX_BYTES:  # do not even read a huge file into memory
            raise ParamsError(f"{path}: {path.stat().st_size} bytes, more than the {YAML_MAX_BYTES} a params "
                              "file may have")
        data = path.read_bytes()
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read ({type(exc).__name__}: {exc.strerror or exc})") from None
    return parse_yaml(data, str(path))
