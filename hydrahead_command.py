"""Entry point of the `hydrahead` command, kept outside the package on purpose: `import hydrahead` registers
the hybrid classes with transformers (which imports torch and transformers: seconds), and a package cannot
tell at its import that it serves the command. With this module loaded it defers that to the subcommand that
loads a model, so `hydrahead --help` and a one-line error come back in about a second."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from hydrahead.cli import main as run

    return run(argv)
