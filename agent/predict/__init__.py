"""Prediction engine: which resources a device will ask for next, learned across the mesh.

Pure and sans-I/O: predictors see ``observe(device, resource, t, size)`` calls and answer
``predict(device, k)``; they never read files, clocks or sockets. Every table is bounded.
See docs/prediction.md for the predictors, the default and why, and bench/prefetch.py for
how they are measured.
"""
