"""Write docs/options.md: the job's option reference, as `python -m pipeline --help` prints it.

    .venv/bin/python scripts/options_doc.py          # rewrite docs/options.md
    .venv/bin/python scripts/options_doc.py --check  # exit 1 when docs/options.md is not up to date

The help is taken from the job itself, in a subprocess run from the repository root with a fixed width
(COLUMNS=100, no colour), so the page is the same on every machine. tests/test_examples.py checks that the
committed page equals what this script writes.
"""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "options.md"
WIDTH = "100"

HEADER = """\
# Options

The job's own `--help`, as it prints it. This page is generated: after changing an option, run
`.venv/bin/python scripts/options_doc.py` (a test fails while this page differs from `--help`).
For what the options are for, by theme, see [Running the job](running.md).
"""


def help_text(*args):
    """What `python -m pipeline ARGS --help` prints, at the fixed width."""
    env = {key: value for key, value in os.environ.items() if key not in ("FORCE_COLOR", "PYTHON_COLORS")}
    env.update(COLUMNS=WIDTH, LINES="50", NO_COLOR="1")
    done = subprocess.run([sys.executable, "-m", "pipeline", *args, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"python -m pipeline {' '.join(args)} --help failed "
                           f"(exit {done.returncode}):\n{done.stderr}")
    return "\n".join(line.rstrip() for line in done.stdout.strip("\n").splitlines())


def render():
    """The page, as this script writes it."""
    return (f"{HEADER}\n"
            "## The job\n\n"
            "`python -m pipeline --help` (or `currents-to-segment --help`):\n\n"
            f"```text\n{help_text()}\n```\n\n"
            "## replay-dead-letters\n\n"
            "`python -m pipeline replay-dead-letters --help`; what it does: "
            "[outputs.md](outputs.md#replaying-dead-letters).\n\n"
            f"```text\n{help_text('replay-dead-letters')}\n```\n")


def main(argv):
    page = render()
    if "--check" in argv:
        if PAGE.exists() and PAGE.read_text(encoding="utf-8") == page:
            return 0
        print(f"{PAGE.relative_to(ROOT)} is not up to date: run .venv/bin/python scripts/options_doc.py",
              file=sys.stderr)
        return 1
    PAGE.parent.mkdir(exist_ok=True)
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
