"""The error of every tool that reads a finished output (summary, exports, render, bodies): torch-free,
so the CLI can import it cheaply and report it as one line with exit status 2."""


class OutputError(ValueError):
    """OUT is not a posepipe output, lacks what was asked of it, or its files contradict its videos rows."""
