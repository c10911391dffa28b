"""``python -m archer_agents.cli``: the ``archer`` command, as launchers (torchrun) start it."""

from archer_agents.cli.app import main

if __name__ == "__main__":
    main()
