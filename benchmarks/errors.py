"""Errors that mean "bad input": the CLI prints them and exits with status 2, having written nothing."""


class UsageError(Exception):
    pass
