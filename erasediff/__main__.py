"""``python -m erasediff ...``: the ``erasediff`` command line (see erasediff/cli/)."""

from erasediff.cli import main

if __name__ == "__main__":
    main(prog_name="erasediff")
