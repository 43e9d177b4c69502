"""The `pdasgd` command: one module per subcommand (`pdasgd.cli.main` finds them by name).

Each module defines `add_parser(subparsers)` and a `run(args)` that returns the exit status; it imports the
engines (simulator, executor, torch) inside `run` only, so `pdasgd --help` stays fast. `pdasgd.cli.common`
holds what they share: one-line errors with exit status 2, JSON output, text tables.
"""
