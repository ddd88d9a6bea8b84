"""Training, evaluation and prediction: plain values in, plain results and files out; no Hydra here."""
