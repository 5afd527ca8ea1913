"""The error of every tool that reads a finished output (summary, exports, render, bodies, eval-track) or
writes a file from it: torch-free, so the CLI can import it cheaply and report it as one line with exit
status 2."""


class OutputError(ValueError):
    """OUT is not a posepipe output, lacks what was asked of it, or its files contradict its videos rows;
    a file to compare it with (MOTChallenge rows) cannot be read; or the file to write cannot be made."""
