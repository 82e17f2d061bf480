"""Methods from outside the repository: `--plugin path/to/file.py` or `--plugin some.module` (repeatable), or
`$CLREPRO_PLUGINS` (paths or modules separated by the OS path separator). A plugin is imported before the targets
are read; it registers its methods with `methods.register_method` exactly as the built-in ones do, and then a
target YAML names them like any other method. Every run records the loaded plugins (file and sha256) under
`provenance.plugins`. A plugin that cannot be found or imported is a UsageError naming it (exit 2, nothing run).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback

from benchmarks.errors import UsageError

ENV = "CLREPRO_PLUGINS"
LOADED: dict[str, dict] = {}  # absolute path or module name -> {"plugin", "file", "sha256", "methods"}


def requested(flags: list[str] | None) -> list[str]:
    """The plugins named by the flags, then by $CLREPRO_PLUGINS, each once."""
    env = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    return list(dict.fromkeys([*(flags or []), *env]))


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _where(exc: BaseException, path: str | None) -> str:
    """' (file:line)' of the innermost frame inside the plugin file, or of a SyntaxError."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f" ({exc.filename}:{exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if path and os.path.abspath(f.filename) == path]
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def load_plugin(spec: str) -> dict:
    """Import one plugin (a .py path or a module name) once; return what it registered."""
    from methods import list_methods

    looks_like_path = spec.endswith(".py") or os.sep in spec or "/" in spec
    path = os.path.abspath(spec) if looks_like_path else None
    key = path or spec
    if key in LOADED:
        return LOADED[key]
    before = set(list_methods())
    try:
        if path is not None:
            if not os.path.isfile(path):
                raise UsageError(f"plugin {spec!r}: no such file")
            name = "clrepro_plugin_" + hashlib.sha256(path.encode()).hexdigest()[:12]
            mod_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            try:
                mod_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            file = path
        else:
            module = importlib.import_module(spec)
            file = getattr(module, "__file__", None)
    except UsageError:
        raise
    except ModuleNotFoundError as e:
        if path is None and e.name and spec.startswith(e.name):
            raise UsageError(f"plugin {spec!r}: no module of that name (give a .py path or an importable "
                             f"module)") from None
        raise UsageError(f"plugin {spec!r}: {type(e).__name__}: {e}{_where(e, path)}") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any error in the researcher's file is reported, not raised
        raise UsageError(f"plugin {spec!r}: {type(e).__name__}: {e}{_where(e, path)}") from None
    added = sorted(set(list_methods()) - before)
    LOADED[key] = {"plugin": spec, "file": file, "sha256": _sha256(file) if file and os.path.isfile(file) else None,
                   "methods": added}
    return LOADED[key]


def load_plugins(flags: list[str] | None) -> list[dict]:
    return [load_plugin(s) for s in requested(flags)]


def provenance() -> list[dict]:
    """What the run's provenance records: each loaded plugin's file, sha256 and methods."""
    return [dict(v) for v in LOADED.values()]
