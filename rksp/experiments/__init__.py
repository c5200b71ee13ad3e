"""Floor 6, the experiments: what each profile runs, the run cache, the paper's numbers, statistics,
tables, claims.

    plans.py       what each profile runs (recall, LM, ViT, architectures): configs with their labels
    runs.py        running plans into `results/<profile>/runs/`, saving tables and claims
    results_io.py  where results go (`RKSP_RESULTS`, `write_table`, `save_figure`)
    paper.py       the paper's numbers (typed from the paper; never computed)
    stats.py       counting statistics (Wilson, Fisher, Newcombe, risk ratios, trends, correlations, t intervals)
    prediction_stats.py  AUROC with bootstrap CIs, CV logistic, ECE, reliability diagrams
    claims.py      claims and the rules that give their verdicts
    stability.py   the max-stable-LR search and its one reading; init_study.py, kernels.py: the studies of docs/
    table_check.py which differences between a committed and a fresh table are allowed
    tables/        one table builder module per topic

The notebooks' `from rksp import experiments as E` reaches the plans and the runs API here.
"""
from rksp.experiments.plans import (NORMS, NORM_NAMES, MAIN_METHODS, KSS_PATH_METHOD, DEFAULT_KSS_PATH,
                                    KSS_PATHS, SMALL_KSS_PATHS, PLANS, plan, recall_base, method_trials,
                                    method_configs, table_methods, norm_configs, recall_pool, unique_runs,
                                    kss_path_configs, maxlr_configs, all_recall_configs, KSS_ROW, SCALE_ROWS,
                                    SCALE_REFERENCE, LM_PLANS, VIT_PLANS, lm_plan, vit_plan, lm_configs,
                                    vit_configs, ARCHITECTURES, architecture_configs, APPENDIX_ROWS,
                                    appendix_configs, ARCHITECTURE_PLANS, architecture_run_configs)
from rksp.experiments.runs import (runs_dir, run_labeled, maxlr_runs, bracket_runs, lm_runs, run_kss_paths, save_claims, collect_claims, save,
                                   prefetch, track_runs)

__all__ = ["NORMS", "NORM_NAMES", "MAIN_METHODS", "KSS_PATH_METHOD", "DEFAULT_KSS_PATH", "KSS_PATHS", "SMALL_KSS_PATHS", "PLANS", "plan", "recall_base", "method_trials", "method_configs", "table_methods", "norm_configs", "recall_pool", "unique_runs", "kss_path_configs", "maxlr_configs", "all_recall_configs", "KSS_ROW", "SCALE_ROWS", "SCALE_REFERENCE", "LM_PLANS", "VIT_PLANS", "lm_plan", "vit_plan", "lm_configs", "vit_configs", "ARCHITECTURES", "architecture_configs", "APPENDIX_ROWS", "appendix_configs", "ARCHITECTURE_PLANS", "architecture_run_configs", "runs_dir", "run_labeled", "maxlr_runs", "bracket_runs", "lm_runs", "run_kss_paths", "save_claims", "collect_claims", "save", "prefetch", "track_runs"]
