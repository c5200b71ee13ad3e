"""The user-facing import path of sweeps, kept stable: the code lives in `rksp.harness.sweep`.

    from rksp.sweep import grid, run, load_records
"""
from rksp.harness.record import load_records, read_record, record_to_row
from rksp.harness.sweep import grid, run

__all__ = ["grid", "run", "load_records", "read_record", "record_to_row"]
