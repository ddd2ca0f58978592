"""Measurement: `make bench`'s speed and volume figures, each stated against the machine's dense-convolution limit
measured in the same run. Functions take paths and return text; the command line writes files."""
