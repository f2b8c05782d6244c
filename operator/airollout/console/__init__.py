"""`kubectl airollout`: the commands platform engineers use on AIRollouts every day.

`get`, `status` (a live view, or a CI wait with exit codes), `history`, the verbs (`promote`, `pause`,
`resume`, `abort`, `retry`) and shell completion. The plugin reads and writes through the caller's kubectl,
so it sees what kubectl sees; a verb is the annotation `kubectl annotate` would set, nothing more.
"""

from airollout.console.commands import add_console_commands, complete_for_kubectl, main

__all__ = ["add_console_commands", "complete_for_kubectl", "main"]
