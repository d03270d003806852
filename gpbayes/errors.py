"""The project's own error types: bad input, and numerical trouble a run cannot go past."""


class SpecError(ValueError):
    """Bad model file, recipe or expression. The message is one line naming file and key."""

    def __init__(self, message, source=None, key=None):
        where = ": ".join(str(p) for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class NumericalError(ArithmeticError):
    """A computation that cannot go on (e.g. a marginal that is not finite anywhere it was
    evaluated). The message is one line; what was done before it is kept."""
