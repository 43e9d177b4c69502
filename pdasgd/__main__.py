"""`python -m pdasgd`: the command line, as the `pdasgd` script (e.g. under `torchrun ... -m pdasgd run`)."""

from pdasgd.cli.main import entry

entry()
