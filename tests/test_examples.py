"""The scheduling examples and the README's commands are valid for the job's command line."""
import argparse
import ast
import json
import pathlib
import re
import shlex
import sys
import types

import pytest

from pipeline import replay
from pipeline.main import _reject_unknown_flags
from pipeline.options import CurrentsToSegmentOptions
from pipeline.partitions import parse_hour

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOCUMENTS = [ROOT / "README.md", EXAMPLES / "README.md", EXAMPLES / "dataflow" / "README.md"]
_JOB = re.compile(r"(?:^|\s)(?:\S*python\S* -m pipeline|currents-to-segment|\./run_local\.sh)(?=\s|$)")
_SUBSTITUTIONS = [
    (re.compile(r"\$\(date[^)]*\)"), "2024-03-01T09"),
    (re.compile(r"\{\{\s*ds\s*\}\}"), "2024-03-01"),
    (re.compile(r"\{\{\s*next_ds\s*\}\}"), "2024-03-02"),
    (re.compile(r"\{%.*?%\}"), ""),
    (re.compile(r"\$\{?[A-Z_]+\}?"), "value"),
    (re.compile(r"\\%"), "%"),
]


def job_arguments(command):
    """The job's arguments in a shell command line that runs it, or None when it does not."""
    for pattern, value in _SUBSTITUTIONS:
        command = pattern.sub(value, command)
    found = _JOB.search(command)
    if not found:
        return None
    rest = re.split(r"\s(?:>>|>|2>&1|\|)", command[found.end():])[0]
    return shlex.split(rest, comments=True)


def check_arguments(args):
    """Raise when the arguments are not valid options of the job (or have malformed values)."""
    if args and args[0] == "replay-dead-letters":
        replay._parser().parse_args(args[1:])  # pylint: disable=protected-access
        return
    _reject_unknown_flags(args)
    for flag in ("--start", "--end"):
        if flag in args:
            parse_hour(args[args.index(flag) + 1])
    if "--integrations" in args:
        assert isinstance(json.loads(args[args.index("--integrations") + 1]), dict)


def bash_commands(path):
    """Commands in the ```bash blocks of a Markdown file, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    commands = []
    for block in blocks:
        commands.extend(line.strip() for line in block.replace("\\\n", " ").splitlines()
                        if line.strip() and not line.lstrip().startswith("#"))
    return commands


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_job_command_in_the_documents_is_valid(document):
    commands = [args for args in map(job_arguments, bash_commands(document)) if args is not None]
    assert commands, f"{document} shows no command of the job"
    for args in commands:
        check_arguments(args)


def test_the_check_catches_a_wrong_flag():
    with pytest.raises(Exception):
        check_arguments(job_arguments("python -m pipeline --currents_root x --strat 2024-03-01"))
    with pytest.raises(ValueError):
        check_arguments(job_arguments("python -m pipeline --currents_root x --start 03/01/2024"))


def test_the_crontab_entry_runs_a_valid_command():
    lines = [line for line in (EXAMPLES / "cron" / "currents-to-segment.cron").read_text().splitlines()
             if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(lines) == 1 and lines[0].split()[:5] == ["20", "*", "*", "*", "*"]
    args = job_arguments(lines[0])
    check_arguments(args)
    assert "--ledger" in args and "flock" in lines[0]


def _load_dag():
    """Run the DAG file with a stand-in for Airflow (not installed here), returning its tasks' kwargs."""
    tasks = []

    class DAG:  # pylint: disable=too-few-public-methods
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    airflow = types.ModuleType("airflow")
    airflow.DAG = DAG
    bash = types.ModuleType("airflow.operators.bash")
    bash.BashOperator = lambda **kwargs: tasks.append(kwargs)
    modules = {"airflow": airflow, "airflow.operators": types.ModuleType("airflow.operators"),
               "airflow.operators.bash": bash}
    source = (EXAMPLES / "airflow" / "currents_to_segment_dag.py").read_text()
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        namespace = {}
        exec(compile(source, "currents_to_segment_dag.py", "exec"), namespace)  # pylint: disable=exec-used
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name)
            else:
                sys.modules[name] = module
    return namespace["dag"].kwargs, tasks


def test_the_airflow_dag_parses_backfills_and_runs_a_valid_command():
    ast.parse((EXAMPLES / "airflow" / "currents_to_segment_dag.py").read_text())
    dag, tasks = _load_dag()
    assert dag["catchup"] is True and dag["max_active_runs"] == 1
    assert len(tasks) == 1
    args = job_arguments(tasks[0]["bash_command"])
    check_arguments(args)
    assert args[args.index("--start") + 1] == "2024-03-01" and "--fail_on_dead_letters" in args
    assert "--integrations" in args  # the catch-up branch of the template, its tags removed
    assert "SEGMENT_WRITE_KEY" in tasks[0]["env"] and "--segment_write_key" not in args


def test_the_flex_template_parameters_are_real_options():
    parser = argparse.ArgumentParser()
    CurrentsToSegmentOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    known = {option.lstrip("-") for action in parser._actions for option in action.option_strings}
    metadata = json.loads((EXAMPLES / "dataflow" / "metadata.json").read_text())
    names = [parameter["name"] for parameter in metadata["parameters"]]
    assert names and set(names) <= known
    assert "segment_write_key" not in names
    launch = json.loads((EXAMPLES / "dataflow" / "launch-hourly.json").read_text())
    assert set(launch["launchParameter"]["parameters"]) <= set(names)
