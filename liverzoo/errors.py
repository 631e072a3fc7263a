"""Exceptions that the command-line tools turn into one clear error line."""


class LiverzooError(Exception):
    """Base class: the message names the file or flag and what is wrong."""


class DataError(LiverzooError, ValueError):
    """Bad input data (a CT volume, a label, a shard, a folder of cases)."""


class ConfigError(LiverzooError, ValueError):
    """A bad flag or option value."""
