"""The one exception type the CLI turns into a single line on stderr."""


class LosslabError(Exception):
    """A problem the user can fix: bad input, missing data, unreachable tracking store."""
