"""``python -m vidgate`` is the ``vidgate`` command."""

from vidgate.cli import app

if __name__ == "__main__":  # not when a child process imports the parent's main module
    app()
