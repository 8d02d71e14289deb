#!/usr/bin/env python
"""Compute the PMF of an umbrella campaign with MBAR: see ``--help`` and the README."""

from protbench_nrp.analysis_cli import build_command

if __name__ == "__main__":
    build_command()()
