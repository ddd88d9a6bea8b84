"""`imgcls check`: a dataset's inventory, unreadable files, exact and near duplicates, leakage between its splits and
likely label errors (out-of-fold predictions of k-fold training, scored by cleanlab)."""
