"""Every ``python tools/*.py`` / ``python datasets/*.py`` command the READMEs show, parsed by the
tool it names, so that a renamed flag or config key cannot leave a README command broken.

A command is a line of a fenced block, with its ``\\`` continuations joined, or an inline code
span (which may wrap over lines in the Markdown source) that starts with ``python``. Usage
patterns with ``[optional]`` parts (outside quotes) are not commands and are left out;
``VAR=value`` prefixes are dropped.

Checking one command (no work is started, nothing is written):

1. the tool's ``parse_args(argv)`` where it has one (it parses and checks its flags after
   parsing: conflicts, value ranges; most checks that read files stay in ``main``, and
   ``stand_in_outputs`` stands in for the ones a command reads from earlier commands), else
   ``argument_parser().parse_args(argv)``; a detectron2 script is checked with its built-in
   twin when detectron2 is absent (``DETECTRON2_STAND_INS``);
2. when the parsed arguments hold ``config_file`` and ``opts``, the config is loaded with those
   overrides (``sard.config.load_config``): an unknown or renamed key fails.

Run as a script (``python tests/readme_commands.py README.md ...``) it checks every command of
the given files in this one process and prints a JSON list of ``{"command", "error"}`` (error
null when it parses); the tests run it in a subprocess because the study tools set process-wide
torch state at import.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from testkit import checkout_like

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHELL_STOPS = {"|", "||", "&&", ";", ">", ">>", "2>", "&"}


def readme_commands(text: str) -> List[str]:
    """The ``python <folder>/<tool>.py ...`` commands of a Markdown text, whitespace-normalised."""
    found = []
    for block in re.findall(r"```\w*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found.append(line.strip())
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    commands = []
    for c in found:
        c = re.sub(r"^(\w+=\S+\s+)+", "", c)  # VAR=value prefixes set the environment only
        unquoted = re.sub(r"\"[^\"]*\"|'[^']*'", "", c)  # a quoted glob's [0-9] is no option
        if re.match(r"python [\w/]+\.py\b", c) and "[" not in unquoted:
            commands.append(c)
    return commands


def command_argv(command: str) -> tuple[str, List[str]]:
    """(script path under the repository, its arguments), comments and shell tails removed."""
    words = shlex.split(command, comments=True)
    for k, word in enumerate(words):
        if word in _SHELL_STOPS:
            words = words[:k]
            break
    return os.path.join(REPO, words[1]), words[2:]


# detectron2 scripts, and the built-in tool that takes the same flags (detectron2's
# default_argument_parser's): without detectron2 their commands are checked with it.
DETECTRON2_STAND_INS = {"projects/SARD/train_net.py": "tools/train_net.py"}


def parse_command(command: str) -> argparse.Namespace:
    """The arguments ``command`` gives its tool; SystemExit / ValueError when it rejects them."""
    script, argv = command_argv(command)
    if not os.path.isfile(script):
        raise FileNotFoundError(f"no such tool: {script}")
    stand_in = DETECTRON2_STAND_INS.get(os.path.relpath(script, REPO))
    if stand_in:
        from sard.config import detectron2_import_error

        if detectron2_import_error():
            if any(a == "--engine" or a.startswith("--engine=") for a in argv):
                raise SystemExit(f"{script}: --engine is tools/train_net.py's flag, not this one's")
            script = os.path.join(REPO, stand_in)
    folder = os.path.dirname(script)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # tools import their siblings as a script run would
    name = "readme_" + os.path.splitext(os.path.basename(script))[0]
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    if callable(getattr(module, "parse_args", None)):
        parse = module.parse_args
    elif callable(getattr(module, "argument_parser", None)):
        parse = module.argument_parser().parse_args
    else:
        raise AttributeError(f"{script} has neither parse_args(argv) nor argument_parser()")
    saved_argv, sys.argv = sys.argv, [script] + argv  # the parser names the tool in errors
    try:
        return parse(argv)
    finally:
        sys.argv = saved_argv


def stand_in_outputs(command: str) -> None:
    """Stand-ins for the ``output/...`` files and folders ``command`` reads: earlier README
    commands write them, and a tool may check that a given path exists while it parses. A
    file name has an extension; a positional argument without one is a folder read (a study
    folder); an option's value without one (``--out output/x``) is written, so left alone."""
    argv = command_argv(command)[1]
    for before, word in zip([""] + argv, argv):
        if not re.fullmatch(r"output/[\w./-]+", word) or os.path.exists(word):
            continue
        if re.fullmatch(r".+\.\w+", os.path.basename(word)):
            os.makedirs(os.path.dirname(word), exist_ok=True)
            open(word, "wb").close()
        elif not before.startswith("-"):
            os.makedirs(word)


def check_command(command: str) -> Optional[str]:
    """None when ``command`` parses (and its config with overrides loads), else why not."""
    from sard.config import load_config

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parse_command(command)
            if getattr(args, "config_file", None) and getattr(args, "opts", None) is not None:
                load_config(args.config_file, list(args.opts))
    except SystemExit as exit_info:
        if exit_info.code in (0, None):
            return None
        if isinstance(exit_info.code, str):  # sys.exit("message")
            return exit_info.code
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue() else "exit"
    except Exception as error:  # noqa: BLE001 - any rejection is the finding
        return f"{type(error).__name__}: {error}"
    return None


def main(paths: List[str]) -> int:
    paths = [os.path.abspath(p) for p in paths]
    sys.path.insert(0, REPO)
    report = []
    # Commands name configs/ and tools/ relative to a checkout's root; a checkout-like temporary
    # folder keeps anything a tool wrote by mistake out of the repository.
    with tempfile.TemporaryDirectory() as root:
        checkout_like(Path(root))  # tools themselves are run from REPO (command_argv)
        os.chdir(root)
        for path in paths:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            for command in readme_commands(text):
                stand_in_outputs(command)
                error = check_command(command)
                report.append({"file": path, "command": command, "error": error})
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
