"""A sweep that gives up on a registry that stayed unreachable returned before the end: exit code 3."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from crlab.errors import RegistryUnreachable
from crlab.registry.retry import Reachability


def test_giving_up_on_an_unreachable_registry_is_exit_code_3() -> None:
    reach = Reachability(retry_s=0.05)

    def refused() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    with pytest.raises(RegistryUnreachable) as gave_up:
        reach.call(refused)
    assert gave_up.value.exit_code == 3 and "running cells carry on" in str(gave_up.value)
    with pytest.raises(OperationalError):
        Reachability(retry_s=0).call(refused)  # a one-shot command fails at once, as before
