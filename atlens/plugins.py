"""Code of your own, named by a run's config (``imports: [mylab.methods]``) and imported before the config is
checked, so what it registers — objectives, criteria, models, samplers, optimisers, schedules, early-stop rules,
attacks, analyses, callbacks, loggers — is there for ``atlens train``, ``--dry-run``, ``--resume``, every
``torchrun`` process and every sweep point, which all read the config the same way. The resolved config records
the list, so a resumed run imports what the original did.

Modules are found on Python's path with the working folder in front of it (as ``python -m`` does).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable

from atlens.errors import ConfigError


def import_modules(names: Iterable[str], key: str = "imports") -> None:
    """Import every module in ``names``; a module that cannot be imported is a ConfigError naming it and ``key``."""
    for name in names:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"{key}: {name!r} is not a module name (write it as for import, e.g. mylab.methods)")
        if name in sys.modules:
            continue
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                raise ConfigError(f"{key}: no module {name!r} on Python's path (working folder {cwd}); run from the "
                                  f"folder that holds it, add its folder to PYTHONPATH or pip install it") from None
            raise ConfigError(f"{key}: importing {name!r} failed: {err}") from None
        except Exception as err:  # the user's own code failed: say where, keep the cause for --debug
            raise ConfigError(f"{key}: importing {name!r} failed: {type(err).__name__}: {err} (atlens --debug shows "
                              f"the traceback)") from err
