"""Runs hydrahead's CLI on each command line of a JSON list, in this one process, and prints what each
did as JSON: exit code, stderr, and whether an exception escaped (a traceback a user would see).

    python -m tests.cli.bad_input_driver cases.json > results.json
"""

import contextlib
import io
import json
import sys
import traceback


def main() -> None:
    from hydrahead.cli import main as cli

    results = []
    for argv in json.load(open(sys.argv[1])):
        err, out = io.StringIO(), io.StringIO()
        escaped = None
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = cli(argv)
            except SystemExit as exit:  # argparse
                code = exit.code
            except BaseException:  # noqa: BLE001 - what the test looks for
                code, escaped = None, traceback.format_exc()
        results.append({"argv": argv, "code": code, "stderr": err.getvalue(), "escaped": escaped})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
