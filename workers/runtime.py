"""What an actor needs to run: a unit-of-work factory, settings and the job queue.

The API process binds its own (in-process mode); a dramatiq worker process builds them lazily on the
event loop the AsyncIO middleware runs actors on.
"""

from __future__ import annotations

from dataclasses import dataclass

from marketplace.db.engine import create_engine, create_session_factory
from marketplace.jobs import DramatiqJobs, Jobs
from marketplace.ranking.ports import Ranker
from marketplace.ranking.rotation import RotationRanker
from marketplace.settings import Settings, get_settings
from marketplace.uow import UnitOfWorkFactory


@dataclass
class Runtime:
    settings: Settings
    uow: UnitOfWorkFactory
    jobs: Jobs
    ranker: Ranker


_runtime: Runtime | None = None


def bind(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def current() -> Runtime:
    global _runtime
    if _runtime is None:
        import dramatiq

        settings = get_settings()
        engine = create_engine(settings.service.database_url)
        _runtime = Runtime(
            settings,
            UnitOfWorkFactory(create_session_factory(engine)),
            DramatiqJobs(dramatiq.get_broker()),
            RotationRanker(),
        )
    return _runtime
