"""From code to rollout: find where an application calls an AI model (`scan`), put a call behind a flag (`gate`).

Nothing here is loaded by the operator (`airollout run`): these are developer commands, and their parsers
(tree-sitter's grammars) come from the optional ``scan`` extra.
"""
