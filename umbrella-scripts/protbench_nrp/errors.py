"""The root of every error that reaches the user.

Each module keeps its own error classes (a caller tells a bad window setting
from a git problem by them), and each of those derives from
:class:`ProtbenchError`, so a command line can tell "our message, naming the
thing at fault and the fix" from a bug with one ``except``.
"""


class ProtbenchError(Exception):
    """An error whose message is meant for the user: it names what is wrong and how to fix it."""


__all__ = ["ProtbenchError"]
