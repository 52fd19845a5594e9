"""Subcommand groups of the `gaudi` CLI; each module has `register(add_command)`."""
