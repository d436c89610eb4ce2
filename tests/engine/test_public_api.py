"""The public surface: ``engine.__all__`` names exactly what the package exports."""

from __future__ import annotations

import pkgutil
import types

import engine


def test_all_is_sorted_and_unique() -> None:
    assert list(engine.__all__) == sorted(set(engine.__all__))


def test_exported_members() -> None:
    # Every public name bound in the package (not a submodule) is in __all__, and each
    # name in __all__ resolves to an object that says it belongs to the engine or jobs.
    public = {
        name
        for name, value in vars(engine).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(engine.__all__)
    for name in engine.__all__:
        member = getattr(engine, name)
        owner = getattr(member, "__module__", "engine")
        if not isinstance(member, types.GenericAlias | types.UnionType):
            assert owner.split(".")[0] in {"engine", "jobs"}, name


def test_internals_are_private_modules() -> None:
    # The only public submodules are the console script and the emulator.
    public_modules = {
        info.name for info in pkgutil.iter_modules(engine.__path__) if not info.name.startswith("_")
    }
    assert public_modules == {"cli", "emulator"}
