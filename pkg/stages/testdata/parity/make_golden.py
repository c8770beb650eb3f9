#!/usr/bin/python3
"""Regenerates the pandas parity fixtures for orch's preprocess and features kinds.

usage: /usr/bin/python3 make_golden.py BASELINES_DIR [ROWS]
  BASELINES_DIR holds gen_churn.py and churn_pipeline.py (../shared/baselines
  next to the repository). Writes, next to this script:
    input.csv       gen_churn.py's data, ROWS rows (default 500)
    preprocess.csv  churn_pipeline.preprocess(input)
    features.csv    churn_pipeline.features(preprocess), plus customer_id and
                    churned taken from preprocess (the reference takes y from
                    preprocess's table; orch keeps both in its features table)
Floats are written with 9 significant digits, enough to round-trip float32.
Debian 12: python3-pandas python3-numpy.
"""
import os
import subprocess
import sys

import pandas as pd

here = os.path.dirname(os.path.abspath(__file__))
base = os.path.abspath(sys.argv[1])
rows = sys.argv[2] if len(sys.argv) > 2 else "500"
sys.path.insert(0, base)
from churn_pipeline import features, preprocess  # noqa: E402

src = os.path.join(here, "input.csv")
subprocess.run([sys.executable, os.path.join(base, "gen_churn.py"), src, rows], check=True)
df = pd.read_csv(src)
pre = preprocess(df)
pre.to_csv(os.path.join(here, "preprocess.csv"), index=False, float_format="%.9g")
X = features(pre)
X.insert(0, "churned", pre["churned"])
X.insert(0, "customer_id", pre["customer_id"])
X.to_csv(os.path.join(here, "features.csv"), index=False, float_format="%.9g")
print(f"input {len(df)} rows; preprocess {pre.shape}; features {X.shape}")
print("preprocess dtypes:", dict(pre.dtypes.astype(str)))
