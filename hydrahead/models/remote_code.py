"""The modeling code a saved hybrid carries, so that it loads wherever a transformers checkpoint loads.

`write_remote_code(directory, model)` writes into a checkpoint directory

  modeling_hydrahead.py     the entry point named by config.json's `auto_map`: it imports the installed
                            hydrahead when there is one (never a stale copy), else the copy below
  hydrahead_*.py            the modules a hybrid needs at run time (layers, cache, GDN ops, the hybrid
                            classes; about 20 files), flattened into one directory with their imports
                            rewritten as relative ones, the form `trust_remote_code` can load

and returns the `auto_map` for config.json. Then, in a process that never imported hydrahead,

    AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True)

builds the same model as `hydrahead.from_pretrained(directory)`, and so does every tool that loads by
path with remote code allowed (`lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True`,
`transformers.pipeline`). The copy runs anywhere torch and transformers do (CPU reference ops; fla's
kernels on CUDA when fla is installed).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from hydrahead.models.hybrid import REMOTE_CODE_ENTRY

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ROOT_MODULE = "hydrahead.models.hybrid"  # what a hybrid model needs, with everything it imports
ENTRY = REMOTE_CODE_ENTRY
NOT_BUNDLED = {"hydrahead.models.remote_code"}  # imported in a try block: absent from a bundled copy


def _source_file(module: str) -> Path:
    path = PACKAGE_DIR.parent.joinpath(*module.split("."))
    return path / "__init__.py" if (path / "__init__.py").is_file() else path.with_suffix(".py")


def _package_of(module: str) -> str:
    return module if _source_file(module).name == "__init__.py" else module.rsplit(".", 1)[0]


def _resolve(module: str, level: int, name: str | None) -> str:
    """The absolute module of `from <level dots><name> import ...` written inside `module`."""
    if level == 0:
        return name or ""
    parts = _package_of(module).split(".")
    base = parts[: len(parts) - level + 1]
    return ".".join(base + ([name] if name else []))


def _imports(module: str) -> set[str]:
    """hydrahead modules `module` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(_source_file(module).read_text())):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node.level, node.module)
            if target.split(".")[0] != "hydrahead" or target in NOT_BUNDLED:
                continue
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if _source_file(f"{target}.{a.name}").is_file())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "hydrahead")
    return found


def bundled_modules(root: str = ROOT_MODULE) -> list[str]:
    """Every hydrahead module `root` needs, itself included."""
    seen, todo = set(), [root]
    while todo:
        module = todo.pop()
        if module not in seen:
            if not _source_file(module).is_file():
                raise ImportError(f"cannot bundle {module}: no source file")
            seen.add(module)
            todo += sorted(_imports(module))
    return sorted(seen)


def flat_name(module: str) -> str:
    return module.replace(".", "_")


_FROM = re.compile(r"^(?P<indent>\s*)from\s+(?P<dots>\.*)(?P<name>[\w.]*)\s+import\s", re.MULTILINE)
_IMPORT = re.compile(r"^\s*import\s+hydrahead\b", re.MULTILINE)


def _rewrite(module: str, source: str, bundled: set[str]) -> str:
    """`module`'s source with every import of a bundled hydrahead module made relative and flat."""
    if _IMPORT.search(source):
        raise ValueError(f"{module}: `import hydrahead...` cannot be bundled; use `from hydrahead... import`")

    def replace(match: re.Match) -> str:
        target = _resolve(module, len(match["dots"]), match["name"] or None)
        if target.split(".")[0] != "hydrahead" or target in NOT_BUNDLED:
            return match[0]
        if target not in bundled:
            raise ValueError(f"{module} imports {target}, which is not bundled")
        return f"{match['indent']}from .{flat_name(target)} import "

    return _FROM.sub(replace, source)


_ENTRY_TEMPLATE = '''"""Modeling code of a hydrahead hybrid checkpoint (written by hydrahead {version}).

`AutoModelForCausalLM.from_pretrained(this_directory, trust_remote_code=True)` loads it. With hydrahead
installed its own classes are used; without, the copy bundled next to this file (hydrahead_*.py).
"""

try:  # the installed package, when there is one: never a stale copy
    from hydrahead.models.hybrid import {names}, expose_in_transformers
except ImportError:
    from .{flat} import {names}, expose_in_transformers

# `transformers serve --trust-remote-code` looks the class up by name on the transformers module
expose_in_transformers({model_name})

__all__ = [{quoted}]
'''


def add_remote_code(directory: str | Path, model: Any) -> None:
    """Write the modeling code into a saved checkpoint directory and name it in its config.json."""
    import json

    config_file = Path(directory) / "config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = write_remote_code(directory, model)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_remote_code(directory: str | Path, model: Any) -> dict[str, str]:
    """Write the entry module and the bundled copy into `directory`; the `auto_map` for its config.json."""
    from hydrahead import __version__

    directory = Path(directory)
    modules = bundled_modules()
    names = set(modules)
    for module in modules:
        source = _rewrite(module, _source_file(module).read_text(), names)
        (directory / f"{flat_name(module)}.py").write_text(
            f"# bundled from {module} (hydrahead {__version__}) by hydrahead.models.remote_code\n" + source)
    config_name, model_name = type(model.config).__name__, type(model).__name__
    (directory / f"{ENTRY}.py").write_text(_ENTRY_TEMPLATE.format(
        version=__version__, names=f"{config_name}, {model_name}", model_name=model_name, flat=flat_name(ROOT_MODULE),
        quoted=f'"{config_name}", "{model_name}"'))
    return {"AutoConfig": f"{ENTRY}.{config_name}", "AutoModelForCausalLM": f"{ENTRY}.{model_name}"}
