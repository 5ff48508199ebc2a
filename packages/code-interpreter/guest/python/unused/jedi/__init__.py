# IPython imports jedi (with parso, ~10 MiB per kernel) for tab completion, which the SDK never
# asks for; this stand-in, first on the kernels' PYTHONPATH, makes IPython fall back to its
# plain completer.
raise ImportError("jedi is disabled in Cove's code interpreter")
