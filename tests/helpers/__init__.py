"""What tests (and benchmarks) share: doubles, builders of data layouts, scripted servers and
where the shared data lives. Tests import helpers from here, never from another test module or
a conftest.py; fixtures stay in conftest.py files and may call these helpers."""
