"""``python -m erasediff ...``: the ``erasediff`` command line (see audit/cli.py)."""

from audit.cli import main

if __name__ == "__main__":
    main(prog_name="erasediff")
