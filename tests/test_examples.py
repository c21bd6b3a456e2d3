"""The scheduling examples and the documented commands are valid for the job's command line.

Every `python -m pipeline ...`, `currents-to-segment ...` or `./run_local.sh ...` command in the ```bash
blocks of the READMEs and the docs/ pages, in the crontab entry and in the Airflow DAG is parsed with the
job's own strict option check; the Flex Template's parameters must be options of the job; docs/options.md
is the job's --help of today (scripts/options_doc.py). Nothing is run but --help.
"""
import argparse
import ast
import importlib.util
import json
import pathlib
import re
import shlex

import pytest

from currents_to_segment.pipeline import replay
from currents_to_segment.pipeline.config import reject_unknown_flags
from currents_to_segment.pipeline.options import ConfigError, CurrentsToSegmentOptions
from currents_to_segment.transforms.currents.partitions import parse_hour

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CRON = EXAMPLES / "cron" / "currents-to-segment.cron"
DAG = EXAMPLES / "airflow" / "currents_to_segment_dag.py"
METADATA = EXAMPLES / "dataflow" / "metadata.json"
DOCS = ROOT / "docs"
# The READMEs must each show a command of the job; the docs/ pages are checked for whatever they show.
READMES = [ROOT / "README.md", EXAMPLES / "README.md", EXAMPLES / "dataflow" / "README.md"]
DOCUMENTS = READMES + sorted(DOCS.glob("*.md"))
OPTIONS_DOC = ROOT / "scripts" / "options_doc.py"

# The job, at the start of a command: `python -m pipeline` (any python path), the console script, or
# run_local.sh (which passes its arguments to `python -m pipeline`).
_JOB = re.compile(r"(?:^|(?<=[\s;&|(]))(?:\S*/)?(?:python[0-9.]*\s+-m\s+pipeline|currents-to-segment|run_local\.sh)"
                  r"(?=\s|$)")
PLACEHOLDER = "PLACEHOLDER"
# Shell and Jinja substitutions, replaced by plausible values before the command is split.
_SUBSTITUTIONS = [
    (re.compile(r"\\%"), "%"),  # crontab escape
    (re.compile(r"\$\(date\b[^)]*\bago\b[^)]*\)"), "2024-03-01T09"),  # date -u -d '3 hours ago' ...
    (re.compile(r"\$\(date\b[^)]*\)"), "2024-03-01T12"),  # date -u +%Y-%m-%dT%H
    (re.compile(r"\{\{\s*ds\s*\}\}"), "2024-03-01"),
    (re.compile(r"\{\{\s*next_ds\s*\}\}"), "2024-03-02"),
    (re.compile(r"\{\{\s*params\.bucket\s*\}\}"), "gs://my-bucket"),
    (re.compile(r"\$\([^)]*\)|\{\{.*?\}\}|\$\{\w+\}|\$\w+"), PLACEHOLDER),
]
_JINJA_IF = re.compile(r"\{%-?\s*if\b.*?%\}(.*?)\{%-?\s*endif\s*-?%\}", re.S)
_JINJA_ELSE = re.compile(r"\{%-?\s*else\s*-?%\}")


def substitute(command):
    for pattern, value in _SUBSTITUTIONS:
        command = pattern.sub(value, command)
    return command


def job_arguments(command):
    """The job's arguments in one shell command line that runs it (shell and Jinja substitutions
    replaced), or None when the line does not run the job."""
    command = substitute(command)
    found = _JOB.search(command)
    if not found:
        return None
    lexer = shlex.shlex(command[found.end():], posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    args = []
    for token in lexer:  # up to the first redirection, pipe or command separator
        if token and set(token) <= set("|&;<>()"):
            if args and args[-1].isdigit() and token[0] in "<>":
                args.pop()  # the `2` of `2>&1`
            break
        args.append(token)
    return args


def check_arguments(args):
    """Raise (ConfigError, ValueError, SystemExit) when the arguments are not valid for the job."""
    if args and args[0] == "replay-dead-letters":
        replay._parser().parse_args(args[1:])  # pylint: disable=protected-access
        return
    if args and args[0] == "make-sample-bucket":
        assert len(args) == 2 and not args[1].startswith("-"), args
        return
    reject_unknown_flags(args)  # the job's options and every Beam PipelineOptions subclass's
    values = _values(args)
    hours = {}
    for flag in ("--start", "--end"):
        for value in values.get(flag, []):
            if PLACEHOLDER not in value:
                hours[flag] = parse_hour(value)
    if len(hours) == 2 and hours["--end"] <= hours["--start"]:
        raise ValueError(f"--end {values['--end']} is not after --start {values['--start']}")
    for value in values.get("--integrations", []):
        if not isinstance(json.loads(value), dict):
            raise ValueError(f"--integrations {value!r} is not a JSON object")


def _values(args):
    """{flag: [values]} for --flag VALUE and --flag=VALUE."""
    values = {}
    for index, arg in enumerate(args):
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            values.setdefault(flag, []).append(value)
        elif arg.startswith("--") and index + 1 < len(args):
            values.setdefault(arg, []).append(args[index + 1])
    return values


def bash_commands(text):
    """The command lines in the ```bash blocks of a Markdown text, continuation lines joined,
    comment lines left out."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        commands.extend(line.strip() for line in block.replace("\\\n", " ").splitlines()
                        if line.strip() and not line.lstrip().startswith("#"))
    return commands


def job_commands(commands):
    return [args for args in map(job_arguments, commands) if args is not None]


def crontab_entries(text):
    """The entries of a crontab: lines that are neither comments, blank nor variable settings."""
    return [line for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
            and not re.match(r"^[A-Za-z_]\w*\s*=", line)]


def jinja_variants(template):
    """The template with each {% if %} block taken, then with none taken (Airflow is not installed
    here to render it; ds, next_ds and params are substituted later)."""
    def branch(taken):
        def pick(match):
            parts = _JINJA_ELSE.split(match.group(1), maxsplit=1)
            return parts[0] if taken else (parts[1] if len(parts) > 1 else "")
        return _JINJA_IF.sub(pick, template)
    return [branch(True), branch(False)]


def _dag_tree():
    return ast.parse(DAG.read_text(encoding="utf-8"), filename=str(DAG))


def _calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def _keyword(call, name):
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _literal(tree, node):
    """The literal value of node, following a module-level NAME = <literal>."""
    if isinstance(node, ast.Name):
        assigned = [statement.value for statement in tree.body if isinstance(statement, ast.Assign)
                    and any(getattr(target, "id", None) == node.id for target in statement.targets)]
        assert len(assigned) == 1, f"{node.id} must be assigned once at module level"
        node = assigned[0]
    return ast.literal_eval(node)


def known_job_flags():
    parser = argparse.ArgumentParser()
    CurrentsToSegmentOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    return {option: action for action in parser._actions  # pylint: disable=protected-access
            for option in action.option_strings}


# --- (c) the documented commands ---------------------------------------------------------------

@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_job_command_in_the_documents_is_valid(document):
    commands = job_commands(bash_commands(document.read_text(encoding="utf-8")))
    assert commands or document not in READMES, f"{document} shows no command of the job in a ```bash block"
    failures = []
    for args in commands:
        try:
            check_arguments(args)
        except (ConfigError, ValueError, SystemExit, AssertionError) as error:
            failures.append(f"{shlex.join(args)}\n    -> {type(error).__name__}: {error}")
    assert not failures, f"invalid commands in {document.relative_to(ROOT)}:\n" + "\n".join(failures)


def test_the_crontab_entry_runs_a_valid_job_command():
    entries = crontab_entries(CRON.read_text(encoding="utf-8"))
    assert len(entries) == 1, entries
    fields = entries[0].split(None, 5)
    assert len(fields) == 6 and fields[0].isdigit() and fields[1:5] == ["*"] * 4, "not an hourly schedule"
    args = job_arguments(fields[5])
    assert args is not None, "the entry does not run the job"
    check_arguments(args)
    values = _values(args)
    assert "--ledger" in values and "--currents_root" in values
    assert values["--start"] == ["2024-03-01T09"] and values["--end"] == ["2024-03-01T12"], \
        "--start and --end should be computed with date -u (3 hours ago, and now)"
    assert "flock" in fields[5].split(" -m pipeline")[0], "the job should run under flock"
    assert re.search(r">>\s*\S+\.log", fields[5]), "the output should go to a log file"
    assert "--segment_write_key" not in fields[5], "the key belongs in the env file"


# --- the option reference ------------------------------------------------------------------------

def test_the_option_reference_in_docs_is_the_help_of_today():
    spec = importlib.util.spec_from_file_location("options_doc", OPTIONS_DOC)
    options_doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(options_doc)
    committed = options_doc.PAGE.read_text(encoding="utf-8") if options_doc.PAGE.exists() else ""
    assert committed == options_doc.render(), (
        "docs/options.md differs from the job's --help: run `.venv/bin/python scripts/options_doc.py` "
        "and commit docs/options.md")


# --- (a), (d) the Airflow DAG ------------------------------------------------------------------

def test_the_airflow_dag_parses_and_catches_up():
    source = DAG.read_text(encoding="utf-8")
    tree = _dag_tree()  # valid Python, without Airflow
    assert "catchup=True" in source
    [dag] = _calls(tree, "DAG")
    assert _literal(tree, _keyword(dag, "catchup")) is True
    assert 1 <= _literal(tree, _keyword(dag, "max_active_runs")) <= 2
    imports = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               for alias in node.names}
    assert {"DAG", "BashOperator"} <= imports


def test_the_airflow_dag_runs_valid_job_commands():
    tree = _dag_tree()
    operators = _calls(tree, "BashOperator")
    assert operators, "no BashOperator"
    for operator in operators:
        template = _literal(tree, _keyword(operator, "bash_command"))
        assert isinstance(template, str), "bash_command must be a string literal"
        variants = [job_arguments(variant) for variant in jinja_variants(template)]
        assert all(args is not None for args in variants), "the task does not run the job"
        for args in variants:
            check_arguments(args)
            values = _values(args)
            assert values["--start"] == ["2024-03-01"] and values["--end"] == ["2024-03-02"], \
                "--start {{ ds }} --end {{ next_ds }}"
            for flag in ("--ledger", "--dead_letter_output", "--summary_output", "--fail_on_dead_letters"):
                assert flag in args or flag in values, f"{flag} missing"
            assert "2024-03-01" in values["--dead_letter_output"][0], "dead letters should be per day"
            assert "2024-03-01" in values["--summary_output"][0], "the summary should be per day"
            assert not any(arg.startswith("--segment_write_key") for arg in args)
        catching_up, recent = variants
        assert _values(catching_up)["--integrations"] == ['{"All": false}']
        assert "--integrations" not in recent
        env = _literal(tree, _keyword(operator, "env"))
        assert re.fullmatch(r"\{\{\s*var\.value\.\w+\s*\}\}", env["SEGMENT_WRITE_KEY"])


# --- (b) the Flex Template -------------------------------------------------------------------

def test_the_flex_template_parameters_are_real_options():
    known = known_job_flags()
    metadata = json.loads(METADATA.read_text(encoding="utf-8"))
    assert metadata["name"] and metadata["description"]
    names = [parameter["name"] for parameter in metadata["parameters"]]
    assert names and len(names) == len(set(names))
    unknown = [name for name in names if f"--{name}" not in known]
    assert not unknown, f"not options of the job: {unknown}"
    # the launcher passes each parameter as --name=value: on/off flags cannot take one
    flags = [name for name in names if known[f"--{name}"].nargs == 0]
    assert not flags, f"on/off options cannot be template parameters: {flags}"
    assert "segment_write_key" not in names, "the key would show on the job page"
    for parameter in metadata["parameters"]:
        assert parameter["helpText"] and isinstance(parameter["isOptional"], bool), parameter
    launch = json.loads((EXAMPLES / "dataflow" / "launch-hourly.json").read_text(encoding="utf-8"))
    given = set(launch["launchParameter"]["parameters"])
    assert given <= set(names)
    required = {parameter["name"] for parameter in metadata["parameters"] if not parameter["isOptional"]}
    assert required <= given


def test_the_flex_template_run_in_the_dataflow_readme_uses_template_parameters():
    names = {parameter["name"] for parameter in json.loads(METADATA.read_text(encoding="utf-8"))["parameters"]}
    runs = [command for command in bash_commands((EXAMPLES / "dataflow" / "README.md").read_text(encoding="utf-8"))
            if "flex-template run" in command]
    assert runs
    for command in runs:
        args = shlex.split(substitute(command))
        given = [pair.split("=", 1)[0] for index, arg in enumerate(args) if arg == "--parameters"
                 for pair in args[index + 1].split(",")]
        assert given and set(given) <= names, given


# --- the checks can fail -------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    "python -m pipeline --currents_root x --strat 2024-03-01",  # misspelt option
    "python -m pipeline --currents_root x --start 03/01/2024",  # malformed hour
    "python -m pipeline --currents_root x --start 2024-03-02 --end 2024-03-01",  # empty range
    "currents-to-segment --currents_root x --integrations '[false]'",  # not an object
    "currents-to-segment --currents_root x --late_hours many",  # not a number
    "./run_local.sh --segment_region mars",  # not a choice
    "python -m pipeline replay-dead-letters",  # missing folder
])
def test_the_check_rejects_a_wrong_command(command):
    with pytest.raises((ConfigError, ValueError, SystemExit)):
        check_arguments(job_arguments(command))


def test_a_wrong_flag_in_a_readme_block_is_found():
    document = ("Text\n\n```bash\nexport SEGMENT_WRITE_KEY=...\n"
                "SEGMENT_WRITE_KEY=... python -m pipeline --runner=FnApiRunner \\\n"
                "  --currents_root gs://b/currents --start \"$(date -u +%Y-%m-%d)\" --ledgr gs://b/l\n```\n")
    [args] = job_commands(bash_commands(document))
    assert args == ["--runner=FnApiRunner", "--currents_root", "gs://b/currents", "--start", "2024-03-01T12",
                    "--ledgr", "gs://b/l"]
    with pytest.raises(ConfigError, match="--ledgr"):
        check_arguments(args)


def test_commands_are_cut_at_redirections_and_other_commands():
    assert job_arguments("flock -n /l /opt/v/bin/python -m pipeline --plan >> /var/log/x.log 2>&1") == ["--plan"]
    assert job_arguments("./run_local.sh     # set up .venv") == []
    assert job_arguments("cd /x && currents-to-segment --plan | tee out; echo done") == ["--plan"]
    assert job_arguments("gcloud scheduler jobs create http currents-to-segment-hourly") is None
    assert job_arguments(".venv/bin/python benchmarks/local_throughput.py --events 10") is None
