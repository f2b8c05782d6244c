"""Shell completion from the argparse definitions themselves, in the protocol kubectl uses for plugins.

kubectl completes `kubectl airollout ...` by running `kubectl_complete-airollout ARGS... PARTIAL` from PATH
and reading one candidate per line, then `:DIRECTIVE` (cobra's `__complete` protocol). `airollout
__complete` answers the same way, and `airollout completion bash|zsh` prints the script that asks it, so
the commands, flags and rollout names offered are always those the parser accepts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence

from airollout.console.cluster import Cluster, ClusterError

__all__ = ["SHELLS", "candidates", "shell_script"]

# cobra's ShellCompDirectiveNoFileComp: offer these words only, never file names.
_NO_FILES = ":4"
_ROLLOUT_NAME = "NAME"
SHELLS = ("bash", "zsh")

_BASH = """\
# AIRollout completion for {shell}: `source <(airollout completion {shell})`
_airollout_complete() {{
    local IFS=$'\\n'
    COMPREPLY=($("${{COMP_WORDS[0]}}" __complete "${{COMP_WORDS[@]:1:COMP_CWORD}}" 2>/dev/null | grep -v '^:'))
}}
complete -F _airollout_complete airollout kubectl-airollout
"""
_ZSH_PRELUDE = "autoload -U +X bashcompinit && bashcompinit\n"


def shell_script(shell: str) -> str:
    return (_ZSH_PRELUDE if shell == "zsh" else "") + _BASH.format(shell=shell)


def candidates(
    commands: Mapping[str, argparse.ArgumentParser],
    words: Sequence[str],
    rollout_names: Callable[[Cluster], list[str]] = Cluster.names,
) -> list[str]:
    """What may come next after ``words`` (the last one being typed), then the directive line."""
    *before, current = list(words) or [""]
    if not before or before[0] not in commands:
        return [*sorted(name for name in commands if name.startswith(current)), _NO_FILES]
    parser = commands[before[0]]
    options = {option: action for action in parser._actions for option in action.option_strings}
    if current.startswith("-"):
        return [*sorted(o for o in options if o.startswith(current) and o.startswith("--")), _NO_FILES]
    values, positionals = _read(before[1:], options)
    takes = [a for a in parser._actions if not a.option_strings and a.dest != "help"]
    if before[-1] in options and options[before[-1]].nargs != 0:
        return [_NO_FILES]  # a flag's value: nothing sensible to offer (a duration, a reason)
    if len(positionals) >= len(takes):
        return [_NO_FILES]
    wanted = takes[len(positionals)]
    if wanted.choices:
        return [*sorted(str(c) for c in wanted.choices if str(c).startswith(current)), _NO_FILES]
    if wanted.metavar == _ROLLOUT_NAME:
        cluster = Cluster(kubeconfig=values.get("--kubeconfig"), context=values.get("--context"),
                          namespace=values.get("--namespace"))  # fmt: skip
        try:
            return [*sorted(n for n in rollout_names(cluster) if n.startswith(current)), _NO_FILES]
        except ClusterError:
            return [_NO_FILES]
    return [_NO_FILES]


def _read(words: Sequence[str], options: Mapping[str, argparse.Action]) -> tuple[dict[str, str], list[str]]:
    """The values of --kubeconfig, --context and --namespace so far, and the positional words."""
    values: dict[str, str] = {}
    positionals: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        action = options.get(word)
        if action is not None and action.nargs != 0 and index + 1 < len(words):
            values[action.option_strings[-1]] = words[index + 1]
            index += 2
            continue
        if not word.startswith("-"):
            positionals.append(word)
        index += 1
    return values, positionals
