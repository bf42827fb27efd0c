"""Grids of runs (``atlens sweep``)."""

from atlens.sweeps.grid import GridPoint, grid_points, parse_grid, status
from atlens.sweeps.launch import LAUNCHERS, run_grid, run_point, sweep_table

__all__ = ["LAUNCHERS", "GridPoint", "grid_points", "parse_grid", "run_grid", "run_point", "status", "sweep_table"]
