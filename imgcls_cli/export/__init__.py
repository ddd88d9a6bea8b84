"""Deployment: `imgcls export` writes a checkpoint as ONNX or a torch.export program (.pt2), with what a user needs to
run it without imgcls; eval and predict run those files too."""
