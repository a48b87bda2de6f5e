"""Baseline for lateness_thread_4.lua: lateness_thread.py with 4 workers."""
import os
import runpy
import sys

sys.argv[1:] = ["4"]
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lateness_thread.py"),
               run_name="__main__")
