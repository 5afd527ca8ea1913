"""Errors of the body stage that the CLI reports as one line (kept free of torch, so importing them is cheap)."""


class BodyModelError(ValueError):
    """A user-supplied body model folder or file that cannot be used; the message is one line."""
