"""What no log line of the service carries: a customer's survey link (`/v1/surveys/<token>`) is a bearer credential,
so the token part of such a path is written as `<redacted>`, the rest of the line as it was."""

from __future__ import annotations

import logging
import re
from typing import Any

# Any path segment after `/surveys/`, whatever its case or the prefix before it: a link sent to a wrong path (a
# trailing slash, `/V1/...`) is answered 404 and carries the same credential.
_SURVEY_TOKEN = re.compile(r"(/surveys/)[^/\s?#\"']+", re.IGNORECASE)
REDACTED = "<redacted>"


def redact(text: str) -> str:
    return _SURVEY_TOKEN.sub(rf"\g<1>{REDACTED}", text) if "/surveys/" in text.lower() else text


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def install() -> None:
    """Redact every log record as it is made, in this process (idempotent). At the record's making, not as a logger's
    or a handler's filter: a logger's filter sees only the records made on that very logger (uvicorn's access log,
    but not `marketplace.http` under `marketplace`), and the handlers are uvicorn's or the deployment's, set up before
    or after the app as they please."""
    make = logging.getLogRecordFactory()
    if getattr(make, "redacts_survey_links", False):
        return

    def making(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.msg = _redacted(record.msg)
        if isinstance(record.args, tuple):  # uvicorn's access formatter reads them back as a tuple of five
            record.args = tuple(_redacted(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redacted(v) for k, v in record.args.items()}
        values = record.args.values() if isinstance(record.args, dict) else record.args or ()
        if any(not isinstance(v, str | int | float) for v in values):  # a URL object, say: redacted once formatted
            try:
                message = record.getMessage()
            except Exception:  # a wrong format is logging's to report, as it would be without this
                return record
            if redact(message) != message:
                record.msg, record.args = redact(message), ()
        return record

    making.redacts_survey_links = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(making)
