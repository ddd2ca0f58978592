"""The study the notebooks and `make reproduce` run: the paper's experiment as incremental steps, statistics of the
data and labels, tables beside the paper's, figures, and the notebooks' regression references."""
