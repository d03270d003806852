"""The project's own error type for bad input."""


class SpecError(ValueError):
    """Bad model file, recipe or expression. The message is one line naming file and key."""

    def __init__(self, message, source=None, key=None):
        where = ": ".join(str(p) for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message)
