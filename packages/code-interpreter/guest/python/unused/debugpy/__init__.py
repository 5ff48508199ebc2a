# ipykernel imports debugpy (about 10 MiB per kernel) only to offer the Jupyter debugger, which
# nothing here uses; this stand-in, first on the kernels' PYTHONPATH, makes that import fail
# the way ipykernel expects when debugpy is not installed.
raise ImportError("debugpy is disabled in Cove's code interpreter")
