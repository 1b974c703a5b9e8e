#!/usr/bin/env bash
# Start the cluster's MLflow tracking server on the head (head_setup_commands).
# MLflow's basic-auth app: the admin account comes from ~/.config/satn/cluster.env
# (MLFLOW_AUTH_ADMIN_USERNAME / _PASSWORD), and trials log in with the same pair
# (MLFLOW_TRACKING_USERNAME / _PASSWORD). The server listens on the head's private
# address, which only the cluster's security group reaches.
set -euo pipefail
set -a; . ~/.config/satn/cluster.env; set +a
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?cluster.env must set MLFLOW_AUTH_ADMIN_PASSWORD (satn cluster-secrets)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?cluster.env must set MLFLOW_FLASK_SERVER_SECRET_KEY (satn cluster-secrets)}"
mkdir -p /shared/mlflow/artifacts
host=$(hostname -I | awk '{print $1}')
export MLFLOW_AUTH_CONFIG_PATH=~/satn/cluster/mlflow_auth.ini
# MLflow's server-side job runner (GenAI evaluation jobs: a runner and seven consumer
# processes) has no work from satn; off, the head keeps that memory for Ray
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
pkill -f "mlflow server" || true   # a restart of the head: one server at a time
nohup ~/satn-venv/bin/mlflow server --app-name basic-auth --host "$host" --port 5000 \
  --workers 2 --backend-store-uri sqlite:////shared/mlflow/mlflow.db \
  --artifacts-destination /shared/mlflow/artifacts > /tmp/mlflow.log 2>&1 &
