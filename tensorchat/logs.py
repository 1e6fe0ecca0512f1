"""One log format for every tensorchat process."""

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Root logging at `level` ("debug", "INFO", ...) in the shared format."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
