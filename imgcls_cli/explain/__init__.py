"""Explanations of a checkpoint's predictions: heat maps of the evidence in each image (Grad-CAM and other methods
of captum), for `imgcls explain` and `imgcls eval explain=N`."""
