"""Dependencies every controller may ask for, by name: ``db``, ``clock``, ``settings``, ``principal``,
``admin``, and for a handler that only reads, ``reader`` (authentication and the read in one
statement, on a connection held only while it runs) instead of ``db`` and ``principal``; ``conn``,
a connection outside any transaction, for a handler that runs transactions of its own (the
calendar feed)."""

from __future__ import annotations

from typing import TypeAlias

from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from service.auth import AuthenticatedReader, Principal, provide_admin, provide_principal, provide_reader
from service.clock import Clock
from service.db import Connection, provide_connection, provide_db
from service.settings import Settings

__all__ = (
    "AdminDep",
    "ClockDep",
    "Conn",
    "Db",
    "PrincipalDep",
    "ReaderDep",
    "SettingsDep",
    "dependencies",
    "provide_clock",
)


async def provide_settings(state: State) -> Settings:
    """The app's settings."""
    settings: Settings = state.settings
    return settings


async def provide_clock(state: State) -> Clock:
    """The app's clock (the system clock, or a fixed one in tests)."""
    clock: Clock = state.clock
    return clock


def dependencies() -> dict[str, Provide]:
    return {
        "db": Provide(provide_db),
        "conn": Provide(provide_connection),
        "reader": Provide(provide_reader),
        "clock": Provide(provide_clock),
        "settings": Provide(provide_settings),
        "principal": Provide(provide_principal),
        "admin": Provide(provide_admin),
    }


# Injected resources are ours, not client input: skip Litestar's per-request validation of them.
Db: TypeAlias = NamedDependency[SkipValidation[Connection]]
Conn: TypeAlias = NamedDependency[SkipValidation[Connection]]
"""A connection outside any transaction (name it ``conn``): for a handler that runs transactions of its own."""
ClockDep: TypeAlias = NamedDependency[SkipValidation[Clock]]
SettingsDep: TypeAlias = NamedDependency[SkipValidation[Settings]]
PrincipalDep: TypeAlias = NamedDependency[SkipValidation[Principal]]
"""The authenticated caller (any role)."""
AdminDep: TypeAlias = NamedDependency[SkipValidation[Principal]]
"""The authenticated caller, who must be an admin (403 otherwise)."""
ReaderDep: TypeAlias = NamedDependency[SkipValidation[AuthenticatedReader]]
"""Authentication and one read as the caller, in one statement (``service.auth.AuthenticatedReader``)."""
