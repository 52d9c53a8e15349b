"""Errors the user can fix. The CLI prints them as one line and exits with code 2.

Every such error derives from :class:`CrlabError`, wherever it is raised: config and sweep files
(:class:`ConfigError`), the registry (:class:`RegistryError`), the sandbox (``rewards.SandboxError``), data
files (``data.problems.DataFormatError``) and test specs (``rewards.spec.TestSpecError``). Anything else is a
bug, and the CLI lets its traceback through.
"""

from __future__ import annotations


class CrlabError(Exception):
    """A problem with the user's input or environment (not a bug): printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ConfigError(CrlabError):
    """A config or sweep file (or a key=value override) is invalid."""


class RegistryError(CrlabError):
    """The registry database cannot be used as asked (unreachable, wrong schema, unknown run)."""


class RegistryUnreachable(RegistryError):
    """A sweep gave up on a registry that stayed unreachable for ``executor.registry_retry_s``: it returned
    before its cells ended (they carry on), exit code 3 as any sweep that returns before the end."""

    exit_code = 3


class SchemaOutOfDate(RegistryError):
    """The database's schema is older (or newer) than this code's migrations."""


class NotAvailable(CrlabError):
    """A feature that is not available in this build or on this machine."""


class DiskFull(CrlabError):
    """A checkpoint did not fit on its disk. Nothing was half-written: the temporary folder is gone and the
    previous complete checkpoint is as it was. The message names the folder, the space needed and the space
    free; the run resumes (``platform resume RUN``) once there is room."""
