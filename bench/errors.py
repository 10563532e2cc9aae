"""Errors the command line turns into a one-line message and exit status 2."""


class BadInputError(Exception):
    """The user asked for something that cannot be done; the message says what to do instead."""
