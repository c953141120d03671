"""What `dramatiq workers.worker_entry` loads in a worker process: the Redis broker and every actor."""

from marketplace.settings import get_settings
from workers.broker import make_broker, use_broker
from workers.signals import coalesce_stop_signals

# dramatiq's worker process has set its signal handlers by now: a group SIGTERM's two copies are one stop.
coalesce_stop_signals()
use_broker(make_broker(get_settings().service.redis_url))
import workers.actors  # noqa: E402, F401  (declares the actors on that broker)
