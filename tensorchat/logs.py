"""One log format for every tensorchat process, and how client text goes into a log line."""

import json
import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Root logging at `level` ("debug", "INFO", ...) in the shared format."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


def quoted(client_text: str) -> str:
    """`client_text` as a JSON string, for logging what a client sent.

    A newline, quote or control character in it is escaped (and anything non-ASCII, so no
    bidi override reorders the line), so that a client cannot forge a log line or a field.
    """
    return json.dumps(client_text)
