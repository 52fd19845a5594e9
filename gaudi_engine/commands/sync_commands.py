"""(placeholder until this group's commands are written)"""


def register(add_command) -> None:
    pass
