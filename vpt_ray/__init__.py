"""vpt-ray: a Ray-based scaler for a Volume-Price-Trade XGBoost model.

OpenMP threads sleep while they wait (`OMP_WAIT_POLICY=PASSIVE`) unless the user chose a policy.
XGBoost's `hist` trainer runs a parallel region per tree level; libgomp's default spins up to
300,000 times between them, and when any other process holds a core (Ray's own daemons, a second
trial, a shared machine) the spinning thread waits on a descheduled partner: 53 rounds on 80k
x 36 with 2 threads took 15-25 s (5.5 CPU s) at load ~16, and 1.1-1.9 s (0.5 CPU s) with the
passive policy (bench/bench_omp.py; xgboost issue #8729). It must be set before the first
OpenMP library loads, so it is set here, on `import vpt_ray`, which every driver and Ray worker
of the pipeline does before it imports xgboost or scikit-learn; Ray workers also inherit it.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
