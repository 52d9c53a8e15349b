"""crlab: a research platform for GRPO + Critique RL on code models.

The import package is ``crlab``; the console command is ``platform``. The source folder is called
``platform/`` but is never a package itself (that name belongs to the standard library).
"""

__version__ = "0.1.0"
