#!/usr/bin/env bash
# bench/brokers/run.sh: flowrun through RabbitMQ, Redis and NATS JetStream
# beside the Go baselines and the Python workers, in one run; a Markdown
# table on stdout, each round's numbers on stderr. See main.go for the
# knobs (N, BIG, RUNS, PY_N, BROKERS, PREFETCH, QUICK=1).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec go run ./bench/brokers "$@"
