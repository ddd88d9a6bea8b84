"""imgcls: train, evaluate and run image classifiers from Hydra configs."""
__version__ = "0.1.0"
