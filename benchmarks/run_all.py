"""`make bench`: every benchmark in this folder, one after another (never in parallel)."""
import importlib.util
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ["bench_dmd.py", "bench_profile.py", "bench_train.py", "bench_kss.py"]

for name in ORDER:
    path = HERE / name
    if not path.exists():
        continue
    print(f"\n===== {name} =====", flush=True)
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    sys.argv = [str(path)]
    spec.loader.exec_module(mod)
    mod.main()
