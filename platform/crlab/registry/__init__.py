"""The experiment registry: SQLAlchemy models, one session helper, plain records out."""

from crlab.registry.db import resolve_db_url, session_scope
from crlab.registry.entities import Checkpoint, Event, Metric, MetricSummary, Run, Sweep
from crlab.registry.models import RUN_STATUSES
from crlab.registry.store import Registry

__all__ = [
    "RUN_STATUSES",
    "Checkpoint",
    "Event",
    "Metric",
    "MetricSummary",
    "Registry",
    "Run",
    "Sweep",
    "resolve_db_url",
    "session_scope",
]
