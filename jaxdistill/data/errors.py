"""The one exception type the data pipeline raises for user-fixable problems.

Every message is a single line that says what is wrong *and* what to change,
so a failed launch can be fixed from the log line alone.
"""


class DataError(ValueError):
  """A data-config or data-file problem the user can fix (bad path, column, label...)."""


def short_repr(value, limit: int = 60) -> str:
  """repr() clipped to one short line, for echoing user values inside messages."""
  text = repr(value).replace("\n", "\\n")
  return text if len(text) <= limit else text[: limit - 3] + "..."
