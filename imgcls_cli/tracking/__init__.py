"""Experiment tracking: a training run (and a sweep) recorded in MLflow or TensorBoard as well as in its run
directory. api.py holds the backend registry and the Tracking that the engine calls; each backend is a module."""
