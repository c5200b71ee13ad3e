"""Tests of rksp/harness/sweep.py: grid, hashing, atomic records, resume after a kill, executors, CLI."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rksp.errors import ConfigError
from rksp.harness.record import atomic_write_json, load_records, read_record
from rksp.harness.sweep import cli_main, grid, run, validate_configs
from rksp.harness.config import config_hash
from rksp.harness.config import TrainConfig
from rksp.harness.hooks import TrainHooks
from rksp.harness.record import comparable

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

BASE = dict(task='recall', preset='tiny', n_train=128, n_val=32, batch_size=16, steps=12, warmup_steps=2,
            profile_at_init=False)


# hooks used through config specs ('test_sweep:...'); tests/ is on sys.path under pytest
class CountRuns(TrainHooks):
    """Appends the run's hash to a file when it starts: a run counter that survives a kill."""

    def __init__(self, path):
        self.path = path

    def on_start(self, model, optimizer, cfg, ctx):
        with open(self.path, 'a') as f:
            f.write(cfg.hash() + '\n')


class RaiseAt(TrainHooks):
    def __init__(self, step):
        self.step = step

    def before_step(self, step, model, optimizer, info):
        if step == self.step:
            raise RuntimeError(f'boom at step {step}')


def _json_files(d):
    return sorted(p for p in Path(d).glob('*.json') if not p.name.startswith('.'))


# ----------------------------------------------------------------------------- grid / hash

def test_grid_cartesian_dotted_and_zipped():
    base = {'lr': 1e-3, 'model_cfg': {'d_model': 32}}
    out = grid(base, {'model_cfg.norm': ['pre_ln', 'none'], 'seed': [1, 2, 3]})
    assert len(out) == 6
    assert out[0] == {'lr': 1e-3, 'model_cfg': {'d_model': 32, 'norm': 'pre_ln'}, 'seed': 1}
    assert [o['seed'] for o in out[:3]] == [1, 2, 3] and out[3]['model_cfg']['norm'] == 'none'
    assert base == {'lr': 1e-3, 'model_cfg': {'d_model': 32}}          # base untouched
    z = grid({}, {'lr,warmup_steps': [[1e-3, 10], [1e-2, 100]], 'seed': [0, 1]})
    assert [(c['lr'], c['warmup_steps'], c['seed']) for c in z] == [(1e-3, 10, 0), (1e-3, 10, 1),
                                                                    (1e-2, 100, 0), (1e-2, 100, 1)]
    assert grid({'a': 1}, {}) == [{'a': 1}]
    with pytest.raises(ValueError):
        grid({}, {'lr': 1e-3})


def test_config_hash_is_canonical():
    a = {'lr': 1e-3, 'model_cfg': {'norm': 'none', 'd_model': 32}}
    b = {'model_cfg': {'d_model': 32, 'norm': 'none'}, 'lr': 1e-3}
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 16
    assert all(c in '0123456789abcdef' for c in config_hash(a))
    assert config_hash(a) != config_hash({**a, 'lr': 2e-3})
    # the sweep hashes the normalized config: defaults spelled out or not give the same run
    (h1, _), (h2, _), (h3, _) = validate_configs([{'lr': 1e-3}, TrainConfig().to_dict(), {'lr': '1e-3'}])
    assert h1 == h2 == h3


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / 'x.json'
    atomic_write_json(p, {'a': float('nan'), 'b': [1, 2]})
    atomic_write_json(p, {'a': 1.0})
    assert read_record(p) == {'a': 1.0}
    assert [q.name for q in tmp_path.iterdir()] == ['x.json']
    assert read_record(tmp_path / 'missing.json') is None


# ----------------------------------------------------------------------------- validation

def test_bad_configs_are_rejected_before_any_run(tmp_path):
    counter = tmp_path / 'count.txt'
    good = dict(BASE, hooks=[{'target': 'test_sweep:CountRuns', 'kwargs': {'path': str(counter)}}])
    cfgs = [good,
            dict(good, model_cfg={'norm': 'layernorm2'}),
            dict(good, lr=-0.1),
            dict(good, model_cfg={'d_model': 30, 'n_head': 4}),
            dict(good, task='mnist')]
    out = tmp_path / 'out'
    with pytest.raises(ConfigError) as ei:
        run(cfgs, out, executor='serial', progress=False)
    msg = str(ei.value)
    assert '4 of 5 config(s) invalid; nothing was run' in msg
    for i, why in [(1, "unknown norm 'layernorm2'"), (2, 'lr must be a finite number > 0'),
                   (3, 'd_model (30) must be divisible by n_head (4)'), (4, "unknown task 'mnist'")]:
        line = next(ln for ln in msg.splitlines() if ln.strip().startswith(f'config #{i} '))
        assert why in line
    assert 'config #0 ' not in msg
    assert not counter.exists() and not out.exists()
    with pytest.raises(ConfigError, match='unknown executor'):
        run([good], out, executor='slurm')


# ----------------------------------------------------------------------------- failures

def test_failed_run_is_recorded_and_the_sweep_goes_on_then_retried(tmp_path, capsys):
    cfgs = [dict(BASE, seed=1), dict(BASE, seed=2, hooks=[{'target': 'test_sweep:RaiseAt', 'kwargs': {'step': 3}}]),
            dict(BASE, seed=3), dict(BASE, seed=1)]      # the duplicate runs once
    df = run(cfgs, tmp_path, executor='serial', progress=False)
    assert len(df) == 3 and len(_json_files(tmp_path)) == 3
    assert list(df['status']) == ['ok', 'failed', 'ok']
    assert df.attrs['n_failed'] == 1 and df.attrs['n_run'] == 3
    bad = read_record(Path(df.loc[1, 'path']))
    assert bad['status'] == 'failed' and 'RuntimeError: boom at step 3' in bad['error']
    assert 'Traceback' in bad['traceback'] and 'before_step' in bad['traceback']
    assert df.loc[1, 'error'] == 'RuntimeError: boom at step 3'
    err = capsys.readouterr().err
    assert '1 failed' in err and df.loc[1, 'hash'] in err and 'retried' in err
    # next invocation: finished runs are skipped, the failed one is retried (and fails again)
    ok_mtimes = {p: p.stat().st_mtime_ns for p in _json_files(tmp_path) if read_record(p)['status'] == 'ok'}
    df2 = run(cfgs, tmp_path, executor='serial', progress=False, verbose=False)
    assert df2.attrs['n_cached'] == 2 and df2.attrs['n_run'] == 1
    assert {p: p.stat().st_mtime_ns for p in ok_mtimes} == ok_mtimes
    loaded = load_records(tmp_path)
    assert sorted(loaded['hash']) == sorted(df2['hash']) and set(loaded['status']) == {'ok', 'failed'}


# ----------------------------------------------------------------------------- kill + resume

_KILL_SCRIPT = textwrap.dedent('''
    import sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    from rksp.harness.sweep import run
    run({cfgs!r}, {out!r}, executor='serial', progress=False)
''')


def test_killed_sweep_resumes_without_losing_or_repeating_runs(tmp_path):
    out, counter = tmp_path / 'out', tmp_path / 'started.txt'
    hook = [{'target': 'test_sweep:CountRuns', 'kwargs': {'path': str(counter)}}]
    cfgs = [dict(BASE, steps=40, seed=s, hooks=hook) for s in range(6)]
    script = _KILL_SCRIPT.format(repo=str(REPO), tests=str(TESTS), cfgs=cfgs, out=str(out))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, '-c', script], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while len(_json_files(out)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, 'sweep subprocess too slow'
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in _json_files(out)}
    assert 2 <= len(before) < 6, 'the sweep finished before it could be killed'
    assert all(read_record(out / n)['status'] == 'ok' for n in before)   # complete records only

    df = run(cfgs, out, executor='serial', progress=False, verbose=False)
    assert df.attrs['n_cached'] == len(before) and df.attrs['n_run'] == 6 - len(before)
    files = _json_files(out)
    assert len(files) == 6 and set(df['status']) == {'ok'}
    assert sorted(p.stem for p in files) == sorted(df['hash'])
    for name, (mtime, content) in before.items():          # finished runs were never recomputed
        assert (out / name).stat().st_mtime_ns == mtime and (out / name).read_bytes() == content
    started = counter.read_text().split()
    for p in files:
        n = started.count(p.stem)
        assert n == 1 if p.name in before else n in (1, 2)   # a run killed mid-way starts once more
    # a third invocation runs nothing
    df3 = run(cfgs, out, executor='serial', progress=False, verbose=False)
    assert df3.attrs['n_run'] == 0 and len(counter.read_text().split()) == len(started)


# ----------------------------------------------------------------------------- executors

def test_executors_give_identical_records(tmp_path):
    pytest.importorskip('distributed')
    cfgs = grid(dict(BASE, profile_at_init=True), {'model_cfg.norm': ['pre_ln', 'none'], 'lr': [3e-3]})
    recs = {}
    for ex, kw in [('serial', {'threads_per_run': 1}),
                   ('dask', {'n_workers': 1, 'threads_per_run': 1, 'dask_cluster_kwargs': {'processes': False}}),
                   ('local', {'n_workers': 2})]:
        df = run(cfgs, tmp_path / ex, executor=ex, progress=False, verbose=False, **kw)
        assert list(df['status']) == ['ok', 'ok'], df.get('error')
        recs[ex] = [comparable(read_record(p)) for p in df['path']]
    ref = json.dumps(recs['serial'], sort_keys=True)
    assert json.dumps(recs['dask'], sort_keys=True) == ref
    assert json.dumps(recs['local'], sort_keys=True) == ref
    assert recs['serial'][0]['profile']['summary']['score'] is not None


# ----------------------------------------------------------------------------- CLI

def test_cli_runs_the_example_sweep(tmp_path, capsys):
    out = tmp_path / 'ex'
    rc = cli_main([str(REPO / 'configs' / 'example_sweep.yaml'), '--out', str(out), '--executor', 'serial',
                   '--no-progress'])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert len(_json_files(out)) == 4
    assert 'diverged per norm' in cap.out and 'prof_score' in cap.out
    df = load_records(out)
    assert sorted(df['norm'].unique()) == ['none', 'pre_ln'] and sorted(df['lr'].unique()) == [1e-3, 1e-2]
    assert (df['steps_done'] == 30).all() and df['prof_score'].notna().all()


@pytest.mark.parametrize('content, why', [
    (None, 'sweep file not found'),
    ('base: [1,\n', 'not valid YAML'),
    ('base: {preset: tiny}\naxes: {model_cfg.norm: [pre_ln, foo]}\n', "unknown norm 'foo'"),
    ('base: {preset: tiny, lr: -1}\n', 'lr must be a finite number > 0'),
    ('bass: {preset: tiny}\n', 'unknown top-level key'),
    ('base: {preset: tiny}\naxes: {lr: 0.1}\n', 'must be a list'),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, content, why):
    path = tmp_path / 'sweep.yaml'
    if content is not None:
        path.write_text(content)
    rc = cli_main([str(path), '--out', str(tmp_path / 'out'), '--executor', 'serial', '--no-progress'])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith('rksp sweep: error:') and why in err
    assert not (tmp_path / 'out').exists()


def test_local_workers_exit_when_the_sweep_process_is_killed(tmp_path):
    """A killed sweep (e.g. a killed notebook kernel) leaves no worker training on."""
    import signal
    import subprocess
    import sys
    import time as _time
    script = tmp_path / 'slow_sweep.py'
    script.write_text(
        "import sys\nfrom rksp.harness.sweep import run\n"
        "cfg = dict(task='recall', preset='tiny', n_train=256, n_val=16, batch_size=8, steps=100000, "
        "warmup_steps=0, profile_at_init=False)\n"
        "run([dict(cfg, seed=s) for s in (1, 2)], sys.argv[1], executor='local', n_workers=2, progress=False)\n")
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path / 'runs')], start_new_session=True)
    try:
        kids = []
        for _ in range(120):                      # wait for the two workers to appear
            _time.sleep(0.5)
            out = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(p.pid)], capture_output=True, text=True).stdout
            kids = [int(x) for x in out.split()]
            if len(kids) >= 2:
                break
        assert kids, 'no worker started'
        _time.sleep(2)
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = _time.time() + 15
        alive = kids
        while alive and _time.time() < deadline:
            _time.sleep(0.5)
            alive = [k for k in kids if os.path.exists(f'/proc/{k}') and
                     'Z' not in open(f'/proc/{k}/stat').read().split()[2]]
        cmds = {k: open(f'/proc/{k}/cmdline').read().replace('\0', ' ')[:200] for k in alive}
        assert not alive, f'workers still running after the sweep was killed: {cmds}'
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize('alpha, why', [(-1, 'KSSConfig.alpha must be >= 0, got -1'),
                                        ("'abc'", "KSSConfig.alpha must be a finite number, got 'abc'")])
def test_a_bad_hook_argument_is_rejected_at_sweep_validation(tmp_path, capsys, alpha, why):
    """Hooks are built with their arguments while the configs are validated: a bad KSS alpha stops
    the sweep before any run (it used to pass validation and fail once per run)."""
    counter = tmp_path / 'count.txt'
    good = {**BASE, 'hooks': [{'target': 'test_sweep:CountRuns', 'kwargs': {'path': str(counter)}}]}
    bad = {**good, 'hooks': good['hooks'] + [{'target': 'kss', 'kwargs': {'alpha': -1 if alpha == -1 else 'abc'}}]}
    with pytest.raises(ConfigError) as ei:
        run([good, bad], tmp_path / 'out', executor='serial', progress=False)
    msg = str(ei.value)
    assert '1 of 2 config(s) invalid; nothing was run' in msg and why in msg and 'config #1 ' in msg
    assert not counter.exists() and not (tmp_path / 'out').exists()
    # the same from a sweep YAML through `rksp sweep`
    path = tmp_path / 'sweep.yaml'
    path.write_text("base: {task: recall, preset: tiny, n_train: 64, n_val: 16, batch_size: 8, steps: 3,\n"
                    "       profile_at_init: false}\n"
                    f"axes: {{hooks: [[], [{{target: kss, kwargs: {{alpha: {alpha}}}}}]]}}\n")
    rc = cli_main([str(path), '--out', str(tmp_path / 'out'), '--executor', 'serial', '--no-progress'])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and 'nothing was run' in err
    assert 'config #1 ' in err and 'alpha' in err and why in err
    assert not (tmp_path / 'out').exists()
