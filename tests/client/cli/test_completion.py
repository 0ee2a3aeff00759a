"""`slipway completion bash|zsh|fish`, through the installed `slipway` command: each shell
gets its script, and bash, sourcing it, completes commands, subcommands and flags by
asking `slipway` back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SLIPWAY = str(BIN / "slipway")
# Completes the line given as $1 as bash does at the end of that line: sets the COMP_*
# variables, calls the function the script registered for slipway, prints each reply.
COMPLETE = """
source <(slipway completion bash)
line=$1
COMP_LINE=$line COMP_POINT=${#line}
read -ra COMP_WORDS <<< "$line"
[[ $line == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
function=$(complete -p slipway | sed -E 's/.* -F ([^ ]+) .*/\\1/')
"$function" slipway
printf '%s\\n' "${COMPREPLY[@]}"
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_ARC", "COMP_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.parametrize(
    ("shell", "registers"),
    [
        ("bash", "complete -o nospace -o default -o bashdefault -F _python_argcomplete slipway"),
        ("zsh", "compdef _python_argcomplete slipway"),
        ("fish", "complete --command slipway -f -a '(__fish_slipway_complete)'"),
    ],
)
def test_each_shell_gets_its_completion_script(shell: str, registers: str) -> None:
    done = subprocess.run(
        [SLIPWAY, "completion", shell], capture_output=True, text=True, timeout=60, env=_env()
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert registers in [line.strip() for line in done.stdout.splitlines()]


def test_an_unknown_shell_is_one_error_line() -> None:
    done = subprocess.run(
        [SLIPWAY, "completion", "ksh"], capture_output=True, text=True, timeout=60, env=_env()
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        "ERROR: argument SHELL: invalid choice: 'ksh' (choose from 'bash', 'zsh', 'fish')"
    )


@pytest.mark.parametrize(
    ("line", "replies"),
    [
        ("slipway bu", ["build", "builds"]),
        ("slipway builds i", ["info", "import", "import-image"]),
        ("slipway rack start --po", ["--port "]),
        ("slipway builds info BXXX -a app --js", ["--json "]),
        ("slipway completion z", ["zsh "]),
    ],
)
def test_bash_sourcing_the_script_completes_the_line(line: str, replies: list[str]) -> None:
    done = subprocess.run(
        ["bash", "-c", COMPLETE, "complete", line],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == replies
