"""pdasgd: decoupled asynchronous backpropagation with layer-wise updates, simulated, run and checked.

This package is the contract the two engines share (docs/design.md):

- `pdasgd.scenario`: the scenario file (methods, layer costs, workers, devices, delays, training, run);
- `pdasgd.methods`: one definition per method (roles, dispatch, per-batch steps, publication, copies);
- `pdasgd.offsets`: one batch's fixed-time step timing, read off a method's steps;
- `pdasgd.trace` and `pdasgd.metrics`: the trace both engines write, and the one summary of it;
- `pdasgd.closed_forms`: the theory's numbers for a scenario; `pdasgd.machine`: a scenario as the machine
  a real run used; `pdasgd.comparison`, `pdasgd.report`, `pdasgd.plots`, `pdasgd.sweep`: predicted
  against measured, reports, pictures, grids;
- `pdasgd.cli`: the `pdasgd` command.

The engines live beside it: `simulator` (SimPy) and `executor` (PyTorch); `theory` holds the closed forms.
Importing `pdasgd` imports neither torch nor simpy.
"""
