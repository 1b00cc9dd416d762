"""The errors a user fixes: each message is one line that names the fix.

Plain Python (no JAX), so the config parser can raise them before any heavy import.
"""

from __future__ import annotations


class ConfigError(ValueError):
  """A config problem the user fixes in the config file or on the command line."""
