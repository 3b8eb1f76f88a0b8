"""``python -m redflags.cli``: the ``redflags`` command."""

from redflags.cli import main

if __name__ == "__main__":
    main()
