"""``python -m syncd.simulators doorflow|intserv [options]``: same as ``syncd simulate``."""

from syncd.simulators.cli import simulate

if __name__ == "__main__":
    simulate(prog_name="python -m syncd.simulators")
